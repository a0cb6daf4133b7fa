"""Root filesystem extraction: apply an image's layers, bottom first, to a folder.

Each layer is a tar of changes (image-spec ``layer.md``): entries add or
replace paths, ``dir/.wh.<name>`` deletes ``dir/<name>`` from lower layers and
``dir/.wh..wh..opq`` hides every lower-layer child of ``dir``. Entries of the
same layer are never hidden by its own whiteouts, whatever their order.
https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts

Layers come from anyone, so nothing is written outside the folder, whatever a
layer says:

- names are made relative (a leading ``/`` is dropped) and must not climb out
  with ``..``;
- the folders above every entry are resolved inside the folder: a symlink on
  the way is followed as the image would see it, an absolute target counting
  from the folder (the image's ``/``), and one that climbs out of it is refused;
- symlinks are stored as they are and never followed on this machine;
- hard links may only point at files already inside the folder.

A refused entry raises :class:`~dgetkit.errors.UnsafeArchiveMember` naming the
entry and its layer. Modes (setuid, setgid, sticky included) are applied after
the content; owners only when running as root; device and FIFO entries need
root and are skipped with a log line otherwise. ``tarfile`` reads each layer
as a stream; its own extraction filters are not used (PEP 706's ``data``
filter drops setuid bits and absolute symlinks that a root filesystem needs).
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import codec
from .errors import DgetkitError, OutputError, UnsafeArchiveMember
from .platform import Platform
from .pull import DEFAULT_JOBS, fetch_layers, open_cache, resolve
from .registry import Options
from .registry import connection as connection_options

log = logging.getLogger("dgetkit")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: AUFS bookkeeping (``.wh..wh.plnk``, ``.wh..wh.aufs``): never part of the image.
AUFS_META_PREFIX = ".wh..wh."
#: Symlinks followed while resolving one path before it counts as a loop.
MAX_SYMLINK_HOPS = 40
_COPY_CHUNK = 1 << 20
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_DEVICES = (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)


@dataclass
class Applied:
    """What :func:`extract_layer` did with one layer."""

    entries: int = 0
    whiteouts: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class Extracted:
    """What :func:`extract` wrote: the folder and the image it came from."""

    folder: Path
    reference: str
    digest: str
    platform: str
    layers: int
    entries: int
    skipped: list[str]
    seconds: float


def extract(
    reference,
    folder: str | os.PathLike,
    *,
    platform: str | Platform | None = None,
    progress=False,
    jobs: int = DEFAULT_JOBS,
    cache=None,
    options: Options | None = None,
    **connection,
) -> Extracted:
    """Pull an image and unpack its root filesystem into ``folder``.

    The layers are fetched into the cache (uncompressed, verified against the
    config's ``diff_ids``), then applied in order into a temporary folder
    beside ``folder``, which is renamed into place when every layer applied.

    Parameters
    ----------
    reference : str or Reference
        The image, e.g. ``"debian:bookworm"``.
    folder : str or path
        Where the root filesystem goes; it must not exist or be empty.
    platform : str, optional
        ``os/arch[/variant]``; default linux on this machine's architecture.
    progress : bool or tqdm-like
        Download progress, as for :func:`dgetkit.pull`.
    jobs : int
        Layers fetched at once.
    cache : path, Cache or False, optional
        The blob cache; ``False`` uses a temporary one.
    options : Options, optional
        Connection options, or give them as keywords (``username=``, ...).

    Returns
    -------
    Extracted

    Raises
    ------
    UnsafeArchiveMember
        A layer tried to write outside the folder; nothing is left at ``folder``.

    Examples
    --------
    >>> done = extract("alpine:3.20", "root", platform="linux/arm64")  # doctest: +SKIP
    >>> (done.folder / "etc/alpine-release").read_text()  # doctest: +SKIP
    """
    started = time.monotonic()
    folder = _check_folder(Path(folder).expanduser())
    options = connection_options(options, **connection)
    image = resolve(reference, platform=platform, options=options)
    with open_cache(cache) as store:
        layers = _fetch_layers(image, store, progress, jobs)
        applied = _apply_all(layers, folder)
    return Extracted(
        folder=folder,
        reference=str(image.reference),
        digest=str(image.digest),
        platform=str(image.platform),
        layers=len(layers),
        entries=applied.entries,
        skipped=applied.skipped,
        seconds=round(time.monotonic() - started, 3),
    )


def _fetch_layers(image, store, progress, jobs: int) -> list[tuple[str, Path]]:
    """Each layer, uncompressed in the cache, with the name errors give it."""
    files = fetch_layers(
        [image],
        store,
        progress=progress,
        jobs=max(1, jobs),
        description=f"extract {image.reference}",
    )
    return [
        (f"layer {n} ({d.digest})", files[d.digest])
        for n, d in enumerate(image.manifest.layers)
    ]


def _check_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file: give a folder to extract into")
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputError(
            f"{folder} is not empty: extract into a new or empty folder, so no "
            "file of the image is mixed with what is already there"
        )
    if not folder.parent.is_dir():
        raise OutputError(f"the folder {folder.parent} does not exist: create it first")
    return folder


def _apply_all(layers: list[tuple[str, Path]], folder: Path) -> Applied:
    """Apply the layers into a temporary sibling folder, then rename it."""
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.part-"))
    total = Applied()
    try:
        for name, path in layers:
            with open(path, "rb") as stream:
                done = extract_layer(stream, temp, layer=name)
            total.entries += done.entries
            total.whiteouts += done.whiteouts
            total.skipped += done.skipped
        os.chmod(temp, 0o755)
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return total


def extract_layer(tar_stream, folder: str | os.PathLike, *, layer: str = "layer"):
    """Apply one layer tar to ``folder``, honouring whiteouts and staying inside.

    Parameters
    ----------
    tar_stream : binary file object or path
        The layer: an uncompressed tar, or gzip/zstd (sniffed), read once
        from start to end.
    folder : str or path
        The root filesystem the layer applies to (the lower layers are
        already there).
    layer : str
        Names the layer in error messages.

    Returns
    -------
    Applied

    Examples
    --------
    >>> with open("layer.tar", "rb") as tar:  # doctest: +SKIP
    ...     extract_layer(tar, "rootfs")
    """
    if isinstance(tar_stream, (str, os.PathLike)):
        with open(tar_stream, "rb") as stream:
            return extract_layer(stream, folder, layer=layer)
    buffered = io.BufferedReader(_Readable(tar_stream), _COPY_CHUNK)
    kind = codec.sniff(buffered.peek(8)[:8])
    applier = _LayerApplier(Path(folder), layer)
    with (
        codec.decompressing(buffered, kind) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        for member in tar:
            applier.apply(member, tar)
    return applier.finish()


class _Readable(io.RawIOBase):
    """Any object with ``read`` as a raw stream, so it can be buffered and peeked."""

    def __init__(self, stream):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# -- one layer ---------------------------------------------------------------------


class _LayerApplier:
    """The state of one layer being applied: what it wrote, what is pending."""

    def __init__(self, root: Path, layer: str):
        self.root = Path(os.path.realpath(root))
        self.layer = layer
        self.is_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.written: set[str] = set()  # real paths (relative) this layer wrote
        self.above: set[str] = set()  # their parent folders
        self.folders: list[tuple[Path, tarfile.TarInfo]] = []
        self.done = Applied()

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = self._clean(member.name, member)
        if name is None:
            return
        parent, base = posixpath.split(name)
        if base.startswith(AUFS_META_PREFIX) and base != OPAQUE_MARKER:
            return
        if any(p.startswith(AUFS_META_PREFIX) for p in parent.split("/")):
            return
        if base == OPAQUE_MARKER:
            self._opaque(parent, member)
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base[len(WHITEOUT_PREFIX) :], member)
        else:
            self._entry(parent, base, member, tar)

    def finish(self) -> Applied:
        """Set folder modes and times last, deepest first, once nothing else comes."""
        for path, member in reversed(self.folders):
            self._metadata(path, member)
        return self.done

    # -- names and paths -----------------------------------------------------------

    def _clean(self, raw: str, member) -> str | None:
        """The entry's path relative to the root; None for the root itself."""
        if _escapes(raw):
            raise self._unsafe(member, "its name climbs out of the folder with '..'")
        name = posixpath.normpath("/" + raw).lstrip("/")
        return None if name in ("", ".") else name

    def _unsafe(self, member, why: str) -> UnsafeArchiveMember:
        return UnsafeArchiveMember(
            f"{self.layer}: refused the entry {member.name!r}: {why}. The layer "
            "may be malicious; nothing was written outside the folder and the "
            "extraction was stopped"
        )

    def _resolve(self, parent: str, member, *, create: bool) -> str | None:
        """``parent`` with every symlink resolved inside the root, as a real path.

        Missing folders are created (``create=True``) or end the walk with
        None. A symlink whose target climbs above the root is refused.
        """
        pending, resolved, hops = _parts(parent), [], 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not resolved:
                    raise self._unsafe(member, "a symlink above it leads out")
                resolved.pop()
                continue
            here = self.root.joinpath(*resolved, part)
            info = _lstat(here)
            if info is None and not create:
                return None
            if info is None:
                os.mkdir(here, 0o755)
                self._wrote("/".join([*resolved, part]))
            elif stat.S_ISLNK(info.st_mode):
                hops += 1
                resolved = self._follow(here, resolved, pending, hops, member)
                continue
            elif not stat.S_ISDIR(info.st_mode):
                raise self._not_a_folder(member, [*resolved, part])
            resolved.append(part)
        return "/".join(resolved)

    def _follow(self, link: Path, resolved, pending, hops: int, member) -> list:
        """Put a symlink's target in front of ``pending``; absolute ones restart."""
        if hops > MAX_SYMLINK_HOPS:
            raise self._unsafe(member, "the symlinks above it form a loop")
        target = os.readlink(link)
        pending[:0] = _parts(target)
        return [] if target.startswith("/") else resolved

    def _not_a_folder(self, member, parts: list[str]) -> DgetkitError:
        return DgetkitError(
            f"{self.layer}: the entry {member.name!r} lies below {'/'.join(parts)}, "
            "which is not a folder; the layer is broken"
        )

    def _wrote(self, relative: str) -> None:
        self.written.add(relative)
        parent = posixpath.dirname(relative)
        while parent and parent not in self.above:
            self.above.add(parent)
            parent = posixpath.dirname(parent)

    # -- whiteouts -----------------------------------------------------------------

    def _whiteout(self, parent: str, name: str, member) -> None:
        if not name or name in (".", "..") or "/" in name:
            log.warning(
                "%s: ignored the malformed whiteout %r", self.layer, member.name
            )
            return
        self.done.whiteouts += 1
        folder = self._resolve(parent, member, create=False)
        if folder is not None:
            self._remove_lower(posixpath.join(folder, name))

    def _opaque(self, parent: str, member) -> None:
        self.done.whiteouts += 1
        folder = self._resolve(parent, member, create=True)
        if folder:
            self._wrote(folder)
        for child in os.listdir(self.root / folder):
            self._remove_lower(posixpath.join(folder, child) if folder else child)

    def _remove_lower(self, relative: str) -> None:
        """Delete what lower layers put at ``relative``; keep this layer's entries."""
        path = self.root / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if relative not in self.written and relative not in self.above:
            _remove(path, info)
        elif stat.S_ISDIR(info.st_mode):
            for child in os.listdir(path):
                self._remove_lower(f"{relative}/{child}")

    # -- entries -------------------------------------------------------------------

    def _entry(self, parent: str, base: str, member, tar) -> None:
        folder = self._resolve(parent, member, create=True)
        relative = posixpath.join(folder, base) if folder else base
        path = self.root / relative
        if member.type in _DEVICES and not self.is_root:
            self._skip(member, "device and FIFO entries need root")
            return
        if member.type == tarfile.LNKTYPE:
            source = self._link_source(member)
        self._clear(path, member)
        if member.type in _REGULAR:
            self._write_file(path, member, tar)
        elif member.type == tarfile.DIRTYPE:
            path.mkdir(mode=0o700, exist_ok=True)
            self.folders.append((path, member))
        elif member.type == tarfile.SYMTYPE:
            os.symlink(member.linkname, path)
            self._owner(path, member)
            _set_times(path, member)
        elif member.type == tarfile.LNKTYPE:
            os.link(source, path, follow_symlinks=False)
        elif not self._special(path, member):
            return
        self._wrote(relative)
        self.done.entries += 1

    def _clear(self, path: Path, member) -> None:
        """Remove what is at ``path``, unless both it and the entry are folders."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode) and member.type == tarfile.DIRTYPE:
            return
        _remove(path, info)

    def _write_file(self, path: Path, member, tar) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        source = tar.extractfile(member)
        with os.fdopen(os.open(path, flags, 0o600), "wb") as target:
            shutil.copyfileobj(source, target, _COPY_CHUNK)
        self._metadata(path, member)

    def _link_source(self, member) -> Path:
        """The file a hard link points at: inside the root, already extracted."""
        target = posixpath.normpath("/" + member.linkname).lstrip("/")
        if _escapes(member.linkname) or not target:
            raise self._unsafe(
                member, f"its link target {member.linkname!r} is outside"
            )
        parent, base = posixpath.split(target)
        folder = self._resolve(parent, member, create=False)
        source = self.root / folder / base if folder is not None else None
        if source is None or not _is_file_like(source):
            raise self._unsafe(
                member,
                f"its hard link target {member.linkname!r} is not a file already "
                "inside the folder",
            )
        return source

    def _special(self, path: Path, member) -> bool:
        """Make a device or FIFO node; other entry types are skipped."""
        if member.type not in _DEVICES:
            self._skip(member, f"entries of tar type {member.type!r} are not supported")
            return False
        kind = {
            tarfile.CHRTYPE: stat.S_IFCHR,
            tarfile.BLKTYPE: stat.S_IFBLK,
            tarfile.FIFOTYPE: stat.S_IFIFO,
        }[member.type]
        try:
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(path, kind | 0o600, device)
        except OSError as err:
            self._skip(member, f"this system refused to create it ({err.strerror})")
            return False
        self._metadata(path, member)
        return True

    def _skip(self, member, why: str) -> None:
        log.info("%s: skipped %r: %s", self.layer, member.name, why)
        self.done.skipped.append(member.name)

    # -- metadata ------------------------------------------------------------------

    def _metadata(self, path: Path, member) -> None:
        """Owner, extended attributes, mode and times; the mode after the owner."""
        self._owner(path, member)
        _set_xattrs(path, member, self.layer)
        os.chmod(path, member.mode & 0o7777)
        _set_times(path, member)

    def _owner(self, path: Path, member) -> None:
        if self.is_root:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _escapes(name: str) -> bool:
    """True when ``name`` (made relative) climbs above its root with ``..``."""
    depth = 0
    for part in name.lstrip("/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _is_file_like(path: Path) -> bool:
    """True when ``path`` exists and is not a folder (symlinks are not followed)."""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _set_times(path: Path, member) -> None:
    mtime = max(0, int(member.mtime))
    try:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    except (NotImplementedError, OSError):
        pass


_XATTR_PREFIX = "SCHILY.xattr."


def _set_xattrs(path: Path, member, layer: str) -> None:
    for key, value in (member.pax_headers or {}).items():
        if not key.startswith(_XATTR_PREFIX):
            continue
        name = key[len(_XATTR_PREFIX) :]
        data = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(path, name, data, follow_symlinks=False)
        except (OSError, AttributeError) as err:
            log.info("%s: could not set %s on %s: %s", layer, name, member.name, err)
