"""A content-addressed cache of blobs and uncompressed layers.

Files are named by the digest of their content and are only ever created by a
rename after that digest was verified, so a file found in the cache is
trusted by its name. Layout under the cache folder::

    blobs/sha256/<hex>          registry blobs exactly as downloaded
    blobs/sha256/<hex>.part     a download in progress (resumed next time)
    layers/sha256/<hex>         uncompressed layer tars, named by diff_id
    diff_ids/sha256/<hex>       the diff_id the blob <hex> was seen to unpack to

The folder is ``$DGETKIT_CACHE``, else ``$XDG_CACHE_HOME/dgetkit``, else
``~/.cache/dgetkit`` (``%LOCALAPPDATA%\\dgetkit`` on Windows).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .digest import Digest

try:
    import fcntl
except ImportError:  # Windows: pulls sharing a cache must not overlap there
    fcntl = None


def default_cache_dir() -> Path:
    """Where the cache lives unless told otherwise."""
    if os.environ.get("DGETKIT_CACHE"):
        return Path(os.environ["DGETKIT_CACHE"])
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "dgetkit"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dgetkit"


class Cache:
    """The blob and layer cache in ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def part_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / f"{digest.hex}.part"

    def layer_path(self, diff_id: Digest) -> Path:
        return self.root / "layers" / diff_id.algorithm / diff_id.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def has_layer(self, diff_id: Digest) -> bool:
        return self.layer_path(diff_id).is_file()

    def open_part(self, digest: Digest):
        """The part file of ``digest`` for appending, and how much it holds.

        The file is locked, so two pulls (threads or processes) sharing a
        layer never write into the same part file: the second waits, and gets
        ``(None, 0)`` if the first finished the blob meanwhile.
        """
        path = self.part_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(path, "ab")  # noqa: SIM115 - returned to the caller
            _lock(handle)
            if _same_file(handle, path):
                return handle, handle.tell()
            handle.close()  # committed or discarded while we waited
            if self.has_blob(digest):
                return None, 0

    def discard_part(self, digest: Digest) -> None:
        self.part_path(digest).unlink(missing_ok=True)

    def commit_part(self, digest: Digest) -> Path:
        """Publish a verified part file as the blob ``digest``."""
        final = self.blob_path(digest)
        os.replace(self.part_path(digest), final)
        return final

    def new_layer_file(self, diff_id: Digest):
        """A temporary file beside where the layer ``diff_id`` will live."""
        folder = self.layer_path(diff_id).parent
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(
            dir=folder, prefix=f".{diff_id.hex[:12]}-", suffix=".tmp", delete=False
        )

    def commit_layer(self, temp_path: str | os.PathLike, diff_id: Digest) -> Path:
        final = self.layer_path(diff_id)
        os.replace(temp_path, final)
        return final

    def link_layer(self, blob: Path, diff_id: Digest) -> Path:
        """Record an uncompressed blob as a layer too, without a second copy."""
        final = self.layer_path(diff_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            try:
                os.link(blob, final)
            except OSError:
                temp = self.new_layer_file(diff_id)
                with open(blob, "rb") as source, temp:
                    _copy(source, temp)
                os.replace(temp.name, final)
        return final

    def diff_id_path(self, digest: Digest) -> Path:
        return self.root / "diff_ids" / digest.algorithm / digest.hex

    def note_diff_id(self, digest: Digest, diff_id: Digest) -> None:
        """Record that the blob ``digest`` was seen to decompress to ``diff_id``."""
        path = self.diff_id_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w") as note:
            note.write(str(diff_id))
        os.replace(temp, path)

    def known_diff_id(self, digest: Digest) -> Digest | None:
        """The diff_id the cached blob ``digest`` decompresses to, if seen before."""
        if not self.has_blob(digest):
            return None
        try:
            return Digest.parse(self.diff_id_path(digest).read_text())
        except (OSError, ValueError):
            return None

    def entries(self) -> list[dict]:
        """One dict per file: kind, digest, size, modified, path."""
        rows = []
        for kind, folder in (("blob", "blobs"), ("layer", "layers")):
            for path in sorted((self.root / folder).glob("*/*")):
                name = path.name
                partial = name.endswith((".part", ".tmp"))
                stat = path.stat()
                rows.append(
                    {
                        "kind": "partial" if partial else kind,
                        "digest": f"{path.parent.name}:{name.split('.')[0]}",
                        "size": stat.st_size,
                        "modified": stat.st_mtime,
                        "path": str(path),
                    }
                )
        return rows

    def prune(self, *, older_than: float | None = None, partial_only=False) -> int:
        """Delete cached files; return the bytes freed.

        Parameters
        ----------
        older_than : float, optional
            Only files not modified for this many seconds.
        partial_only : bool
            Only unfinished downloads.
        """
        freed, now = 0, time.time()
        for row in self.entries():
            if partial_only and row["kind"] != "partial":
                continue
            if older_than is not None and now - row["modified"] < older_than:
                continue
            Path(row["path"]).unlink(missing_ok=True)
            freed += row["size"]
        for note in (self.root / "diff_ids").glob("*/*"):
            if not (self.root / "blobs" / note.parent.name / note.name).exists():
                note.unlink(missing_ok=True)
        return freed


def _lock(handle) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _copy(source, target, size=1 << 20) -> None:
    while chunk := source.read(size):
        target.write(chunk)
