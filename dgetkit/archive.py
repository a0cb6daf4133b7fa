"""The archive writer: the *sink* side of a pull.

It writes the ``docker save`` layout, which ``docker load`` and ``podman load``
read (the format is described in moby's ``image/tarexport``)::

    <id>/VERSION          "1.0"
    <id>/json             legacy v1 metadata of the layer
    <id>/layer.tar        the layer, uncompressed (or ``layer.tar.gz`` as sent)
    <config-hex>.json     the image config, byte for byte
    manifest.json         [{"Config", "RepoTags", "Layers"}], one per image
    repositories          {"<repository>": {"<tag>": "<top id>"}}

``<id>`` chains from parent to child, sha256 of the parent id and the layer
digest, so identical layers at different depths get different folders; the
second copy of a layer is a symlink to the first, as ``docker save`` does.

With ``oci_layout=True`` it writes instead what Docker 25+ writes: an OCI image
layout (``oci-layout``, ``index.json``, ``blobs/sha256/...`` holding the
original manifest, config and layers) with a ``manifest.json`` pointing into
``blobs/``, so loaders of either kind read it.

It knows nothing of HTTP: it takes model objects and files on disk. A layer's
file may still be downloading (a future): the writer waits for it when it gets
there, so writing overlaps with the downloads of later layers. A compressed
blob stored as an uncompressed ``layer.tar`` is decompressed on the way in, in
one pass (decompress, check the diff_id, write; each on its own thread), into
a member whose header is reserved and filled in once the size is known. With
a ``tail`` the writer does not wait for the download: it follows the part file
as it grows (and starts the member again should the download start over).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import io
import json
import os
import tarfile
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import codec
from .digest import Digest, Verifier
from .errors import DiskFull, IntegrityError, OutputError
from .manifest import ImageConfig, ImageManifest
from .reference import Reference

OCI_LAYOUT_VERSION = "1.0.0"
_EPOCH = "1970-01-01T00:00:00Z"
_BLOCK = 512
_RECORD = 20 * _BLOCK
_COPY_CHUNK = 1 << 20


@dataclass
class ArchiveLayer:
    """One layer to store: its descriptor, diff_id and the file that holds it.

    ``kind`` says how to store it: ``none`` (an uncompressed tar), or ``None``
    for the file as it is (a blob as the registry sent it). A compressed file
    stored as ``none`` is decompressed on the way in and its content checked
    against ``diff_id`` (skipped when ``checked`` already says it matches; the
    writer sets ``checked`` once it has seen it match). ``path`` may be a
    future of the path, for a download still running.
    """

    descriptor: object
    diff_id: Digest
    path: Path | Future
    kind: str | None = "none"
    checked: bool = False
    #: Reads the file while it downloads: ``tail.open()`` gives a readable or None.
    tail: object = None

    def file(self) -> tuple[Path, str]:
        """The file (waiting for its download) and the compression it holds."""
        path = self.path.result() if isinstance(self.path, Future) else self.path
        with open(path, "rb") as handle:
            return Path(path), codec.sniff(handle.read(8))


class LayerRestarted(Exception):
    """A ``tail`` reader's download started over; the writer begins the layer anew."""


@dataclass
class ArchiveImage:
    """One image to store under ``reference``'s tag."""

    reference: Reference
    manifest: ImageManifest
    config: ImageConfig
    layers: list[ArchiveLayer] = field(default_factory=list)


def default_name(reference: Reference, gzip_output: bool = False) -> str:
    """A file name for ``reference``: ``alpine_3.20.tar``, ``app_sha256-ab12.tar``."""
    base = reference.repository.rsplit("/", 1)[-1]
    label = reference.tag or f"{reference.digest.algorithm}-{reference.digest.short}"
    return f"{base}_{label}.tar" + (".gz" if gzip_output else "")


def is_gzip_name(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith((".tar.gz", ".tgz"))


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any download."""
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path} is a folder: give a file name ending in .tar")
    if not folder.is_dir():
        raise OutputError(f"the folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the folder {folder} is not writable: choose another path")
    if path.exists() and not overwrite:
        raise OutputError(
            f"{path} already exists; pass overwrite=True (--force) to replace it"
        )
    return path


def write_archive(
    path: str | os.PathLike,
    images: list[ArchiveImage],
    *,
    oci_layout: bool = False,
    overwrite: bool = False,
    threads: int = 1,
) -> Path:
    """Write ``images`` to ``path``, atomically.

    The archive is written under a temporary name in the same folder and
    renamed only when complete; on any failure nothing is left at ``path``.
    ``.tar.gz`` / ``.tgz`` names are gzip-compressed.
    """
    path = check_output(path, overwrite=overwrite)
    handle, temp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb", buffering=0) as raw:
            if is_gzip_name(path):
                with codec.compressing(raw, threads=threads) as stream:
                    _write(TarWriter(stream), images, oci_layout)
            else:
                _write(TarWriter(raw), images, oci_layout)
        _publish(temp, path, overwrite)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"the disk filled up while writing {path}; nothing was left there. "
                "Free some space (the blob cache can be pruned) and pull again"
            ) from err
        raise OutputError(f"cannot write {path}: {err}") from err
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _publish(temp: str, path: Path, overwrite: bool) -> None:
    os.chmod(temp, 0o666 & ~_umask())  # mkstemp made it private
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails if someone created path meanwhile
    except FileExistsError as err:
        raise OutputError(f"{path} appeared while writing; not replaced") from err
    finally:
        Path(temp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(tar: TarWriter, images: list[ArchiveImage], oci_layout: bool) -> None:
    if oci_layout:
        OciLayout(tar).write(images)
    else:
        LegacyLayout(tar).write(images)
    tar.close()


# -- the two layouts ---------------------------------------------------------------


class LegacyLayout:
    """``docker save`` as Docker 1.10-24 wrote it: a folder per layer."""

    def __init__(self, tar: TarWriter):
        self.tar = tar
        self.stored: dict[Digest, str] = {}  # diff_id -> member holding it
        self.folders: set[str] = set()
        self.names: dict[str, str] = {}  # layer id -> its layer file member
        self.configs: set[str] = set()

    def write(self, images: list[ArchiveImage]) -> None:
        items, repositories = [], {}
        for image in images:
            mtime = _timestamp(image.config.created)
            layer_paths, top = self._layers(image, mtime)
            config_name = f"{image.config.digest.hex}.json"
            if config_name not in self.configs:
                self.tar.add_bytes(config_name, image.config.raw, mtime)
                self.configs.add(config_name)
            tag = image.reference.tagged_name
            items.append(
                {
                    "Config": config_name,
                    "RepoTags": [tag] if tag else [],
                    "Layers": layer_paths,
                }
            )
            if tag and top:
                repositories.setdefault(image.reference.name, {})[
                    image.reference.tag
                ] = top
        self.tar.add_bytes("manifest.json", _json(items), 0)
        if repositories:
            self.tar.add_bytes("repositories", _json(repositories), 0)

    def _layers(self, image: ArchiveImage, mtime: int) -> tuple[list[str], str]:
        paths, parent = [], ""
        last = len(image.layers) - 1
        for index, layer in enumerate(image.layers):
            layer_id = v1_id(parent, layer.descriptor.digest)
            if layer_id not in self.folders:
                self.folders.add(layer_id)
                meta = _v1_json(layer_id, parent, image.config, top=index == last)
                self.tar.add_dir(layer_id, mtime)
                self.tar.add_bytes(f"{layer_id}/VERSION", b"1.0", mtime)
                self.tar.add_bytes(f"{layer_id}/json", meta, mtime)
                self.names[layer_id] = self._layer_file(layer_id, layer, mtime)
            paths.append(self.names[layer_id])
            parent = layer_id
        return paths, parent

    def _layer_file(self, layer_id: str, layer: ArchiveLayer, mtime: int) -> str:
        name = f"{layer_id}/layer.tar"
        if layer.diff_id not in self.stored and _follow(self.tar, name, layer, mtime):
            self.stored[layer.diff_id] = name
            return name
        path, found = layer.file()
        kind = found if layer.kind is None else layer.kind
        name = f"{layer_id}/layer{codec.extension(kind)}"
        first = self.stored.get(layer.diff_id)
        if first is not None:
            self.tar.add_symlink(name, f"../{first}", mtime)
        elif kind == found:
            self.tar.add_file(name, path, mtime)
        else:
            with open(path, "rb") as blob:
                source = io.BufferedReader(blob, _COPY_CHUNK)
                _add_unpacked(self.tar, name, layer, (source, found), mtime)
        self.stored.setdefault(layer.diff_id, name)
        return name


class OciLayout:
    """Docker 25+ ``docker save``: an OCI layout plus ``manifest.json``."""

    def __init__(self, tar: TarWriter):
        self.tar = tar
        self.blobs: set[Digest] = set()

    def write(self, images: list[ArchiveImage]) -> None:
        items, descriptors, repositories = [], [], {}
        self.tar.add_dir("blobs", 0)
        self.tar.add_dir("blobs/sha256", 0)
        for image in images:
            mtime = _timestamp(image.config.created)
            layers = [
                self._blob(layer.descriptor.digest, layer.file()[0], mtime)
                for layer in image.layers
            ]
            config = self._bytes(image.config.digest, image.config.raw, mtime)
            self._bytes(image.manifest.digest, image.manifest.raw, 0)
            tag = image.reference.tagged_name
            items.append(
                {"Config": config, "RepoTags": [tag] if tag else [], "Layers": layers}
            )
            descriptors.append(_index_entry(image))
            if tag and image.layers:
                repositories.setdefault(image.reference.name, {})[
                    image.reference.tag
                ] = image.layers[-1].descriptor.digest.hex
        index = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": descriptors}
        self.tar.add_bytes("index.json", _json(index), 0)
        self.tar.add_bytes("manifest.json", _json(items), 0)
        if repositories:
            self.tar.add_bytes("repositories", _json(repositories), 0)
        layout = {"imageLayoutVersion": OCI_LAYOUT_VERSION}
        self.tar.add_bytes("oci-layout", _json(layout), 0)

    def _blob(self, digest: Digest, path: Path, mtime: int) -> str:
        name = f"blobs/{digest.algorithm}/{digest.hex}"
        if digest not in self.blobs:
            self.blobs.add(digest)
            self.tar.add_file(name, path, mtime)
        return name

    def _bytes(self, digest: Digest, data: bytes, mtime: int) -> str:
        name = f"blobs/{digest.algorithm}/{digest.hex}"
        if digest not in self.blobs:
            self.blobs.add(digest)
            self.tar.add_bytes(name, data, mtime)
        return name


_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _index_entry(image: ArchiveImage) -> dict:
    entry = {
        "mediaType": image.manifest.media_type,
        "digest": str(image.manifest.digest),
        "size": len(image.manifest.raw),
    }
    ref = image.reference
    if ref.tag:
        entry["annotations"] = {
            "io.containerd.image.name": ref.tagged_name,
            "org.opencontainers.image.ref.name": ref.tag,
        }
    return entry


# -- helpers -----------------------------------------------------------------------


def v1_id(parent: str, digest: Digest) -> str:
    """The folder name of a layer: sha256 of its parent's id and its digest."""
    return hashlib.sha256(f"{parent}\n{digest}\n".encode()).hexdigest()


def _v1_json(layer_id: str, parent: str, config: ImageConfig, top: bool) -> bytes:
    """Legacy per-layer metadata; the top layer carries the image's settings."""
    if top:
        meta = {k: v for k, v in config.data.items() if k not in ("history", "rootfs")}
    else:
        meta = {"created": _EPOCH, "container_config": {}, "os": config.platform.os}
    meta["id"] = layer_id
    if parent:
        meta["parent"] = parent
    return _json(meta)


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _timestamp(created: str) -> int:
    try:
        return max(
            0, int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        )
    except (ValueError, AttributeError):
        return 0


def _follow(tar, name: str, layer: ArchiveLayer, mtime: int) -> bool:
    """Unpack a layer from its download as it arrives; False if that cannot be."""
    if layer.kind != "none" or layer.tail is None or layer.path.done():
        return False
    reader = layer.tail.open()
    if reader is None:
        return False
    at = tar.offset
    with io.BufferedReader(reader, _COPY_CHUNK) as source:
        try:
            kind = codec.sniff(source.peek(8)[:8])
            if kind == "none":
                return False
            _add_unpacked(tar, name, layer, (source, kind), mtime)
        except (LayerRestarted, IntegrityError):
            # The download started over, or bytes not verified yet broke the
            # decompressor: begin again from the finished, verified blob.
            tar.rewind(at)
            return False
    layer.file()  # the download's own outcome
    return True


def _add_unpacked(tar, name: str, layer: ArchiveLayer, source, mtime: int) -> None:
    """Store a compressed stream decompressed, checking its diff_id on the way."""
    stream, kind = source
    if layer.kind != "none":
        raise OutputError(f"cannot store a {kind} file as {layer.kind}")
    what = f"uncompressed layer {layer.descriptor.digest}"
    verifier = Verifier(layer.diff_id, None, what)
    check = None if layer.checked else verifier.update
    with codec.decompressing(stream, kind) as plain:
        tar.add_stream(name, _Decoded(plain, what), mtime, check)
    if check is not None:
        verifier.verify()
        layer.checked = True


class _Decoded:
    """Reads of a decompressing stream; damaged data becomes an IntegrityError."""

    def __init__(self, stream, what: str):
        self.stream = stream
        self.what = what

    def read(self, size: int) -> bytes:
        try:
            return self.stream.read(size)
        except codec.DECODE_ERRORS as err:
            raise IntegrityError(
                f"{self.what} does not decompress ({err}); its digest matched, so "
                "the image is broken in the registry: ask its publisher"
            ) from err


def _sized(header: bytes, size: int) -> bytes:
    """``header`` (ending in a ustar block) with ``size`` and its checksum set.

    Sizes from 8 GiB use the base-256 form that GNU tar, Go's archive/tar
    (docker, podman) and Python's tarfile all read.
    """
    block = bytearray(header[-_BLOCK:])
    if size < 8**11:
        block[124:136] = b"%011o\0" % size
    else:
        block[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return header[:-_BLOCK] + bytes(block)


class _Stages:
    """Hands each chunk to ``write`` and to ``check`` on threads of their own.

    The caller decompresses; hashing and writing (both release the GIL) run
    beside it, each in order, with at most ``depth`` chunks in flight.
    """

    def __init__(self, write, check=None, depth: int = 4):
        self.steps = [step for step in (write, check) if step is not None]
        self.pools = [ThreadPoolExecutor(1, "dgetkit-archive") for _ in self.steps]
        self.pending = collections.deque()
        self.depth = depth

    def feed(self, chunk: bytes) -> None:
        futures = [
            pool.submit(step, chunk) for pool, step in zip(self.pools, self.steps)
        ]
        self.pending.append(futures)
        while len(self.pending) > self.depth:
            for future in self.pending.popleft():
                future.result()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            while self.pending and error is None:
                for future in self.pending.popleft():
                    future.result()
        finally:
            for pool in self.pools:
                pool.shutdown(wait=True, cancel_futures=True)


class TarWriter:
    """A minimal streaming tar writer: PAX headers, clean relative names.

    File contents are copied by the kernel (``copy_file_range``) when the
    output is a plain file, else in large chunks.
    """

    def __init__(self, stream):
        self.stream = stream
        self.offset = 0
        self._fd = _fileno(stream)

    def _header(self, info: tarfile.TarInfo) -> None:
        info.uname = info.gname = ""
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _put(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.stream.write(view)
            written = len(view) if written is None else written
            view = view[written:]
            self.offset += written

    def _pad(self) -> None:
        remainder = self.offset % _BLOCK
        if remainder:
            self._put(b"\0" * (_BLOCK - remainder))

    def add_dir(self, name: str, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
        self._header(info)

    def add_bytes(self, name: str, data: bytes, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, mtime
        self._header(info)
        self._put(data)
        self._pad()

    def add_symlink(self, name: str, target: str, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        info.mode, info.mtime = 0o777, mtime
        self._header(info)

    def add_file(self, name: str, path: Path, mtime: int) -> None:
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o644, mtime
            self._header(info)
            copied = self._copy(source, size)
        if copied != size:
            raise OutputError(f"{path} changed while it was being archived")
        self._pad()

    def add_stream(self, name: str, source, mtime: int, check=None) -> int:
        """A member of unknown size: its header is reserved, then filled in.

        ``source`` has ``read(n)``; ``check`` is given every chunk. The output
        must be a plain file, so the header can be written back.
        """
        if self._fd is None:
            raise OutputError(f"{name} can only be streamed into a plain .tar file")
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = 0o644, mtime
        info.uname = info.gname = ""
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        at, size = self.offset, 0
        self._put(header)
        with _Stages(self._put, check) as stages:
            while chunk := source.read(_COPY_CHUNK):
                stages.feed(chunk)
                size += len(chunk)
        os.pwrite(self._fd, _sized(header, size), at)
        self._pad()
        return size

    def rewind(self, offset: int) -> None:
        """Drop everything written from ``offset`` on (a plain file only)."""
        os.ftruncate(self._fd, offset)
        self.stream.seek(offset)
        self.offset = offset

    def _copy(self, source, size: int) -> int:
        if self._fd is not None and hasattr(os, "copy_file_range"):
            try:
                return self._copy_in_kernel(source.fileno(), size)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL):
                    raise
        copied = 0
        while chunk := source.read(_COPY_CHUNK):
            self._put(chunk)
            copied += len(chunk)
        return copied

    def _copy_in_kernel(self, source_fd: int, size: int) -> int:
        copied = 0
        while copied < size:
            n = os.copy_file_range(source_fd, self._fd, size - copied)
            if n == 0:
                break
            copied += n
        self.offset += copied
        return copied

    def close(self) -> None:
        self._put(b"\0" * (2 * _BLOCK))
        remainder = self.offset % _RECORD
        if remainder:
            self._put(b"\0" * (_RECORD - remainder))


def _fileno(stream) -> int | None:
    """The descriptor of a plain unbuffered file, where the kernel may copy."""
    return stream.fileno() if isinstance(stream, io.FileIO) else None
