"""Pulling: resolve a reference to one image, fetch its blobs, write the archive.

This is the small piece that joins the source (:mod:`dgetkit.registry`) to the
sink (:mod:`dgetkit.archive`). Layers are fetched in parallel threads into the
cache (each byte read from the socket once and hashed), while the archive is
written beside them, layer by layer as each arrives. For a plain ``.tar`` the
writer decompresses each blob straight into the archive, checking its diff_id
on the way; for a ``.tar.gz`` the layers are unpacked into the cache first,
since a compressed archive cannot have a member's size filled in afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import codec
from .archive import (
    ArchiveImage,
    ArchiveLayer,
    LayerRestarted,
    check_output,
    default_name,
    is_gzip_name,
    write_archive,
)
from .blobs import CHUNK_SIZE, BlobStream, Cancelled, RestartBlob, drain
from .cache import Cache
from .digest import Digest, Verifier
from .errors import (
    DgetkitError,
    DigestMismatch,
    DiskFull,
    IntegrityError,
    InvalidOption,
    OutputError,
    PlatformNotFound,
)
from .manifest import (
    ImageConfig,
    ImageManifest,
    Index,
    check_config_media_type,
    parse_manifest,
)
from .platform import Platform, choose
from .progress import Progress
from .reference import Reference
from .registry import Options, client_for
from .registry import connection as connection_options

#: Layers fetched at once: enough to hide network waits, few enough for 2 cores.
DEFAULT_JOBS = 4
_MAX_INDEX_DEPTH = 2


@dataclass
class Image:
    """A reference resolved to one platform's manifest and config."""

    reference: Reference
    manifest: ImageManifest
    config: ImageConfig
    platform: Platform
    index: Index | None = None
    client: object = field(default=None, repr=False)

    @property
    def digest(self) -> Digest:
        """The digest of the platform's image manifest."""
        return self.manifest.digest

    @property
    def size(self) -> int:
        """Compressed size of the layers, as the registry stores them."""
        return sum(d.size for d in self.manifest.layers)


def resolve(
    reference: str | Reference,
    *,
    platform: str | Platform | None = None,
    options: Options | None = None,
) -> Image:
    """Fetch the manifest (choosing a platform from an index) and the config.

    Parameters
    ----------
    reference : str or Reference
        ``alpine:3.20``, ``ghcr.io/org/app@sha256:...``; see :mod:`dgetkit.reference`.
    platform : str or Platform, optional
        ``os/arch[/variant]``; default linux on this machine's architecture.
    options : Options, optional
        Credentials, TLS and mirrors.
    """
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    wanted = _platform(platform)
    client = client_for(ref.registry, options)
    parsed = fetch_manifest(client, ref.repository, ref.identifier)
    index = None
    for _ in range(_MAX_INDEX_DEPTH):
        if not isinstance(parsed, Index):
            break
        index = parsed
        chosen = select(index, wanted or Platform.host(), ref)
        parsed = fetch_manifest(client, ref.repository, str(chosen.digest))
    if isinstance(parsed, Index):
        raise DgetkitError(f"{ref} nests indexes too deeply to choose an image")
    check_config_media_type(parsed.config)
    raw = client.get_blob(ref.repository, parsed.config)
    config = ImageConfig.parse(raw, parsed.config.digest)
    _check_consistent(ref, parsed, config)
    found = config.platform.normalized()
    if index is None and wanted is not None and not wanted.matches(found):
        raise PlatformNotFound(
            f"{ref} is a single-platform image for {found}, not {wanted}; pull it "
            f"without --platform, or with --platform {found}",
            wanted=wanted,
            available=[found],
        )
    return Image(ref, parsed, config, found, index, client)


def _platform(platform) -> Platform | None:
    if platform is None or isinstance(platform, Platform):
        return platform
    return Platform.parse(platform)


def fetch_manifest(client, repository: str, identifier: str):
    """Fetch and parse one manifest or index."""
    raw, content_type, digest = client.get_manifest(repository, identifier)
    return parse_manifest(raw, content_type, digest)


def select(index: Index, wanted: Platform, ref: Reference | str = ""):
    """The index entry to pull for ``wanted``, or :class:`PlatformNotFound`."""
    images = index.images
    chosen = choose(wanted, [d.platform for d in images])
    if chosen is None and images and all(d.platform is None for d in images):
        chosen = 0
    if chosen is None:
        available = [d.platform for d in images if d.platform]
        names = ", ".join(str(p) for p in available) or "none"
        raise PlatformNotFound(
            f"{ref} has no image for {wanted}; it has: {names}. "
            "Choose one with --platform (platform=...)",
            wanted=wanted,
            available=available,
        )
    return images[chosen]


def _check_consistent(ref, manifest: ImageManifest, config: ImageConfig) -> None:
    if len(manifest.layers) != len(config.diff_ids):
        raise IntegrityError(
            f"{ref}: the manifest lists {len(manifest.layers)} layers but the config "
            f"has {len(config.diff_ids)} diff_ids; the image is broken in the registry"
        )


# -- fetching layers ---------------------------------------------------------------


@dataclass
class LayerJob:
    client: object
    repository: str
    descriptor: object
    diff_id: Digest
    decompress: bool
    #: Keep a compressed blob as sent: the archive writer unpacks it on the way in.
    unpack_later: bool = False
    #: Lets the archive writer follow the download (with ``unpack_later``).
    tail: BlobTail | None = None


def fetch_layer(job: LayerJob, cache: Cache, progress: Progress, cancel=None) -> Path:
    """Bring one layer into the cache; return the file the archive should hold.

    Uncompressed layers are kept by diff_id, blobs by digest. A blob whose
    download was resumed and then fails to verify is fetched once more from
    scratch, in case the saved part was bad.
    """
    for attempt in (1, 2):
        try:
            return _fetch_once(job, cache, progress, cancel)
        except OSError as err:
            raise _cache_error(err, cache) from err
        except (RestartBlob, IntegrityError) as err:
            retry = isinstance(err, RestartBlob) or getattr(err, "resumed", False)
            if attempt == 2 or not retry:
                raise
    raise AssertionError("unreachable")


def _cache_error(err: OSError, cache: Cache) -> DgetkitError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"the disk holding the cache {cache.root} is full; free space or prune "
            "the cache ('dgetkit cache prune'), then run the same pull to continue"
        )
    return OutputError(f"cannot write to the cache {cache.root}: {err}")


def _fetch_once(job: LayerJob, cache: Cache, progress: Progress, cancel) -> Path:
    digest, size = job.descriptor.digest, job.descriptor.size
    if (job.decompress or job.unpack_later) and cache.has_layer(job.diff_id):
        progress.update(size)
        return cache.layer_path(job.diff_id)
    if job.unpack_later:
        return _plain_as_layer(job, cache, _fetch_blob(job, cache, progress, cancel))
    if cache.has_blob(digest):
        progress.update(size)
        if not job.decompress:
            return cache.blob_path(digest)
        with open(cache.blob_path(digest), "rb") as blob:
            buffered = io.BufferedReader(blob, CHUNK_SIZE)
            if codec.sniff(buffered.peek(8)[:8]) != "none":
                return _unpack(buffered, job, cache)
        _check_plain(job)
        return cache.link_layer(cache.blob_path(digest), job.diff_id)
    return _download(job, cache, progress, cancel)


def _fetch_blob(job: LayerJob, cache: Cache, progress: Progress, cancel) -> Path:
    if cache.has_blob(job.descriptor.digest):
        progress.update(job.descriptor.size)
        return cache.blob_path(job.descriptor.digest)
    return _download(job, cache, progress, cancel)


def _plain_as_layer(job: LayerJob, cache: Cache, blob: Path) -> Path:
    """An uncompressed blob is its own layer; a compressed one waits for the writer."""
    with open(blob, "rb") as handle:
        if codec.sniff(handle.read(8)) != "none":
            return blob
    _check_plain(job)
    return cache.link_layer(blob, job.diff_id)


def _download(job: LayerJob, cache: Cache, progress: Progress, cancel) -> Path:
    digest = job.descriptor.digest
    bar = progress.layer(f"layer {digest.hex[:12]}", job.descriptor.size)

    def on_bytes(n: int) -> None:
        progress.update(n)
        bar.update(n)
        if job.tail is not None:
            part.flush()
            job.tail.grew(n)

    part, _ = cache.open_part(digest)
    if part is None:  # another pull finished this blob while we waited
        bar.close()
        return _fetch_once(job, cache, progress, cancel)
    # The part file stays locked until it is published or deleted.
    if job.tail is not None:
        job.tail.started(cache.part_path(digest))
    blob = None
    try:
        with part:
            stream = BlobStream(
                job.client,
                job.repository,
                job.descriptor,
                part=part,
                part_path=cache.part_path(digest),
                on_bytes=on_bytes,
                cancel=cancel,
            )
            try:
                layer = _consume(stream, job, cache)
            except (IntegrityError, RestartBlob) as err:
                err.resumed = stream.resumed_from > 0
                cache.discard_part(digest)  # bad bytes are never kept
                raise
            part.flush()
            blob = cache.commit_part(digest)
    finally:
        bar.close()
        if job.tail is not None:
            job.tail.ended(blob is not None)
    if job.decompress and layer is None:
        return cache.link_layer(blob, job.diff_id)
    return layer or blob


class BlobTail:
    """A blob the archive writer reads while it downloads, from the part file.

    The fetching thread reports each chunk that reached the part file and how
    its attempt ended. A reader from :meth:`open` waits for bytes, ends once
    the blob is complete and verified, and raises
    :class:`~dgetkit.archive.LayerRestarted` if the attempt failed.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._path: Path | None = None
        self._size = 0
        self._attempt = 0
        self._ok: bool | None = None  # None while the attempt runs

    def started(self, path: Path) -> None:
        with self._changed:
            self._path, self._size, self._ok = path, 0, None
            self._attempt += 1
            self._changed.notify_all()

    def grew(self, count: int) -> None:
        with self._changed:
            self._size += count
            self._changed.notify_all()

    def ended(self, ok: bool) -> None:
        with self._changed:
            self._ok = ok
            self._changed.notify_all()

    def open(self) -> _TailReader | None:
        """A reader of the running download, or None when none runs."""
        with self._changed:
            if self._path is None or self._ok is not None:
                return None
            try:  # the reader owns the handle and closes it
                handle = open(self._path, "rb", buffering=0)  # noqa: SIM115
            except FileNotFoundError:
                return None
            return _TailReader(self, handle, self._attempt)

    def readable(self, position: int, attempt: int) -> int:
        """Bytes there are from ``position``, waiting for some; 0 at the end."""
        with self._changed:
            while True:
                if self._attempt != attempt or self._ok is False:
                    raise LayerRestarted("the download started over")
                if self._size > position or self._ok:
                    return self._size - position
                self._changed.wait()


class _TailReader(io.RawIOBase):
    def __init__(self, tail: BlobTail, handle, attempt: int):
        super().__init__()
        self.tail, self.handle, self.attempt = tail, handle, attempt
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.tail.readable(self.position, self.attempt)
        if count == 0:
            return 0
        got = self.handle.readinto(memoryview(buffer)[:count])
        self.position += got
        return got

    def close(self) -> None:
        self.handle.close()
        super().close()


def _consume(stream: BlobStream, job: LayerJob, cache: Cache) -> Path | None:
    """Read the whole blob; unpack it on the way when asked to."""
    if not job.decompress:
        stream.drain()
        return None
    buffered = io.BufferedReader(stream, CHUNK_SIZE)
    if codec.sniff(buffered.peek(8)[:8]) == "none":
        _check_plain(job)
        drain(buffered)
        return None
    return _unpack(buffered, job, cache)


def _check_plain(job: LayerJob) -> None:
    """An uncompressed layer's digest is its diff_id; anything else is corrupt."""
    if job.descriptor.digest != job.diff_id:
        raise DigestMismatch(
            f"layer {job.descriptor.digest} is an uncompressed tar, so its diff_id "
            f"must equal its digest, but the config says {job.diff_id}; the image "
            "is broken in the registry",
            expected=str(job.diff_id),
            got=str(job.descriptor.digest),
        )


def _unpack(compressed, job: LayerJob, cache: Cache) -> Path:
    """Decompress ``compressed`` into the cache, checking the diff_id."""
    kind = codec.sniff(compressed.peek(8)[:8])
    if kind == "none":
        raise DigestMismatch(
            f"layer {job.descriptor.digest} is uncompressed but its digest is not "
            f"its diff_id {job.diff_id}",
            expected=str(job.diff_id),
            got=str(job.descriptor.digest),
        )
    verifier = Verifier(
        job.diff_id, None, f"uncompressed layer {job.descriptor.digest}"
    )
    temp = cache.new_layer_file(job.diff_id)
    try:
        with temp, codec.decompressing(compressed, kind) as source:
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            while n := _read_decompressed(source, buffer, compressed, job):
                verifier.update(view[:n])
                temp.write(view[:n])
        drain(compressed)
        _verify_diff_id(verifier, job)
        return cache.commit_layer(temp.name, job.diff_id)
    except BaseException:
        Path(temp.name).unlink(missing_ok=True)
        raise


def _read_decompressed(source, buffer, compressed, job: LayerJob) -> int:
    """Decompressed bytes into ``buffer``; broken data is blamed precisely.

    Corrupt bytes from the network usually break the decompressor before the
    blob's digest can be checked, so the rest of the blob is read first: a
    digest mismatch then says what happened; a blob that is intact but does
    not decompress is broken in the registry.
    """
    try:
        return source.readinto(buffer)
    except codec.DECODE_ERRORS as err:
        drain(compressed)
        raise IntegrityError(
            f"layer {job.descriptor.digest} has the right digest but does not "
            f"decompress ({err}); the image is broken in the registry"
        ) from err


def _verify_diff_id(verifier: Verifier, job: LayerJob) -> None:
    got = verifier.current()
    if got != job.diff_id:
        raise DigestMismatch(
            f"layer {job.descriptor.digest} decompresses to content with digest "
            f"{got}, but the config's diff_id is {job.diff_id}; the layer was "
            "refused and deleted",
            expected=str(job.diff_id),
            got=str(got),
        )


def fetch_layers(
    images: list[Image],
    cache: Cache,
    *,
    decompress: bool = True,
    progress=False,
    jobs: int = DEFAULT_JOBS,
    description: str = "",
) -> dict[Digest, Path]:
    """Bring every distinct layer of ``images`` into ``cache``.

    Returns the file of each layer by its blob digest: the uncompressed tar
    when ``decompress``, else the blob as the registry sent it.
    """
    unique = layer_jobs(images, decompress)
    total = sum(job.descriptor.size for job in unique.values())
    bar = Progress(progress, total, description or "fetch layers")
    try:
        return fetch_all(list(unique.values()), cache, bar, jobs)
    finally:
        bar.close()


def _unique_layers(images: list[Image]):
    return {d.digest: d for image in images for d in image.manifest.layers}.values()


def fetch_all(jobs: list[LayerJob], cache: Cache, progress: Progress, workers: int):
    """Run ``jobs`` on ``workers`` threads; the first failure cancels the rest."""
    with Fetcher(jobs, cache, progress, workers) as fetcher:
        return fetcher.results()


class Fetcher:
    """Layers fetched on worker threads while the caller goes on.

    ``files`` maps each blob digest to a future of its file, so an archive
    writer can start on the first layer while later ones still download. The
    first failure cancels the other downloads. Leaving the ``with`` block waits
    for the threads; an error that is only that cancellation is replaced by
    the failure that caused it.
    """

    def __init__(self, jobs: list[LayerJob], cache: Cache, progress, workers: int):
        self.cancel = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dgetkit")
        self.files: dict[Digest, Future] = {}
        for job in jobs:
            future = self._pool.submit(fetch_layer, job, cache, progress, self.cancel)
            future.add_done_callback(self._on_done)
            self.files[job.descriptor.digest] = future

    def _on_done(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.cancel.set()

    def results(self) -> dict[Digest, Path]:
        """Every layer's file once all are fetched, or the first real failure."""
        wait(self.files.values(), return_when=FIRST_EXCEPTION)
        if self.failure() is not None:
            self.cancel.set()
            wait(self.files.values())
            raise self.failure()
        return {digest: future.result() for digest, future in self.files.items()}

    def failure(self) -> BaseException | None:
        """The first failure that is not a mere cancellation, if any."""
        done = [f for f in self.files.values() if f.done() and not f.cancelled()]
        errors = [f.exception() for f in done if f.exception() is not None]
        real = [e for e in errors if not isinstance(e, Cancelled)]
        return (real or errors or [None])[0]

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is not None:
            self.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        failure = self.failure() if isinstance(error, Cancelled) else None
        if failure is not None and failure is not error:
            raise failure from None


# -- pull --------------------------------------------------------------------------


@dataclass
class PulledImage:
    """What was written for one image."""

    reference: str
    digest: str
    config_digest: str
    platform: str
    layers: int
    size: int
    index_digest: str | None = None


@dataclass
class PullResult:
    """Where the archive went and what it holds.

    ``digest`` is the image manifest's digest (of the first image), and
    ``image_id`` its config digest, which ``docker load`` reports as the ID.
    """

    path: Path
    bytes: int
    images: list[PulledImage]
    seconds: float
    downloaded: int = 0

    @property
    def digest(self) -> str:
        return self.images[0].digest

    @property
    def image_id(self) -> str:
        return self.images[0].config_digest


def pull(
    references,
    path: str | os.PathLike | None = None,
    *,
    platform: str | Platform | None = None,
    progress=True,
    jobs: int = DEFAULT_JOBS,
    compressed_layers: bool = False,
    oci_layout: bool = False,
    overwrite: bool = False,
    cache: str | os.PathLike | Cache | bool | None = None,
    options: Options | None = None,
    **connection,
) -> PullResult:
    """Pull one or more images into a ``docker save`` archive.

    Parameters
    ----------
    references : str, Reference or list of them
        What to pull, e.g. ``"alpine:3.20"``; several go into one archive.
    path : str or path, optional
        Where to write; ``.tar.gz``/``.tgz`` is gzip-compressed. Default: named
        after the first reference in the current folder (``alpine_3.20.tar``).
    platform : str, optional
        ``os/arch[/variant]`` to choose from multi-platform images; default
        linux on this machine's architecture.
    progress : bool or tqdm-like
        ``True`` shows bars, ``False`` is silent, an object gets the updates.
    jobs : int
        Layers fetched at once.
    compressed_layers : bool
        Store layers as the registry sent them (gzip/zstd) instead of as
        uncompressed ``layer.tar``; much faster, and every loader accepts it.
        Layer digests are verified; diff_ids are then checked by the loader.
    oci_layout : bool
        Also write the OCI image layout (Docker 25+ style), see
        :mod:`dgetkit.archive`. Layers are stored compressed.
    overwrite : bool
        Replace ``path`` if it exists.
    cache : path, Cache or False, optional
        The blob cache; ``False`` uses a temporary one, removed afterwards.
    options : Options, optional
        Connection options; or give them as keywords (``username=``,
        ``password=``, ``insecure=``, ``ca_cert=``, ``mirrors=``, ...).

    Returns
    -------
    PullResult

    Examples
    --------
    >>> result = pull("alpine:3.20", "a.tar", platform="linux/arm64")  # doctest: +SKIP
    >>> result.path, result.digest  # doctest: +SKIP
    """
    started = time.monotonic()
    refs = _references(references)
    if jobs < 1:
        raise InvalidOption("jobs must be at least 1")
    options = connection_options(options, **connection)
    path = Path(path) if path else Path(default_name(refs[0]))
    check_output(path, overwrite=overwrite)
    images = [resolve(ref, platform=platform, options=options) for ref in refs]
    decompress = not (compressed_layers or oci_layout)
    with open_cache(cache) as store:
        unique = layer_jobs(images, decompress, unpack_later=not is_gzip_name(path))
        total = sum(job.descriptor.size for job in unique.values())
        bar = Progress(progress, total, f"pull {refs[0]}")
        try:
            with Fetcher(list(unique.values()), store, bar, jobs) as fetcher:
                archive_images = [
                    _archive_image(image, fetcher.files, decompress, store, unique)
                    for image in images
                ]
                write_archive(
                    path,
                    archive_images,
                    oci_layout=oci_layout,
                    overwrite=overwrite,
                    threads=max(1, min(jobs, os.cpu_count() or 1)),
                )
        finally:
            bar.close()
        _note_diff_ids(archive_images, store)
    return PullResult(
        path=path,
        bytes=path.stat().st_size,
        images=[_summary(image) for image in images],
        seconds=round(time.monotonic() - started, 3),
        downloaded=sum(d.size for d in _unique_layers(images)),
    )


def _references(references) -> list[Reference]:
    if isinstance(references, (str, Reference)):
        references = [references]
    refs = [r if isinstance(r, Reference) else Reference.parse(r) for r in references]
    refs = list(dict.fromkeys(refs))  # the same image twice is stored once
    if not refs:
        raise InvalidOption("give at least one image reference to pull")
    return refs


class _TemporaryCache:
    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="dgetkit-cache-")

    def __enter__(self) -> Cache:
        return Cache(self._folder.name)

    def __exit__(self, *exc):
        self._folder.cleanup()


class _KeptCache:
    def __init__(self, cache: Cache):
        self.cache = cache

    def __enter__(self) -> Cache:
        return self.cache

    def __exit__(self, *exc):
        return None


def open_cache(cache):
    """A context manager giving the :class:`Cache` that ``cache=`` names.

    ``None``/``True``: the default cache; a path or a Cache: that one;
    ``False``: a temporary cache removed on exit.
    """
    if cache is False:
        return _TemporaryCache()
    if isinstance(cache, Cache):
        return _KeptCache(cache)
    return _KeptCache(Cache(None if cache in (None, True) else cache))


def layer_jobs(
    images: list[Image], decompress: bool, *, unpack_later: bool = False
) -> dict[Digest, LayerJob]:
    """One job per distinct layer; ``unpack_later`` leaves unpacking to the writer."""
    unique: dict[Digest, LayerJob] = {}
    for image in images:
        pairs = zip(image.manifest.layers, image.config.diff_ids)
        for descriptor, diff_id in pairs:
            unique.setdefault(
                descriptor.digest,
                LayerJob(
                    image.client,
                    image.reference.repository,
                    descriptor,
                    diff_id,
                    decompress and not unpack_later,
                    decompress and unpack_later,
                    BlobTail() if decompress and unpack_later else None,
                ),
            )
    return unique


def _archive_image(
    image: Image, files: dict, decompress: bool, cache: Cache, jobs: dict
) -> ArchiveImage:
    layers = []
    for descriptor, diff_id in zip(image.manifest.layers, image.config.diff_ids):
        kind = "none" if decompress else None
        checked = cache.known_diff_id(descriptor.digest) == diff_id
        path = files[descriptor.digest]
        tail = jobs[descriptor.digest].tail
        layers.append(ArchiveLayer(descriptor, diff_id, path, kind, checked, tail))
    return ArchiveImage(image.reference, image.manifest, image.config, layers)


def _note_diff_ids(images: list[ArchiveImage], cache: Cache) -> None:
    """Remember which blobs unpack to which diff_id: a re-pull skips the check.

    Only a shortcut for later pulls, so a note that cannot be written is skipped.
    """
    for image in images:
        for layer in image.layers:
            if layer.checked:
                with contextlib.suppress(OSError):
                    cache.note_diff_id(layer.descriptor.digest, layer.diff_id)


def _summary(image: Image) -> PulledImage:
    return PulledImage(
        reference=str(image.reference),
        digest=str(image.digest),
        config_digest=str(image.config.digest),
        platform=str(image.platform),
        layers=len(image.manifest.layers),
        size=image.size,
        index_digest=str(image.index.digest) if image.index else None,
    )
