"""Reading archives back: which images a ``docker save`` or OCI archive holds.

:func:`inspect_archive` reads any of the layouts loaders accept, whoever wrote
them (dgetkit, ``docker save``, ``podman save``, ``skopeo copy`` to
``docker-archive:`` or ``oci-archive:``), plain or compressed (gzip, zstd,
bzip2, xz), in one pass over the file:

- the OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``),
  read as containerd and podman read it, ignoring ``manifest.json``;
- else the ``docker save`` layout (``manifest.json`` with ``Config``,
  ``RepoTags`` and ``Layers`` paths, symlinked duplicates followed).

Only the small JSON members (manifests, configs, ``index.json``) are kept in
memory; layers are measured and their first bytes sniffed, never unpacked.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import codec
from .digest import Digest
from .errors import DgetkitError, InvalidArchive
from .manifest import ImageConfig, ImageManifest, Index, parse_manifest

#: JSON members larger than this are not read (configs are kilobytes).
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Symlinks followed from a ``Layers`` path before it counts as a loop.
MAX_LINK_HOPS = 8
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
IMAGE_COLUMNS = [
    "image",
    "repo_tags",
    "config_digest",
    "manifest_digest",
    "os",
    "architecture",
    "variant",
    "platform",
    "layers",
    "size",
    "created",
]
LAYER_COLUMNS = [
    "image",
    "index",
    "path",
    "diff_id",
    "digest",
    "size",
    "media_type",
    "compression",
]


@dataclass
class ArchiveContents:
    """The images inside an archive, as two DataFrames.

    Attributes
    ----------
    path : Path
        The archive.
    layout : str
        ``"oci"`` (an OCI image layout; ``+docker`` when a ``manifest.json``
        is there too, as Docker 25+ writes) or ``"docker"``.
    images : DataFrame
        One row per image: ``image`` (the first tag, else the config digest),
        ``repo_tags``, ``config_digest`` (the image ID), ``manifest_digest``
        (OCI layout only), ``os``, ``architecture``, ``variant``,
        ``platform``, ``layers`` (count), ``size`` (bytes of its layers as
        stored) and ``created``.
    layers : DataFrame
        One row per layer of each image, bottom first: ``image``, ``index``,
        ``path`` (the member holding it, after symlinks), ``diff_id`` (from
        the config), ``digest`` (OCI layout only), ``size`` (as stored),
        ``media_type`` (OCI layout only) and ``compression`` (sniffed:
        ``none``, ``gzip`` or ``zstd``).
    """

    path: Path
    layout: str
    images: pd.DataFrame = field(repr=False)
    layers: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"<ArchiveContents {self.path.name}: {self.layout} layout, "
            f"{len(self.images)} images, {len(self.layers)} layers>"
        )

    def _repr_html_(self) -> str:
        title = (
            f"<p><b>{_escape(self.path.name)}</b>: {self.layout} layout, "
            f"{len(self.images)} images, {len(self.layers)} layers</p>"
        )
        return (
            title
            + "<p>Images</p>"
            + self.images.to_html(index=False)
            + "<p>Layers</p>"
            + self.layers.to_html(index=False)
        )


def inspect_archive(path: str | os.PathLike) -> ArchiveContents:
    """List the images and layers of a ``docker save`` or OCI archive.

    Parameters
    ----------
    path : str or path
        A ``.tar`` (or ``.tar.gz``, ``.tar.zst``, ...) written by dgetkit,
        ``docker save``, ``podman save`` or ``skopeo copy``.

    Returns
    -------
    ArchiveContents
        ``.images`` and ``.layers`` DataFrames.

    Examples
    --------
    >>> contents = inspect_archive("alpine_3.20.tar")  # doctest: +SKIP
    >>> contents.images[["image", "platform", "layers"]]  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    members = _scan(path)
    if "oci-layout" in members.kinds and "index.json" in members.kinds:
        layout = "oci+docker" if "manifest.json" in members.kinds else "oci"
        images = _OciReader(members).images()
    elif "manifest.json" in members.kinds:
        layout, images = "docker", _docker_images(members)
    else:
        raise DgetkitError(
            f"{path} holds neither an OCI image layout (oci-layout, index.json) "
            "nor a docker save manifest.json; it is not an image archive"
        )
    image_rows = [image.row() for image in images]
    layer_rows = [layer for image in images for layer in image.layer_rows()]
    return ArchiveContents(
        path,
        layout,
        pd.DataFrame(image_rows, columns=IMAGE_COLUMNS),
        pd.DataFrame(layer_rows, columns=LAYER_COLUMNS),
    )


# -- one pass over the tar ---------------------------------------------------------


@dataclass
class _Members:
    """What the scan kept of each member, by clean name."""

    kinds: dict[str, str] = field(default_factory=dict)  # file, dir, link
    sizes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # name -> member it names
    heads: dict[str, bytes] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)

    def target(self, name: str) -> str:
        """The regular member ``name`` stands for, following symlinks."""
        name = _clean(name)
        for _ in range(MAX_LINK_HOPS):
            if name not in self.links:
                break
            name = self.links[name]
        if self.kinds.get(name) != "file":
            raise DgetkitError(
                f"the archive names {name!r}, but holds no such file; it is "
                "incomplete or broken"
            )
        return name

    def raw(self, name: str) -> bytes:
        """The bytes of a small JSON member (manifest, config, index)."""
        member = self.target(name)
        if member not in self.bodies:
            raise DgetkitError(
                f"{member!r} in the archive is not a JSON document of at most "
                f"{MAX_JSON_BYTES} bytes"
            )
        return self.bodies[member]

    def json(self, name: str):
        try:
            return json.loads(self.raw(name))
        except ValueError as err:
            raise DgetkitError(f"{name!r} in the archive is not valid JSON") from err


def _scan(path: Path) -> _Members:
    members = _Members()
    try:
        with (
            open(path, "rb") as raw,
            _decompressed(raw, path) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for info in tar:
                _keep(members, info, tar)
    except FileNotFoundError as err:
        raise InvalidArchive(f"{path} does not exist") from err
    except (tarfile.TarError, EOFError, *codec.DECODE_ERRORS) as err:
        raise InvalidArchive(
            f"{path} is not a tar archive ({err}); give a file written by "
            "docker save, podman save, skopeo or dgetkit"
        ) from err
    return members


def _decompressed(raw, path: Path):
    buffered = io.BufferedReader(raw, 1 << 20)
    head = buffered.peek(8)[:8]
    if head.startswith(b"BZh"):
        return bz2.open(buffered)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(buffered)
    try:
        return codec.decompressing(buffered, codec.sniff(head))
    except DgetkitError as err:
        raise DgetkitError(f"{path}: {err}") from err


def _keep(members: _Members, info: tarfile.TarInfo, tar) -> None:
    name = _clean(info.name)
    if info.issym():
        target = posixpath.join(posixpath.dirname(name), info.linkname)
        members.links[name], members.kinds[name] = _clean(target), "link"
    elif info.islnk():
        members.links[name], members.kinds[name] = _clean(info.linkname), "link"
    elif info.isdir():
        members.kinds[name] = "dir"
    elif info.isfile():
        members.kinds[name], members.sizes[name] = "file", info.size
        handle = tar.extractfile(info)
        head = handle.read(8)
        members.heads[name] = head
        if info.size <= MAX_JSON_BYTES and head.lstrip()[:1] in (b"{", b"["):
            members.bodies[name] = head + handle.read()


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


# -- images ------------------------------------------------------------------------


@dataclass
class _Image:
    names: list[str]
    config: ImageConfig
    layer_paths: list[str]
    members: _Members = field(repr=False)
    manifest: ImageManifest | None = None

    @property
    def label(self) -> str:
        return self.names[0] if self.names else str(self.config.digest)

    def row(self) -> dict:
        platform = self.config.platform
        return {
            "image": self.label,
            "repo_tags": list(self.names),
            "config_digest": str(self.config.digest),
            "manifest_digest": str(self.manifest.digest) if self.manifest else None,
            "os": platform.os,
            "architecture": platform.architecture,
            "variant": platform.variant or None,
            "platform": str(platform),
            "layers": len(self.layer_paths),
            "size": sum(self.members.sizes[p] for p in set(self.layer_paths)),
            "created": self.config.created or None,
        }

    def layer_rows(self) -> list[dict]:
        diff_ids = self.config.diff_ids
        descriptors = self.manifest.layers if self.manifest else ()
        rows = []
        for index, member in enumerate(self.layer_paths):
            descriptor = descriptors[index] if index < len(descriptors) else None
            rows.append(
                {
                    "image": self.label,
                    "index": index,
                    "path": member,
                    "diff_id": str(diff_ids[index]) if index < len(diff_ids) else None,
                    "digest": str(descriptor.digest) if descriptor else None,
                    "size": self.members.sizes[member],
                    "media_type": descriptor.media_type if descriptor else None,
                    "compression": _compression(self.members.heads[member]),
                }
            )
        return rows


def _compression(head: bytes) -> str:
    try:
        return codec.sniff(head)
    except DgetkitError:
        return "other"


def _config(members: _Members, name: str) -> ImageConfig:
    raw = members.raw(name)
    return ImageConfig.parse(raw, Digest.of(raw))


def _docker_images(members: _Members) -> list[_Image]:
    items = members.json("manifest.json")
    if not isinstance(items, list):
        raise DgetkitError("manifest.json in the archive is not a list of images")
    images = []
    for item in items:
        layers = [members.target(p) for p in item.get("Layers") or []]
        images.append(
            _Image(
                list(item.get("RepoTags") or []),
                _config(members, item["Config"]),
                layers,
                members,
            )
        )
    return images


class _OciReader:
    """Walks ``index.json`` down to image manifests, as containerd does."""

    def __init__(self, members: _Members):
        self.members = members

    def images(self) -> list[_Image]:
        index = self._parse(self.members.raw("index.json"), None)
        if not isinstance(index, Index):
            raise DgetkitError("index.json in the archive is not an OCI image index")
        found: list[_Image] = []
        for descriptor in index.manifests:
            self._visit(descriptor, _names(descriptor), found, depth=0)
        return found

    def _visit(self, descriptor, names, found, depth: int) -> None:
        if descriptor.is_attestation or depth > 2:
            return
        parsed = self._parse(self._blob(descriptor.digest), descriptor.digest)
        if isinstance(parsed, Index):
            for child in parsed.manifests:
                self._visit(child, _names(child) or names, found, depth + 1)
            return
        config = _config(self.members, self._path(parsed.config.digest))
        paths = [self.members.target(self._path(d.digest)) for d in parsed.layers]
        found.append(_Image(names, config, paths, self.members, parsed))

    def _parse(self, raw: bytes, digest):
        return parse_manifest(raw, "", digest or Digest.of(raw))

    def _blob(self, digest: Digest) -> bytes:
        return self.members.raw(self._path(digest))

    @staticmethod
    def _path(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex}"


def _names(descriptor) -> list[str]:
    for key in NAME_ANNOTATIONS:
        if descriptor.annotations.get(key):
            return [descriptor.annotations[key]]
    return []


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
