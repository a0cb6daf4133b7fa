"""The model of an image: descriptors, manifests, indexes and configs.

Raw bytes are kept beside every parsed object, because digests are taken over
the exact bytes a registry sent and archives must store them verbatim.
Media types: https://github.com/opencontainers/image-spec/blob/main/media-types.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .digest import Digest
from .errors import (
    DgetkitError,
    Schema1NotSupported,
    UnsupportedMediaType,
)
from .platform import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
#: Sent in ``Accept`` on every manifest request, most specific first.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

#: Layer media types and the compression their label claims.
LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar": "none",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


@dataclass(frozen=True)
class Descriptor:
    """What points at content: media type, digest, size and optional extras."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict = field(default_factory=dict, hash=False, compare=False)
    artifact_type: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Descriptor:
        try:
            return cls(
                media_type=data.get("mediaType", ""),
                digest=Digest.parse(data["digest"]),
                size=int(data["size"]),
                platform=Platform.from_dict(data.get("platform")),
                urls=tuple(data.get("urls") or ()),
                annotations=dict(data.get("annotations") or {}),
                artifact_type=data.get("artifactType", ""),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DgetkitError(
                f"a descriptor in the manifest is malformed ({err!r}): it needs "
                "mediaType, digest and size; the registry sent a broken manifest"
            ) from err

    @property
    def is_attestation(self) -> bool:
        """BuildKit attestations and other non-runnable index entries."""
        if ATTESTATION_ANNOTATION in self.annotations:
            return True
        p = self.platform
        return p is not None and (p.os, p.architecture) == ("unknown", "unknown")

    @property
    def compression(self) -> str:
        """The compression the media type claims: gzip, zstd, none or unknown."""
        return LAYER_COMPRESSION.get(self.media_type, "unknown")

    def to_dict(self) -> dict:
        data = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            data["urls"] = list(self.urls)
        if self.platform:
            data["platform"] = self.platform.to_dict()
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list: one entry per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    digest: Digest | None = None

    @property
    def images(self) -> list[Descriptor]:
        """Entries that are runnable images (not attestations, not unknown types)."""
        return [
            d
            for d in self.manifests
            if not d.is_attestation and d.media_type in (*IMAGE_TYPES, *INDEX_TYPES)
        ]


@dataclass(frozen=True)
class ImageManifest:
    """An OCI image manifest or Docker schema 2 manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    digest: Digest | None = None
    annotations: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ImageConfig:
    """An image config: platform, rootfs diff_ids, history and the run settings."""

    raw: bytes = field(repr=False)
    data: dict = field(repr=False, compare=False)
    digest: Digest | None = None

    @classmethod
    def parse(cls, raw: bytes, digest: Digest | None = None) -> ImageConfig:
        try:
            data = json.loads(raw)
        except ValueError as err:
            raise DgetkitError(
                f"the image config {digest or ''} is not valid JSON: {err}"
            ) from err
        if not isinstance(data, dict):
            raise DgetkitError(f"the image config {digest or ''} is not an object")
        return cls(raw, data, digest)

    @property
    def diff_ids(self) -> list[Digest]:
        rootfs = self.data.get("rootfs") or {}
        return [Digest.parse(d) for d in rootfs.get("diff_ids") or []]

    @property
    def history(self) -> list[dict]:
        return list(self.data.get("history") or [])

    @property
    def platform(self) -> Platform:
        return Platform(
            self.data.get("os", ""),
            self.data.get("architecture", ""),
            self.data.get("variant", "") or "",
            self.data.get("os.version", "") or "",
        )

    @property
    def created(self) -> str:
        return self.data.get("created", "") or ""

    @property
    def run(self) -> dict:
        """The ``config`` object: Env, Cmd, Entrypoint, Labels, WorkingDir, ..."""
        return dict(self.data.get("config") or {})


def parse_manifest(raw: bytes, content_type: str = "", digest: Digest | None = None):
    """Parse manifest bytes into an :class:`Index` or :class:`ImageManifest`.

    The media type comes from ``Content-Type``; when a registry mislabels it the
    body decides (``mediaType``, then its shape), as go-containerregistry does.
    """
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise DgetkitError(
            f"the manifest {digest or ''} is not valid JSON ({err}); the registry "
            "sent something else (a login page or a proxy error?)"
        ) from err
    if not isinstance(body, dict):
        raise DgetkitError("the manifest is not a JSON object")
    media_type = _media_type(body, content_type.split(";")[0].strip())

    if media_type in SCHEMA1_TYPES or body.get("schemaVersion") == 1:
        raise Schema1NotSupported(
            "this image has a Docker schema 1 manifest, deprecated since 2017 and "
            "not pulled by dgetkit (nor by Docker 26+); re-push it with a current "
            "tool (docker push, skopeo copy) to get a schema 2 or OCI manifest"
        )
    if media_type in INDEX_TYPES:
        descriptors = tuple(
            Descriptor.from_dict(d) for d in body.get("manifests") or []
        )
        return Index(media_type, descriptors, raw, digest)
    if media_type in IMAGE_TYPES:
        if "config" not in body:
            raise DgetkitError("the image manifest has no config descriptor")
        return ImageManifest(
            media_type,
            Descriptor.from_dict(body["config"]),
            tuple(Descriptor.from_dict(d) for d in body.get("layers") or []),
            raw,
            digest,
            dict(body.get("annotations") or {}),
        )
    raise UnsupportedMediaType(
        f"the registry returned a manifest of type {media_type!r}, which is not a "
        "container image (dgetkit pulls OCI and Docker schema 2 images and indexes)"
    )


def _media_type(body: dict, content_type: str) -> str:
    """Decide what kind of manifest ``body`` is."""
    declared = body.get("mediaType") or ""
    known = (*INDEX_TYPES, *IMAGE_TYPES, *SCHEMA1_TYPES)
    if content_type in known and (not declared or declared == content_type):
        return content_type
    if declared:
        return declared
    if "manifests" in body:
        return OCI_INDEX
    if "config" in body and "layers" in body:
        return OCI_MANIFEST
    if body.get("schemaVersion") == 1:
        return SCHEMA1_TYPES[0]
    return content_type or "unknown"


def check_config_media_type(descriptor: Descriptor) -> None:
    """Refuse manifests whose config is not an image config (artifacts, plugins)."""
    if descriptor.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
        raise UnsupportedMediaType(
            f"the manifest's config has media type {descriptor.media_type!r}: this "
            "is an artifact (Helm chart, signature, plugin...), not a container "
            "image, so there is no filesystem to export"
        )
