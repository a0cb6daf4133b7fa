"""Compression: what a layer really is, and streams that undo or apply it.

Labels lie (gzip blobs labelled as plain tar exist in the wild), so the first
bytes decide. gzip goes through ``isal`` when it is installed (several times
faster than zlib), else the standard library; zstd through ``zstandard``.
"""

from __future__ import annotations

import gzip
import io
import zlib

import zstandard

from .errors import UnsupportedMediaType

try:
    from isal import igzip as _igzip
    from isal import igzip_threaded as _igzip_threaded
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a declared dependency
    _igzip = _igzip_threaded = _isal_zlib = None

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_OTHER_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

#: The ``.tar.gz`` output level: isal's 0-3 scale, fast and still compact.
OUTPUT_GZIP_LEVEL = 1
#: What reading a :func:`decompressing` stream raises when the data is damaged:
#: truncated (EOFError), a bad header or CRC (BadGzipFile), a bad deflate or zstd
#: block. isal's error is not a ``zlib.error``, so catch this tuple instead.
DECODE_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError) + (
    (_isal_zlib.error,) if _isal_zlib is not None else ()
)


def sniff(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``none`` from the first bytes of a blob."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or _is_zstd_skippable(head):
        return "zstd"
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise UnsupportedMediaType(
                f"a layer is compressed with {name}, which OCI images do not use; "
                "dgetkit reads gzip, zstd and uncompressed layers"
            )
    return "none"


def _is_zstd_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F


def decompressing(stream, kind: str):
    """A readable file object of ``stream``'s bytes with ``kind`` undone."""
    if kind == "gzip":
        if _igzip is not None:
            return _igzip.IGzipFile(fileobj=stream, mode="rb")
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if kind == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            stream, read_size=1 << 20, read_across_frames=True, closefd=False
        )
        return io.BufferedReader(reader, 1 << 20)
    if kind == "none":
        return stream
    raise UnsupportedMediaType(f"cannot decompress {kind!r}")


def compressing(raw_file, *, threads: int = 1):
    """A writable file object that gzips into ``raw_file`` (an open binary file)."""
    if _igzip_threaded is not None and threads > 1:
        return _igzip_threaded.open(
            raw_file, "wb", compresslevel=OUTPUT_GZIP_LEVEL, threads=threads
        )
    if _igzip is not None:
        return _igzip.IGzipFile(
            fileobj=raw_file, mode="wb", compresslevel=OUTPUT_GZIP_LEVEL, mtime=0
        )
    return gzip.GzipFile(fileobj=raw_file, mode="wb", compresslevel=6, mtime=0)


def extension(kind: str) -> str:
    """File suffix of a layer stored as the registry sent it."""
    return {"gzip": ".tar.gz", "zstd": ".tar.zst"}.get(kind, ".tar")
