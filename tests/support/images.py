"""Build test images in Python and push them over the Registry HTTP API v2.

Layers are made with :mod:`tarfile` (fixed mtimes, sorted entries, so the
same files always give the same digest), configs and manifests are written as
JSON, and :class:`Pusher` uploads them with monolithic blob uploads.

https://github.com/opencontainers/image-spec/blob/v1.1.0/manifest.md
https://github.com/distribution/distribution/blob/v2.8.2/docs/spec/api.md
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urljoin

import requests
import zstandard

FIXED_MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
CHUNK_SIZE = 1 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"
PREDICATE_ANNOTATION = {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}

LAYER_MEDIA_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
}
MANIFEST_TYPES = {"oci": OCI_MANIFEST, "docker": DOCKER_MANIFEST}
INDEX_TYPES = {"oci": OCI_INDEX, "docker": DOCKER_LIST}
CONFIG_TYPES = {"oci": OCI_CONFIG, "docker": DOCKER_CONFIG}
FOREIGN_TYPES = {"oci": OCI_NONDISTRIBUTABLE, "docker": DOCKER_FOREIGN}

STANDARD_PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6")


def sha256_digest(data: bytes) -> str:
    """Return ``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value) -> bytes:
    """Serialize ``value`` the same way every time (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# -- layer contents -----------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A regular file in a layer."""

    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Dir:
    """A directory in a layer (parents are added as ``Dir()`` automatically)."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Symlink:
    """A symbolic link to ``target``."""

    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Hardlink:
    """A hard link to another path of the same layer."""

    target: str


def whiteout(path: str) -> str:
    """Return the layer path that deletes ``path`` from lower layers.

    Examples
    --------
    >>> whiteout("etc/old.conf")
    'etc/.wh.old.conf'
    """
    path = PurePosixPath(path.strip("/"))
    return str(path.parent / f".wh.{path.name}").removeprefix("./")


def opaque(directory: str) -> str:
    """Return the layer path that hides everything lower layers put in ``directory``.

    Examples
    --------
    >>> opaque("var/cache")
    'var/cache/.wh..wh..opq'
    """
    return f"{directory.strip('/')}/.wh..wh..opq"


def _normalize(files: dict) -> dict[str, object]:
    entries = {}
    for path, spec in files.items():
        name = path.strip("/")
        entries[name] = File(spec) if isinstance(spec, bytes) else spec
    for name in list(entries):
        for parent in PurePosixPath(name).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), Dir())
    return entries


def _tarinfo(name: str, spec, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = getattr(spec, "uid", 0)
    info.gid = getattr(spec, "gid", 0)
    info.mode = getattr(spec, "mode", 0o777)
    if isinstance(spec, File):
        info.size = len(spec.data)
    elif isinstance(spec, Dir):
        info.type = tarfile.DIRTYPE
    elif isinstance(spec, Symlink):
        info.type, info.linkname = tarfile.SYMTYPE, spec.target
    elif isinstance(spec, Hardlink):
        info.type, info.linkname = tarfile.LNKTYPE, spec.target.strip("/")
        info.mode = 0o644
    else:
        raise TypeError(f"unknown layer entry for {name!r}: {spec!r}")
    return info


def make_tar(files: dict, *, mtime: int = FIXED_MTIME) -> bytes:
    """Return an uncompressed layer tar of ``files`` (path -> bytes or spec).

    Entries are sorted by path, hard links last, with missing parent
    directories added, so equal input gives equal bytes.
    """
    entries = _normalize(files)
    order = sorted(entries, key=lambda n: (isinstance(entries[n], Hardlink), n))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in order:
            spec = entries[name]
            data = io.BytesIO(spec.data) if isinstance(spec, File) else None
            tar.addfile(_tarinfo(name, spec, mtime), data)
    return buffer.getvalue()


def compress(raw: bytes, compression: str, *, level: int | None = None) -> bytes:
    """Compress a tar with ``"gzip"``, ``"zstd"`` or ``"none"``."""
    if compression == "gzip":
        return gzip.compress(raw, compresslevel=level or 6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=level or 3).compress(raw)
    if compression == "none":
        return raw
    raise ValueError(f"compression must be gzip, zstd or none, got {compression!r}")


@dataclass(frozen=True)
class Layer:
    """A layer blob: bytes in memory (``data``) or in a file (``path``).

    ``label`` overrides the media type, for images that mislabel a layer.
    """

    digest: str
    size: int
    diff_id: str
    compression: str
    data: bytes | None = None
    path: Path | None = None
    names: tuple[str, ...] = ()
    label: str | None = None

    def media_type(self, kind: str = "oci") -> str:
        """Return the layer media type for an ``"oci"`` or ``"docker"`` manifest."""
        if self.label:
            return self.label
        try:
            return LAYER_MEDIA_TYPES[kind, self.compression]
        except KeyError:
            raise ValueError(
                f"no {kind} media type for a {self.compression} layer"
                " (Docker schema 2 has no zstd type; use kind='oci')"
            ) from None

    def relabelled(self, media_type: str) -> Layer:
        """Return the same blob announced with another media type."""
        return dataclasses.replace(self, label=media_type)

    def open(self):
        """Return a binary file object that reads the blob."""
        return open(self.path, "rb") if self.path else io.BytesIO(self.data)


def make_layer(files: dict, compression: str = "gzip", *, mtime=FIXED_MTIME) -> Layer:
    """Build a layer blob from ``files``.

    Parameters
    ----------
    files : dict
        Path -> ``bytes`` (a regular file) or a :class:`File`, :class:`Dir`,
        :class:`Symlink` or :class:`Hardlink`. Use :func:`whiteout` and
        :func:`opaque` for deletion markers (their value is ``b""``).
    compression : {"gzip", "zstd", "none"}
    mtime : int
        Modification time of every entry.

    Examples
    --------
    >>> layer = make_layer({"etc/arch": b"amd64\\n"})
    >>> layer.media_type("docker")
    'application/vnd.docker.image.rootfs.diff.tar.gzip'
    >>> layer.names
    ('etc', 'etc/arch')
    """
    raw = make_tar(files, mtime=mtime)
    blob = compress(raw, compression)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tuple(tar.getnames())
    return Layer(
        digest=sha256_digest(blob),
        size=len(blob),
        diff_id=sha256_digest(raw),
        compression=compression,
        data=blob,
        names=names,
    )


# -- large layers, streamed to disk -------------------------------------------


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, target):
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class _PatternReader:
    """Reads ``size`` bytes: seeded random blocks alternating with text."""

    def __init__(self, size: int, seed: int, random_fraction: float):
        self.remaining = size
        self.random = random.Random(seed)
        self.random_part = int(CHUNK_SIZE * random_fraction)
        text = b"dgetkit test data, compressible on purpose. " * 30000
        self.text = text[: CHUNK_SIZE - self.random_part]
        self.block = b""
        self.offset = 0

    def _next_block(self) -> None:
        self.block = self.random.randbytes(self.random_part) + self.text
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        out = bytearray()
        while len(out) < size:
            if self.offset == len(self.block):
                self._next_block()
            take = min(size - len(out), len(self.block) - self.offset)
            out += self.block[self.offset : self.offset + take]
            self.offset += take
        self.remaining -= size
        return bytes(out)


def _compressing(target, compression: str, level: int):
    if compression == "gzip":
        return gzip.GzipFile(fileobj=target, mode="wb", compresslevel=level, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=level).stream_writer(
            target, closefd=False
        )
    return None


def make_large_layer(
    path,
    size: int,
    *,
    seed: int = 0,
    compression: str = "gzip",
    random_fraction: float = 0.5,
    level: int = 1,
    name: str = "data/blob.bin",
) -> Layer:
    """Write a layer holding one ``size``-byte file to ``path``, streaming.

    The file alternates seeded random bytes with text, so ``random_fraction``
    sets how well it compresses; memory use stays around one megabyte.

    Examples
    --------
    >>> layer = make_large_layer(tmp_path / "big.tar.gz", 512 << 20)  # doctest: +SKIP
    >>> layer.path, layer.size, layer.diff_id  # doctest: +SKIP
    """
    path = Path(path)
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, FIXED_MTIME, 0o644
    with open(path, "wb") as out:
        blob = _HashingWriter(out)
        packer = _compressing(blob, compression, level)
        raw = _HashingWriter(packer if packer is not None else blob)
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info, _PatternReader(size, seed, random_fraction))
        if packer is not None:
            packer.close()
    return Layer(
        digest=blob.digest,
        size=blob.size,
        diff_id=raw.digest,
        compression=compression,
        path=path,
        names=(name,),
    )


# -- configs and manifests ----------------------------------------------------


def platform_string(architecture: str, os: str = "linux", variant=None) -> str:
    """Return ``os/architecture[/variant]``, e.g. ``linux/arm/v7``."""
    return "/".join(p for p in (os, architecture, variant) if p)


def split_platform(platform: str) -> dict:
    """Turn ``linux/arm64/v8`` into an OCI platform object."""
    os, architecture, *variant = platform.split("/")
    value = {"architecture": architecture, "os": os}
    if variant:
        value["variant"] = variant[0]
    return value


def _history(layers, history) -> list[dict]:
    if history is None:
        return [
            {"created": CREATED, "created_by": f"dgetkit-test layer {i}"}
            for i in range(len(layers))
        ]
    filled = [{"created": CREATED, **step} for step in history]
    real = [step for step in filled if not step.get("empty_layer")]
    if len(real) != len(layers):
        raise ValueError(
            f"history has {len(real)} non-empty steps for {len(layers)} layers"
        )
    return filled


def make_config(
    layers,
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    *,
    history: list[dict] | None = None,
    env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    cmd=("/bin/sh",),
    labels: dict | None = None,
    created: str = CREATED,
) -> bytes:
    """Return an image config (JSON bytes) for ``layers``.

    ``history`` steps are dicts such as ``{"created_by": "ENV A=1",
    "empty_layer": True}``; the non-empty ones must match ``layers``.

    Examples
    --------
    >>> config = json.loads(make_config([make_layer({"a": b"1"})], "arm", variant="v7"))
    >>> config["variant"], len(config["rootfs"]["diff_ids"])
    ('v7', 1)
    """
    config = {
        "architecture": architecture,
        "os": os,
        "created": created,
        "config": {"Env": list(env), "Cmd": list(cmd), "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": _history(layers, history),
    }
    if variant:
        config["variant"] = variant
    return canonical_json(config)


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    """Return a descriptor ``{mediaType, digest, size, …}`` for ``data``."""
    value = {"mediaType": media_type, "digest": sha256_digest(data)}
    return value | {"size": len(data)} | extra


def layer_descriptor(layer: Layer, kind: str, urls=None) -> dict:
    """Return the manifest entry of ``layer``; with ``urls`` it is a foreign layer."""
    value = {"mediaType": layer.media_type(kind), "digest": layer.digest}
    value["size"] = layer.size
    if urls:
        value["mediaType"] = layer.label or FOREIGN_TYPES[kind]
        value["urls"] = list(urls)
    return value


def make_manifest(config: bytes, layers, kind: str = "oci", layer_urls=None) -> bytes:
    """Return an image manifest (JSON bytes) of ``kind`` ``"oci"`` or ``"docker"``.

    ``layer_urls`` maps a layer's position to the URLs it may be fetched from.
    """
    layer_urls = layer_urls or {}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[kind],
        "config": descriptor(CONFIG_TYPES[kind], config),
        "layers": [
            layer_descriptor(layer, kind, layer_urls.get(i))
            for i, layer in enumerate(layers)
        ],
    }
    return canonical_json(manifest)


def make_index(descriptors, kind: str = "oci", annotations=None) -> bytes:
    """Return an OCI index or Docker manifest list (JSON bytes)."""
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPES[kind],
        "manifests": list(descriptors),
    }
    if annotations:
        index["annotations"] = dict(annotations)
    return canonical_json(index)


def make_attestation(subject: dict, repository: str) -> tuple[bytes, bytes]:
    """Return (config, in-toto layer) of a BuildKit-style attestation manifest."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [
            {
                "name": f"pkg:docker/{repository}",
                "digest": {"sha256": subject["digest"].split(":", 1)[1]},
            }
        ],
        "predicate": {"buildType": "https://mobyproject.org/buildkit@v1"},
    }
    layer = canonical_json(statement)
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }
    return canonical_json(config), layer


# -- pushing --------------------------------------------------------------------


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` value into its scheme and parameters.

    Examples
    --------
    >>> parse_challenge('Bearer realm="https://t/token",service="reg"')
    ('bearer', {'realm': 'https://t/token', 'service': 'reg'})
    """
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class PushError(RuntimeError):
    """The registry refused something the test setup tried to push."""


def _check(response: requests.Response, *expected: int) -> requests.Response:
    if response.status_code not in expected:
        raise PushError(
            f"{response.request.method} {response.url} answered "
            f"{response.status_code}, expected {expected}: {response.text[:500]}"
        )
    return response


class Pusher:
    """Upload blobs and manifests to a registry, answering its auth challenges.

    Parameters
    ----------
    registry_url : str
        ``http(s)://127.0.0.1:PORT``.
    auth : tuple of str, optional
        ``(user, password)``: sent as Basic credentials to a Basic registry,
        or to the token server of a Bearer registry for push tokens.
    session : requests.Session, optional
    verify : bool or str
        Passed to :mod:`requests` (the CA file of a TLS registry).

    Examples
    --------
    >>> pusher = Pusher(registry.url)  # doctest: +SKIP
    >>> layer = make_layer({"hello": b"world"})
    >>> pusher.push_image("lib/hello", "1", [layer], make_config([layer]))  # doctest: +SKIP
    """

    def __init__(self, registry_url, *, auth=None, session=None, verify=True):
        self.registry_url = registry_url.rstrip("/")
        self.auth = auth
        self.session = session or requests.Session()
        self.verify = str(verify) if isinstance(verify, Path) else verify
        self._tokens: dict[str, str] = {}
        self._basic = False

    # -- HTTP with auth --------------------------------------------------------

    def _headers(self, repository: str) -> dict:
        token = self._tokens.get(repository)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(self, method, url, repository, *, data=None, headers=None, **kwargs):
        if isinstance(data, Path):
            with open(data, "rb") as body:
                return self._send(
                    method, url, repository, data=body, headers=headers, **kwargs
                )
        return self.session.request(
            method,
            urljoin(self.registry_url + "/", url),
            data=data,
            headers={**self._headers(repository), **(headers or {})},
            auth=self.auth if self._basic else None,
            verify=self.verify,
            timeout=120,
            **kwargs,
        )

    def request(self, method, url, repository, **kwargs) -> requests.Response:
        """Send a request, log in once if the registry answers 401, and retry.

        ``data`` may be bytes or a :class:`~pathlib.Path` (streamed from disk).
        """
        response = self._send(method, url, repository, **kwargs)
        if response.status_code == 401 and self._login(response, repository):
            response = self._send(method, url, repository, **kwargs)
        return response

    def _login(self, response: requests.Response, repository: str) -> bool:
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self.auth:
            self._basic = True
            return True
        if scheme != "bearer":
            return False
        self._tokens[repository] = self.fetch_token(params, repository)
        return True

    def fetch_token(self, challenge: dict, repository: str) -> str:
        """Ask the challenge's realm for a pull and push token for ``repository``."""
        query = {"service": challenge.get("service", "")}
        query["scope"] = f"repository:{repository}:pull,push"
        answer = self.session.get(
            challenge["realm"],
            params=query,
            auth=self.auth,
            verify=self.verify,
            timeout=30,
        )
        body = _check(answer, 200).json()
        return body.get("token") or body["access_token"]

    # -- blobs and manifests ---------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Say whether ``HEAD /v2/<name>/blobs/<digest>`` finds the blob."""
        url = f"/v2/{repository}/blobs/{digest}"
        return self.request("HEAD", url, repository).status_code == 200

    def push_blob(self, repository: str, data, digest: str | None = None) -> str:
        """Upload bytes or a file (streamed) unless the blob exists; return its digest."""
        if digest is None:
            digest = _file_digest(data) if isinstance(data, Path) else None
            digest = digest or sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository)
        location = _check(start, 202).headers["Location"]
        separator = "&" if "?" in location else "?"
        finish = self.request(
            "PUT",
            location + separator + urlencode({"digest": digest}),
            repository,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _check(finish, 201)
        return digest

    def push_layer(self, repository: str, layer: Layer) -> str:
        """Upload one :class:`Layer` (from memory or from its file)."""
        data = layer.path if layer.path else layer.data
        return self.push_blob(repository, data, layer.digest)

    def push_manifest(self, repository: str, reference, body: bytes, media_type):
        """PUT a manifest under a tag or digest; return its digest."""
        digest = sha256_digest(body)
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference or digest}",
            repository,
            data=body,
            headers={"Content-Type": media_type},
        )
        _check(response, 201)
        answered = response.headers.get("Docker-Content-Digest", digest)
        if answered != digest:
            raise PushError(f"registry stored {answered}, we sent {digest}")
        return digest

    def push_image(
        self,
        repository: str,
        tag: str | None,
        layers,
        config: bytes,
        kind: str = "oci",
        *,
        layer_urls: dict | None = None,
        push_foreign: bool = False,
    ) -> dict:
        """Push the layers, config and manifest of one image.

        Layers listed in ``layer_urls`` (position -> URLs) become foreign
        layers and are only uploaded with ``push_foreign=True``. With
        ``tag=None`` the manifest is pushed by digest only.

        Returns
        -------
        dict
            The manifest descriptor: mediaType, digest, size and platform.
        """
        layer_urls = layer_urls or {}
        for position, layer in enumerate(layers):
            if position not in layer_urls or push_foreign:
                self.push_layer(repository, layer)
        self.push_blob(repository, config)
        body = make_manifest(config, layers, kind, layer_urls)
        self.push_manifest(repository, tag, body, MANIFEST_TYPES[kind])
        return descriptor(MANIFEST_TYPES[kind], body, platform=_platform_of(config))

    def push_attestation(self, repository: str, subject: dict) -> dict:
        """Push a BuildKit-style attestation manifest for ``subject``."""
        config, statement = make_attestation(subject, repository)
        self.push_blob(repository, statement)
        self.push_blob(repository, config)
        layer = descriptor(IN_TOTO, statement, annotations=PREDICATE_ANNOTATION)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [layer],
        }
        body = canonical_json(manifest)
        self.push_manifest(repository, None, body, OCI_MANIFEST)
        return descriptor(
            OCI_MANIFEST,
            body,
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={
                "vnd.docker.reference.digest": subject["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        )

    def push_index(
        self,
        repository: str,
        tag: str | None,
        descriptors,
        kind: str = "oci",
        *,
        attestation: bool = True,
    ) -> dict:
        """Push an OCI index or Docker manifest list of already pushed manifests.

        For an OCI index with ``attestation=True`` each image gets an
        attestation manifest entry (platform ``unknown/unknown``).

        Returns
        -------
        dict
            The index descriptor (mediaType, digest, size) and ``manifests``,
            the entries written, attestations included.
        """
        entries = list(descriptors)
        if kind == "oci" and attestation:
            entries += [self.push_attestation(repository, d) for d in descriptors]
        body = make_index(entries, kind)
        self.push_manifest(repository, tag, body, INDEX_TYPES[kind])
        return descriptor(INDEX_TYPES[kind], body, manifests=entries)

    def tag(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Point another tag at an existing manifest body."""
        return self.push_manifest(repository, tag, body, media_type)


def _file_digest(path: Path) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
            sha256.update(chunk)
    return "sha256:" + sha256.hexdigest()


def _platform_of(config: bytes) -> dict:
    value = json.loads(config)
    return split_platform(
        platform_string(value["architecture"], value["os"], value.get("variant"))
    )


# -- the standard catalogue -------------------------------------------------------


def _image_record(repository, tag, kind, layers, config, pushed) -> dict:
    return {
        "repository": repository,
        "tag": tag,
        "reference": f"{repository}:{tag}" if tag else repository,
        "kind": kind,
        "digest": pushed["digest"],
        "media_type": pushed["mediaType"],
        "size": pushed["size"],
        "platform": platform_string(**pushed["platform"]),
        "config": config,
        "config_digest": sha256_digest(config),
        "layers": list(layers),
        "layer_digests": [layer.digest for layer in layers],
        "diff_ids": [layer.diff_id for layer in layers],
    }


def push_recorded(pusher, repository, tag, layers, config, kind="oci", **options):
    """Push one image and return the record used in the catalogue."""
    pushed = pusher.push_image(repository, tag, layers, config, kind, **options)
    return _image_record(repository, tag, kind, layers, config, pushed)


COMMON_LAYER_FILES = {
    "etc/os-release": b"NAME=dgetkit-test\nID=dgetkit\n",
    "bin/": Dir(),
}


def _platform_layers(platform: str, compression: str) -> list[Layer]:
    common = make_layer(COMMON_LAYER_FILES, compression)
    arch = make_layer({"etc/arch": platform.encode() + b"\n"}, compression)
    return [common, arch]


def push_multi_platform(pusher, repository, tag, kind, platforms=STANDARD_PLATFORMS):
    """Push one image per platform and an index (OCI) or list (Docker) of them."""
    images = {}
    for platform in platforms:
        layers = _platform_layers(platform, "gzip")
        config = make_config(layers, **split_platform(platform))
        images[platform] = push_recorded(pusher, repository, None, layers, config, kind)
    children = [_descriptor_of(record) for record in images.values()]
    index = pusher.push_index(repository, tag, children, kind)
    attestations = [
        entry["digest"]
        for entry in index["manifests"]
        if entry.get("platform", {}).get("os") == "unknown"
    ]
    return {
        "repository": repository,
        "tag": tag,
        "reference": f"{repository}:{tag}",
        "kind": kind,
        "digest": index["digest"],
        "media_type": index["mediaType"],
        "size": index["size"],
        "platforms": images,
        "attestations": attestations,
    }


def _descriptor_of(record: dict) -> dict:
    return {
        "mediaType": record["media_type"],
        "digest": record["digest"],
        "size": record["size"],
        "platform": split_platform(record["platform"]),
    }


def _single(pusher, repository, kind, compression) -> dict:
    layers = [
        make_layer({"etc/image": repository.encode() + b"\n"}, compression),
        make_layer({"usr/share/doc/readme": b"two layers\n" * 50}, compression),
    ]
    config = make_config(layers, labels={"org.dgetkit.test": repository})
    return push_recorded(pusher, repository, "1", layers, config, kind)


SINGLE_IMAGES = {
    "single/oci-gzip": ("oci", "gzip"),
    "single/oci-zstd": ("oci", "zstd"),
    "single/oci-plain": ("oci", "none"),
    "single/docker-gzip": ("docker", "gzip"),
    "single/docker-plain": ("docker", "none"),
}

EMPTY_LAYER_HISTORY = [
    {"created_by": "ENV GREETING=hello", "empty_layer": True},
    {"created_by": "COPY first /"},
    {"created_by": 'LABEL purpose="history"', "empty_layer": True},
    {"created_by": "COPY second /"},
    {"created_by": 'CMD ["/bin/sh"]', "empty_layer": True},
]


def _history_image(pusher) -> dict:
    layers = [make_layer({"first": b"1\n"}), make_layer({"second": b"2\n"})]
    config = make_config(layers, history=EMPTY_LAYER_HISTORY)
    return push_recorded(pusher, "history/empty", "1", layers, config, "docker")


def whiteout_layers() -> list[Layer]:
    """Two layers: a base, then one that deletes, hides and links things."""
    base = make_layer(
        {
            "etc/keep": b"kept\n",
            "etc/old.conf": b"deleted by the next layer\n",
            "var/cache/app/stale": b"hidden by an opaque directory\n",
        }
    )
    top = make_layer(
        {
            whiteout("etc/old.conf"): b"",
            opaque("var/cache/app"): b"",
            "var/cache/app/fresh": b"new\n",
            "usr/bin/tool": File(b"#!/bin/sh\necho tool\n", mode=0o755),
            "usr/bin/tool-link": Symlink("tool"),
            "usr/bin/tool-hard": Hardlink("usr/bin/tool"),
            "home/user": Dir(mode=0o700, uid=1000, gid=1000),
            "home/user/notes": File(b"mine\n", mode=0o600, uid=1000, gid=1000),
        }
    )
    return [base, top]


def _many_tags(pusher, count: int = 25) -> dict:
    layers = [make_layer({"tags": b"many\n"})]
    config = make_config(layers)
    record = push_recorded(pusher, "tags/many", "t00", layers, config, "oci")
    body = make_manifest(config, layers, "oci")
    tags = [f"t{i:02d}" for i in range(count)]
    for tag in tags[1:]:
        pusher.tag("tags/many", tag, body, OCI_MANIFEST)
    return record | {"tags": tags, "reference": "tags/many"}


def _foreign_image(pusher) -> dict:
    remote = make_layer({"foreign/data": b"fetched from a URL\n"})
    pusher.push_layer("foreign/source", remote)
    url = f"{pusher.registry_url}/v2/foreign/source/blobs/{remote.digest}"
    layers = [make_layer({"etc/local": b"local\n"}), remote]
    config = make_config(layers)
    record = push_recorded(
        pusher, "foreign/urls", "1", layers, config, "docker", layer_urls={1: [url]}
    )
    return record | {"foreign_urls": {remote.digest: url}}


def _small_images(pusher) -> list[dict]:
    dup = make_layer({"dup": b"the same layer twice\n"})
    deep = [make_layer({"deep": b"a/b/c\n"})]
    gone = whiteout_layers()
    wrong = make_layer({"mislabelled": b"gzip bytes\n"})
    wrong = [wrong.relabelled(LAYER_MEDIA_TYPES["oci", "none"])]
    return [
        push_recorded(pusher, "dup/layer", "1", [dup, dup], make_config([dup, dup])),
        push_recorded(pusher, "a/b/c/deep", "1", deep, make_config(deep)),
        push_recorded(pusher, "whiteout/layers", "1", gone, make_config(gone)),
        push_recorded(pusher, "mislabel/media", "1", wrong, make_config(wrong)),
    ]


def build_standard_images(pusher: Pusher, *, foreign: bool = True) -> dict:
    """Push the catalogue of images many tests pull; return what was pushed.

    Keys are references (``"multi/oci:1"``) and values are records with
    ``digest``, ``media_type``, ``size``, ``config``, ``config_digest``,
    ``layers`` (:class:`Layer` objects), ``layer_digests``, ``diff_ids`` and
    ``platform``; multi-platform records hold ``platforms`` (platform ->
    record) and ``attestations`` (digests) instead. ``tags/many`` also lists
    its ``tags``. ``foreign=False`` leaves out ``foreign/urls:1`` (for
    registries that refuse ``urls``).

    Examples
    --------
    >>> catalogue = build_standard_images(Pusher(registry.url))  # doctest: +SKIP
    >>> catalogue["multi/oci:1"]["platforms"]["linux/arm/v7"]["digest"]  # doctest: +SKIP
    """
    records = [
        push_multi_platform(pusher, "multi/oci", "1", "oci"),
        push_multi_platform(pusher, "multi/docker", "1", "docker"),
        *(_single(pusher, repo, *kind) for repo, kind in SINGLE_IMAGES.items()),
        _history_image(pusher),
        _many_tags(pusher),
        *_small_images(pusher),
    ]
    if foreign:
        records.append(_foreign_image(pusher))
    return {record["reference"]: record for record in records}
