"""Look inside images from a notebook: pandas DataFrames of what a registry holds.

Every function takes an image reference (``"alpine:3.20"``, see
:mod:`dgetkit.reference`) or an image handle from :func:`image`, and the
usual connection settings as keywords (``username=``, ``password=``,
``insecure=``, ``ca_cert=``, ``mirrors=``; or ``options=Options(...)``).
Columns are named after the fields of the OCI image spec (``digest``,
``media_type``, ``size``, ``diff_id``, ``created_by``...); sizes are int64
bytes, with a ``*_human`` column beside the sizes worth reading by eye.

Each call asks the registry again, because tags move. To look at one image
several ways, resolve it once with :func:`image` and call the handle's
methods: on Docker Hub every manifest ``GET`` counts against the pull rate
limit, while the handle's methods fetch no manifest twice.

Examples
--------
>>> import dgetkit                                            # doctest: +SKIP
>>> dgetkit.platforms("alpine:3.20")                          # doctest: +SKIP
>>> img = dgetkit.image("alpine:3.20", platform="linux/arm64")  # doctest: +SKIP
>>> img.layers()[["digest", "size_human", "created_by"]]      # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import json
import tarfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from . import codec
from .auth import parse_challenges, pick_challenge
from .blobs import CHUNK_SIZE, BlobStream, drain
from .cache import Cache
from .errors import DgetkitError, InvalidOption, UnsupportedMediaType
from .manifest import IMAGE_TYPES, Descriptor, ImageManifest, Index
from .platform import Platform
from .progress import Progress
from .pull import Image, fetch_manifest, pull, resolve, select
from .reference import DOCKER_HUB, DOCKER_HUB_API, Reference
from .registry import OPTION_NAMES, Options, RegistryClient, client_for, connection

#: Child manifests fetched at once by ``platforms(..., sizes=True)``.
SIZE_WORKERS = 4
#: Docker Hub's rate-limit headers (https://docs.docker.com/docker-hub/usage/pulls/).
RATELIMIT_HEADERS = (
    "ratelimit-limit",
    "ratelimit-remaining",
    "docker-ratelimit-source",
)
WHITEOUT_PREFIX = ".wh."

PLATFORM_COLUMNS = [
    "platform",
    "os",
    "architecture",
    "variant",
    "os_version",
    "attestation",
    "attests",
    "digest",
    "media_type",
    "size",
]
SIZE_COLUMNS = ["layers", "compressed_size", "compressed_size_human"]
LAYER_COLUMNS = [
    "layer",
    "digest",
    "media_type",
    "compression",
    "size",
    "size_human",
    "diff_id",
    "created",
    "created_by",
    "comment",
]
HISTORY_COLUMNS = [
    "step",
    "created",
    "created_by",
    "author",
    "comment",
    "empty_layer",
    "layer",
    "digest",
    "size",
]
FILE_COLUMNS = [
    "path",
    "type",
    "size",
    "mode",
    "uid",
    "gid",
    "mtime",
    "linkname",
    "whiteout",
]
RATELIMIT_COLUMNS = ["limit", "remaining", "window_seconds", "source"]
CACHE_COLUMNS = ["kind", "digest", "size", "size_human", "modified", "path"]

_MEMBER_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
#: What a damaged or non-tar layer makes the decompressors and tarfile raise.
_UNREADABLE = (tarfile.TarError, OSError, ValueError, *codec.DECODE_ERRORS)


# -- connection settings and what a reference means -------------------------------


def _reference(ref) -> Reference:
    if isinstance(ref, RemoteImage):
        return ref.reference
    if isinstance(ref, Image):
        return ref.reference
    if isinstance(ref, Reference):
        return ref
    return Reference.parse(ref)


def _resolved(ref, platform, options, settings) -> Image:
    """The image ``ref`` names, reusing a handle's resolution when it fits."""
    if isinstance(ref, (RemoteImage, Image)):
        image = ref.image if isinstance(ref, RemoteImage) else ref
        if platform is None or Platform.parse(str(platform)).matches(image.platform):
            return image
        if isinstance(ref, RemoteImage) and options is None and not settings:
            options = ref.options
    return resolve(
        _reference(ref), platform=platform, options=connection(options, **settings)
    )


def _options_of(ref, options, settings) -> Options:
    if isinstance(ref, RemoteImage) and options is None and not settings:
        return ref.options
    return connection(options, **settings)


def human_size(size) -> str:
    """``size`` bytes in binary units, e.g. ``'3.4 MiB'``.

    Examples
    --------
    >>> human_size(3_500_000)
    '3.3 MiB'
    """
    if size is None or pd.isna(size):
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _timestamps(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce")


# -- platforms ---------------------------------------------------------------------


def platforms(ref, *, sizes: bool = False, options=None, **settings) -> pd.DataFrame:
    """One row per entry of an image's index: the platforms you can pull.

    Attestations (BuildKit provenance and SBOMs, platform ``unknown/unknown``)
    are kept and flagged in ``attestation``; ``attests`` names the image
    manifest each one describes. A single-platform image gives one row.

    Parameters
    ----------
    ref : str, Reference or RemoteImage
    sizes : bool
        Also fetch every entry's manifest and add ``layers`` (count) and
        ``compressed_size`` (bytes of its layers). On Docker Hub these extra
        ``GET``s count against the pull rate limit.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    pandas.DataFrame
        platform, os, architecture, variant, os_version, attestation,
        attests, digest, media_type, size (of the manifest itself).

    Examples
    --------
    >>> table = platforms("alpine:3.20")                    # doctest: +SKIP
    >>> table[~table.attestation].platform.tolist()         # doctest: +SKIP
    ['linux/amd64', 'linux/arm/v6', 'linux/arm/v7', ...]
    """
    opts = _options_of(ref, options, settings)
    top, config_platform = _top_manifest(ref, opts)
    if isinstance(top, Index):
        rows = [_entry_row(d) for d in top.manifests]
    else:
        rows = [_single_row(top, config_platform)]
    frame = pd.DataFrame(rows, columns=PLATFORM_COLUMNS)
    frame = frame.astype({"size": "int64", "attestation": "bool"})
    if sizes:
        frame = _add_sizes(frame, _reference(ref), opts)
    return frame


def _top_manifest(ref, options: Options):
    """The index (or the only manifest) of ``ref``; a handle fetches nothing."""
    if isinstance(ref, (RemoteImage, Image)):
        image = ref.image if isinstance(ref, RemoteImage) else ref
        return (image.index or image.manifest), image.platform
    reference = _reference(ref)
    client = client_for(reference.registry, options)
    top = fetch_manifest(client, reference.repository, reference.identifier)
    if isinstance(top, Index):
        return top, None
    raw = client.get_blob(reference.repository, top.config)
    return top, Platform.from_dict(json.loads(raw)) or Platform("", "")


def _platform_fields(platform: Platform | None) -> dict:
    platform = platform or Platform("", "")
    return {
        "platform": str(platform),
        "os": platform.os,
        "architecture": platform.architecture,
        "variant": platform.variant,
        "os_version": platform.os_version,
    }


def _entry_row(descriptor: Descriptor) -> dict:
    return {
        **_platform_fields(descriptor.platform),
        "attestation": descriptor.is_attestation,
        "attests": descriptor.annotations.get("vnd.docker.reference.digest", ""),
        "digest": str(descriptor.digest),
        "media_type": descriptor.media_type,
        "size": descriptor.size,
    }


def _single_row(manifest: ImageManifest, platform: Platform) -> dict:
    return {
        **_platform_fields(platform),
        "attestation": False,
        "attests": "",
        "digest": str(manifest.digest),
        "media_type": manifest.media_type,
        "size": len(manifest.raw),
    }


def _add_sizes(frame: pd.DataFrame, reference: Reference, options: Options):
    client = client_for(reference.registry, options)

    def measure(row) -> tuple:
        if row["media_type"] not in IMAGE_TYPES:
            return pd.NA, pd.NA
        child = fetch_manifest(client, reference.repository, row["digest"])
        return len(child.layers), sum(d.size for d in child.layers)

    with ThreadPoolExecutor(max_workers=SIZE_WORKERS) as pool:
        measured = list(pool.map(measure, frame.to_dict("records")))
    frame = frame.copy()
    layer_count, size, size_human = SIZE_COLUMNS
    frame[layer_count] = pd.array([m[0] for m in measured], dtype="Int64")
    frame[size] = pd.array([m[1] for m in measured], dtype="Int64")
    frame[size_human] = frame[size].map(human_size)
    return frame


# -- layers and history ------------------------------------------------------------


def layers(ref, *, platform=None, options=None, **settings) -> pd.DataFrame:
    """One row per layer, bottom first, with the history step that made it.

    History steps marked ``empty_layer`` (``ENV``, ``CMD``, ``LABEL``...)
    made no layer and are skipped when pairing steps with layers; see
    :func:`history` for every step.

    Parameters
    ----------
    ref : str, Reference or RemoteImage
    platform : str, optional
        ``os/arch[/variant]``; default linux on this machine's architecture.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    pandas.DataFrame
        layer (position), digest, media_type, compression, size,
        size_human, diff_id, created, created_by, comment.

    Examples
    --------
    >>> layers("alpine:3.20", platform="linux/arm64")       # doctest: +SKIP
    """
    image = _resolved(ref, platform, options, settings)
    made = {row["layer"]: row for row in _steps(image) if row["layer"] is not None}
    rows = []
    for position, (descriptor, diff_id) in enumerate(
        zip(image.manifest.layers, image.config.diff_ids)
    ):
        step = made.get(position, {})
        rows.append(
            {
                "layer": position,
                "digest": str(descriptor.digest),
                "media_type": descriptor.media_type,
                "compression": descriptor.compression,
                "size": descriptor.size,
                "size_human": human_size(descriptor.size),
                "diff_id": str(diff_id),
                "created": step.get("created"),
                "created_by": step.get("created_by"),
                "comment": step.get("comment"),
            }
        )
    frame = pd.DataFrame(rows, columns=LAYER_COLUMNS)
    frame["created"] = _timestamps(frame["created"])
    return frame.astype({"layer": "int64", "size": "int64"})


def _steps(image: Image) -> list[dict]:
    """The config's history, each step paired with the layer it made (or None).

    The image spec: a step with ``empty_layer: true`` made no layer, and the
    other steps match the layers in order.
    https://github.com/opencontainers/image-spec/blob/main/config.md
    """
    steps, position = [], 0
    count = len(image.manifest.layers)
    for number, entry in enumerate(image.config.history):
        empty = bool(entry.get("empty_layer", False))
        layer = None if empty or position >= count else position
        position += 0 if empty else 1
        steps.append(
            {
                "step": number,
                "created": entry.get("created"),
                "created_by": entry.get("created_by"),
                "author": entry.get("author"),
                "comment": entry.get("comment"),
                "empty_layer": empty,
                "layer": layer,
            }
        )
    return steps


def history(ref, *, platform=None, options=None, **settings) -> pd.DataFrame:
    """Every history step of the image config, empty ones included.

    Parameters
    ----------
    ref : str, Reference or RemoteImage
    platform : str, optional
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    pandas.DataFrame
        step, created, created_by, author, comment, empty_layer, and for the
        steps that made a layer: layer (its position), digest and size.

    Examples
    --------
    >>> history("alpine:3.20")[["created_by", "empty_layer", "layer"]]  # doctest: +SKIP
    """
    image = _resolved(ref, platform, options, settings)
    descriptors = image.manifest.layers
    rows = []
    for step in _steps(image):
        made = descriptors[step["layer"]] if step["layer"] is not None else None
        step["digest"] = str(made.digest) if made else None
        step["size"] = made.size if made else None
        rows.append(step)
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["created"] = _timestamps(frame["created"])
    frame["layer"] = pd.array(frame["layer"].tolist(), dtype="Int64")
    frame["size"] = pd.array(frame["size"].tolist(), dtype="Int64")
    return frame.astype({"step": "int64", "empty_layer": "bool"})


# -- tags, config, rate limit ------------------------------------------------------


def tags(repository, *, page_size: int | None = None, options=None, **settings):
    """Every tag of a repository, following the registry's ``Link`` pages.

    Parameters
    ----------
    repository : str, Reference or RemoteImage
        ``alpine``, ``ghcr.io/org/app``; a tag or digest in it is ignored.
    page_size : int, optional
        Tags asked for per request (``?n=``); the registry's default if None.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    pandas.DataFrame
        tag, and reference (the full name to pass to other functions).

    Examples
    --------
    >>> tags("alpine").tag.tail(3).tolist()                  # doctest: +SKIP
    """
    if page_size is not None and page_size < 1:
        raise InvalidOption("page_size must be at least 1 (or None)")
    reference = _reference(repository)
    client = client_for(reference.registry, _options_of(repository, options, settings))
    found = client.tags(reference.repository, page_size=page_size)
    return pd.DataFrame(
        {"tag": found, "reference": [f"{reference.name}:{t}" for t in found]},
        columns=["tag", "reference"],
    )


class ImageSettings(Mapping):
    """The run settings of an image config, readable as a dict or a table.

    Keys: ``os``, ``architecture``, ``variant``, ``created``, ``author``,
    ``user``, ``working_dir``, ``entrypoint``, ``cmd`` (lists of str),
    ``env`` (dict name -> value, in order), ``labels`` (dict),
    ``exposed_ports`` and ``volumes`` (lists), ``stop_signal``. Absent
    settings are None (or empty). The whole config is in :attr:`raw`.
    In a notebook it shows as a table; :meth:`frame` gives key/value rows.
    """

    def __init__(self, config_data: dict):
        self.raw = config_data
        run = config_data.get("config") or {}
        self._values = {
            "os": config_data.get("os"),
            "architecture": config_data.get("architecture"),
            "variant": config_data.get("variant"),
            "created": config_data.get("created"),
            "author": config_data.get("author"),
            "user": run.get("User") or None,
            "working_dir": run.get("WorkingDir") or None,
            "entrypoint": run.get("Entrypoint"),
            "cmd": run.get("Cmd"),
            "env": _env(run.get("Env")),
            "labels": dict(run.get("Labels") or {}),
            "exposed_ports": sorted(run.get("ExposedPorts") or {}),
            "volumes": sorted(run.get("Volumes") or {}),
            "stop_signal": run.get("StopSignal"),
        }

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ImageSettings({self._values!r})"

    def frame(self) -> pd.DataFrame:
        """Key/value rows; each variable and label is a row of its own."""
        rows = []
        for key, value in self._values.items():
            if isinstance(value, dict):
                rows += [(f"{key}.{k}", str(v)) for k, v in value.items()]
            elif isinstance(value, list):
                rows.append((key, json.dumps(value)))
            else:
                rows.append((key, "" if value is None else str(value)))
        return pd.DataFrame(rows, columns=["key", "value"])

    def _repr_html_(self) -> str:
        cells = []
        for key, value in self._values.items():
            if isinstance(value, dict):
                shown = "<br>".join(
                    f"<code>{html.escape(k)}</code> = {html.escape(str(v))}"
                    for k, v in value.items()
                )
            elif isinstance(value, list):
                shown = html.escape(json.dumps(value))
            else:
                shown = "" if value is None else html.escape(str(value))
            cells.append(
                f"<tr><th style='text-align:left'>{key}</th>"
                f"<td style='text-align:left'>{shown}</td></tr>"
            )
        return "<table>" + "".join(cells) + "</table>"


def _env(values) -> dict:
    pairs = {}
    for item in values or []:
        name, _, value = str(item).partition("=")
        pairs[name] = value
    return pairs


def config(ref, *, platform=None, options=None, **settings) -> ImageSettings:
    """The image config's run settings: env, entrypoint, cmd, labels, user...

    Parameters
    ----------
    ref : str, Reference or RemoteImage
    platform : str, optional
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    ImageSettings
        A read-only dict (``settings["env"]["PATH"]``) that shows as a table.

    Examples
    --------
    >>> config("nginx:1.27")["exposed_ports"]                # doctest: +SKIP
    ['80/tcp']
    """
    image = _resolved(ref, platform, options, settings)
    return ImageSettings(image.config.data)


def ratelimit(ref, *, options=None, **settings) -> pd.DataFrame:
    """Docker Hub's pull rate limit for you, read with a ``HEAD`` request.

    A ``HEAD`` of a manifest does not count as a pull. Registries other than
    Docker Hub usually send no such headers: the frame is then empty.

    Returns
    -------
    pandas.DataFrame
        One row: limit, remaining (pulls), window_seconds, source (the IP
        address or account counted); no rows when the registry sent none.

    Examples
    --------
    >>> ratelimit("alpine")                                  # doctest: +SKIP
       limit  remaining  window_seconds          source
    0    100         97           21600   203.0.113.7
    """
    reference = _reference(ref)
    client = client_for(reference.registry, _options_of(ref, options, settings))
    headers = client.head_manifest(reference.repository, reference.identifier)
    found = {name: headers.get(name) for name in RATELIMIT_HEADERS}
    if found["ratelimit-limit"] is None and found["ratelimit-remaining"] is None:
        return pd.DataFrame(columns=RATELIMIT_COLUMNS)
    limit, window = _quota(found["ratelimit-limit"])
    remaining, _ = _quota(found["ratelimit-remaining"])
    row = {
        "limit": limit,
        "remaining": remaining,
        "window_seconds": window,
        "source": found["docker-ratelimit-source"] or "",
    }
    frame = pd.DataFrame([row], columns=RATELIMIT_COLUMNS)
    return frame.astype(
        {"limit": "Int64", "remaining": "Int64", "window_seconds": "Int64"}
    )


def _quota(value: str | None) -> tuple:
    """``'100;w=21600'`` -> (100, 21600); missing parts are NA."""
    if not value:
        return pd.NA, pd.NA
    number, *params = [part.strip() for part in value.split(";")]
    window = next((p[2:] for p in params if p.startswith("w=")), "")
    return _int_or_na(number), _int_or_na(window)


def _int_or_na(text: str):
    return int(text) if text.isdigit() else pd.NA


# -- the files of one layer --------------------------------------------------------


def files(
    ref,
    *,
    layer=-1,
    platform=None,
    progress=True,
    options=None,
    **settings,
) -> pd.DataFrame:
    """The members of one layer, streamed from the registry and not saved.

    The layer is downloaded, decompressed and read as a tar on the fly, and
    its digest is checked at the end. Nothing is written to disk.

    Parameters
    ----------
    ref : str, Reference or RemoteImage
    layer : int, str or Descriptor
        Position (``0`` is the bottom layer, ``-1`` the top one), a digest or
        diff_id (or a unique prefix of its hex), or a layer descriptor (then
        ``ref`` only names the repository and nothing else is fetched).
    platform : str, optional
    progress : bool or tqdm-like
        A bar in bytes while the layer streams.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    pandas.DataFrame
        path, type (file, dir, symlink, hardlink, char, block, fifo), size,
        mode (octal text such as ``'0755'``), uid, gid, mtime, linkname and
        whiteout (True for ``.wh.`` markers that delete lower-layer paths).

    Examples
    --------
    >>> listing = files("alpine:3.20", layer=0)              # doctest: +SKIP
    >>> listing[listing.type == "symlink"].head()            # doctest: +SKIP
    """
    client, repository, descriptor = _layer_source(
        ref, layer, platform, options, settings
    )
    bar = Progress(progress, descriptor.size, f"layer {descriptor.digest.short}")
    try:
        rows = list(_members(client, repository, descriptor, bar.update))
    finally:
        bar.close()
    frame = pd.DataFrame(rows, columns=FILE_COLUMNS)
    frame["mtime"] = pd.to_datetime(frame["mtime"], unit="s", utc=True)
    return frame.astype({"size": "int64", "uid": "int64", "gid": "int64"})


def _layer_source(ref, layer, platform, options, settings):
    if isinstance(layer, Descriptor):
        reference = _reference(ref)
        opts = _options_of(ref, options, settings)
        return client_for(reference.registry, opts), reference.repository, layer
    image = _resolved(ref, platform, options, settings)
    return image.client, image.reference.repository, _pick_layer(image, layer)


def _pick_layer(image: Image, layer) -> Descriptor:
    descriptors = list(image.manifest.layers)
    if isinstance(layer, int) and not isinstance(layer, bool):
        if -len(descriptors) <= layer < len(descriptors):
            return descriptors[layer]
        raise InvalidOption(
            f"{image.reference} has {len(descriptors)} layers (0 to "
            f"{len(descriptors) - 1}); layer={layer} is out of range"
        )
    wanted = str(layer).removeprefix("sha256:")
    matches = [
        descriptor
        for descriptor, diff_id in zip(descriptors, image.config.diff_ids)
        if descriptor.digest.hex.startswith(wanted) or diff_id.hex.startswith(wanted)
    ]
    if len(matches) == 1 or (matches and len(set(matches)) == 1):
        return matches[0]
    what = "matches several layers" if matches else "matches no layer"
    raise InvalidOption(
        f"layer={layer!r} {what} of {image.reference}; give a position, or a "
        "digest or diff_id from dgetkit.layers()"
    )


def _members(client, repository: str, descriptor: Descriptor, on_bytes):
    """Yield one row per tar member; the blob's digest is verified at the end.

    Bytes that fail to decompress or to read as a tar are first checked
    against the digest, so a corrupted download is reported as one.
    """
    stream = BlobStream(client, repository, descriptor, on_bytes=on_bytes)
    buffered = io.BufferedReader(stream, CHUNK_SIZE)
    try:
        kind = codec.sniff(buffered.peek(8)[:8])
        plain = codec.decompressing(buffered, kind)
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            yield from (_member_row(member) for member in tar)
        drain(plain)
    except DgetkitError:
        raise
    except _UNREADABLE as err:
        drain(stream)
        raise UnsupportedMediaType(
            f"layer {descriptor.digest} ({descriptor.media_type}) arrived intact "
            f"but is not a tar archive dgetkit can read: {err}"
        ) from err
    drain(buffered)


def _member_row(member: tarfile.TarInfo) -> dict:
    path = member.name
    while path.startswith(("./", "/")):
        path = path[2:] if path.startswith("./") else path[1:]
    path = path.rstrip("/")
    return {
        "path": path,
        "type": _MEMBER_TYPES.get(member.type, "other"),
        "size": member.size,
        "mode": f"{member.mode & 0o7777:04o}",
        "uid": member.uid,
        "gid": member.gid,
        "mtime": member.mtime,
        "linkname": member.linkname,
        "whiteout": path.rsplit("/", 1)[-1].startswith(WHITEOUT_PREFIX),
    }


# -- the cache ---------------------------------------------------------------------


def cache_frame(cache=None) -> pd.DataFrame:
    """What the blob cache holds: one row per file.

    Parameters
    ----------
    cache : path or Cache, optional
        Default: the cache :func:`dgetkit.pull` uses (``$DGETKIT_CACHE``...).

    Returns
    -------
    pandas.DataFrame
        kind (blob, layer or partial), digest, size, size_human, modified, path.

    Examples
    --------
    >>> cache_frame().groupby("kind")["size"].sum()          # doctest: +SKIP
    """
    store = cache if isinstance(cache, Cache) else Cache(cache)
    frame = pd.DataFrame(store.entries(), columns=CACHE_COLUMNS)
    frame["size_human"] = frame["size"].map(human_size)
    frame["modified"] = pd.to_datetime(frame["modified"], unit="s", utc=True)
    return frame.astype({"size": "int64"})


# -- teaching: the single steps of a pull ------------------------------------------


def ping(registry: str = DOCKER_HUB, *, options=None, **settings) -> dict:
    """Knock on a registry's door: ``GET /v2/`` and what it says about logging in.

    The first step of every pull. A registry that wants a login answers
    ``401`` with a ``WWW-Authenticate`` challenge: ``Bearer`` names the token
    service (``realm``) and its ``service`` name; ``Basic`` wants a password.

    Parameters
    ----------
    registry : str
        A registry name as in references: ``docker.io``, ``ghcr.io``,
        ``127.0.0.1:5000``.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    dict
        url, status, api_version (the ``Docker-Distribution-API-Version``
        header), scheme (``bearer``, ``basic`` or ``''``), realm, service.

    Examples
    --------
    >>> ping("docker.io")["realm"]                           # doctest: +SKIP
    'https://auth.docker.io/token'
    """
    opts = connection(options, **settings)
    client = _unpinged_client(registry, opts)
    answers = []

    def hook(response, *args, **kwargs):
        answers.append(response)

    client.session.hooks["response"].append(hook)
    try:
        client.ping()
    finally:
        client.session.hooks["response"].remove(hook)
    return _challenge_summary(answers[-1])


def _unpinged_client(registry: str, options: Options) -> RegistryClient:
    """The shared client if it has not knocked yet (so it need not again)."""
    shared = client_for(registry, options)
    shared = getattr(shared, "clients", [shared])[-1]
    if not shared.base_url:
        return shared
    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    return RegistryClient(host, options, name=registry)


def _challenge_summary(response) -> dict:
    challenge = pick_challenge(
        parse_challenges(response.raw.headers.getlist("WWW-Authenticate"))
    )
    params = challenge.params if challenge else {}
    return {
        "url": response.url,
        "status": response.status_code,
        "api_version": response.headers.get("Docker-Distribution-API-Version", ""),
        "scheme": challenge.scheme if challenge else "",
        "realm": params.get("realm", ""),
        "service": params.get("service", ""),
    }


def manifest(ref, *, platform=None, options=None, **settings):
    """Fetch one manifest: what a tag (or digest) points at.

    Without ``platform`` this is the reference's own manifest: an
    :class:`~dgetkit.manifest.Index` for multi-platform images, else an
    :class:`~dgetkit.manifest.ImageManifest`. With ``platform`` an index
    entry is chosen and that image manifest is fetched too.

    Examples
    --------
    >>> top = manifest("alpine:3.20")                        # doctest: +SKIP
    >>> [str(d.platform) for d in top.manifests][:2]         # doctest: +SKIP
    """
    reference = _reference(ref)
    client = client_for(reference.registry, _options_of(ref, options, settings))
    found = fetch_manifest(client, reference.repository, reference.identifier)
    if platform is not None and isinstance(found, Index):
        entry = select(found, Platform.parse(str(platform)), reference)
        found = fetch_manifest(client, reference.repository, str(entry.digest))
    return found


def blob(ref, descriptor: Descriptor, *, options=None, **settings) -> bytes:
    """The bytes of a small blob (a config), verified against its descriptor.

    Examples
    --------
    >>> m = manifest("alpine:3.20", platform="linux/amd64")  # doctest: +SKIP
    >>> json.loads(blob("alpine:3.20", m.config))["rootfs"]  # doctest: +SKIP
    """
    reference = _reference(ref)
    client = client_for(reference.registry, _options_of(ref, options, settings))
    return client.get_blob(reference.repository, descriptor)


# -- the image handle --------------------------------------------------------------


class RemoteImage:
    """One image in a registry, resolved to one platform, to look at many ways.

    Made by :func:`image`. Its methods are the module's functions with this
    image filled in; they reuse the manifest and config fetched once.

    Attributes
    ----------
    reference : Reference
    digest : Digest
        Of the platform's image manifest.
    platform : Platform
    size : int
        Compressed bytes of the layers, as the registry stores them.
    image : dgetkit.pull.Image
    options : Options
    """

    def __init__(self, image: Image, options: Options):
        self.image = image
        self.options = options

    reference = property(lambda self: self.image.reference)
    digest = property(lambda self: self.image.digest)
    platform = property(lambda self: self.image.platform)
    size = property(lambda self: self.image.size)

    @property
    def layer_count(self) -> int:
        return len(self.image.manifest.layers)

    def platforms(self, *, sizes: bool = False) -> pd.DataFrame:
        return platforms(self, sizes=sizes)

    def layers(self) -> pd.DataFrame:
        return layers(self)

    def history(self) -> pd.DataFrame:
        return history(self)

    def config(self) -> ImageSettings:
        return config(self)

    def files(self, layer=-1, *, progress=True) -> pd.DataFrame:
        return files(self, layer=layer, progress=progress)

    def tags(self, *, page_size: int | None = None) -> pd.DataFrame:
        return tags(self, page_size=page_size)

    def ratelimit(self) -> pd.DataFrame:
        return ratelimit(self)

    def pull(self, path=None, **kwargs):
        """Write this exact image (pinned by digest) to a ``docker save`` archive.

        Keywords are those of :func:`dgetkit.pull`; connection settings
        default to the ones this handle was made with.
        """
        if not any(k in kwargs for k in ("options", *OPTION_NAMES)):
            kwargs["options"] = self.options
        pinned = self.reference.with_digest(self.digest)
        return pull(pinned, path, platform=None, **kwargs)

    def _summary(self) -> dict:
        index = self.image.index
        return {
            "reference": str(self.reference),
            "digest": str(self.digest),
            "platform": str(self.platform),
            "size": f"{human_size(self.size)} ({self.size:,} bytes, compressed)",
            "layers": str(self.layer_count),
            "index": str(index.digest) if index is not None else "",
            "config": str(self.image.config.digest),
        }

    def __repr__(self) -> str:
        summary = self._summary()
        return (
            f"<RemoteImage {summary['reference']} {summary['platform']} "
            f"{summary['digest'][:19]} {summary['layers']} layers>"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{key}</th>"
            f"<td style='text-align:left'><code>{html.escape(value)}</code></td></tr>"
            for key, value in self._summary().items()
            if value
        )
        return f"<table class='dgetkit-image'>{rows}</table>"


def image(ref, platform=None, *, options=None, **settings) -> RemoteImage:
    """Resolve ``ref`` to one platform's image, to look at it many ways.

    Parameters
    ----------
    ref : str or Reference
    platform : str, optional
        ``os/arch[/variant]``; default linux on this machine's architecture.
    options, **settings
        Connection settings, see :func:`connection`.

    Returns
    -------
    RemoteImage
        Shows reference, digest, platform, size and layer count as the last
        line of a cell; ``.layers()``, ``.history()``, ``.config()``,
        ``.files(layer)``, ``.platforms()`` and ``.pull(path)``.

    Examples
    --------
    >>> img = image("alpine:3.20", platform="linux/arm64")  # doctest: +SKIP
    >>> img.files(layer=0).head()                            # doctest: +SKIP
    """
    opts = connection(options, **settings)
    return RemoteImage(resolve(_reference(ref), platform=platform, options=opts), opts)
