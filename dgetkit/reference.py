"""Image references: what users type to name an image.

The grammar is distribution's (parsed by the ``docker-image-py`` package); the
normalisation is Docker's, and it is explained here once:

- ``name[:tag][@digest]``; the first path component is a registry host only if
  it contains ``.`` or ``:``, or is ``localhost``. Otherwise the image lives on
  Docker Hub (``docker.io``).
- On Docker Hub a single-component name gets the ``library/`` namespace, so
  ``alpine`` is ``docker.io/library/alpine``; ``index.docker.io`` means
  ``docker.io``. Docker Hub's API is served from ``registry-1.docker.io``.
- No tag and no digest means the tag ``latest``. When both are given, the digest
  decides which image is pulled; the tag is kept only as a name for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from docker_image import reference as _grammar

from .digest import Digest
from .errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    Examples
    --------
    >>> ref = Reference.parse("alpine:3.20")
    >>> ref.registry, ref.repository, ref.tag
    ('docker.io', 'library/alpine', '3.20')
    >>> str(ref)
    'docker.io/library/alpine:3.20'
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise ``text``; raise :class:`InvalidReference` if bad."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidReference(
                "the image reference is empty: expected something like "
                "'alpine:3.20' or 'registry.example.com/team/app:1.0'"
            )
        text = text.strip()
        try:
            parsed = _grammar.Reference.parse_normalized_named(text)
        except Exception as err:  # docker-image-py raises plain Exceptions
            raise InvalidReference(_explain(text, err)) from err
        registry, repository = parsed.split_hostname()
        digest = Digest.parse(parsed["digest"]) if parsed["digest"] else None
        tag = parsed["tag"]
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def api_host(self) -> str:
        """The ``host[:port]`` that serves the Registry API for this image."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def name(self) -> str:
        """``registry/repository``, fully qualified."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the manifest endpoint for: the digest if any, else the tag."""
        return str(self.digest) if self.digest else self.tag

    @property
    def tagged_name(self) -> str | None:
        """``registry/repository:tag`` (for ``RepoTags``), or None for digest-only."""
        return f"{self.name}:{self.tag}" if self.tag else None

    @property
    def familiar_repository(self) -> str:
        """The repository as ``docker images`` shows it: ``alpine``, ``ghcr.io/o/r``."""
        if self.is_docker_hub:
            return self.repository.removeprefix("library/")
        return self.name

    def with_digest(self, digest: Digest) -> Reference:
        """The same name and tag, pinned to ``digest``."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses, with or without a port."""
    if host.startswith("["):
        name = host[1 : host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _explain(text: str, err: Exception) -> str:
    """Turn the grammar library's terse message into one that says what to fix."""
    detail = str(err) or type(err).__name__
    hints = []
    if "://" in text:
        hints.append(
            "leave out the scheme (http:// or https://); loopback registries use "
            "plain HTTP anyway, others with --insecure"
        )
    if any(c.isupper() for c in text.split("@")[0].split(":")[0].rsplit("/", 1)[-1]):
        hints.append("repository names must be lower case")
    if "@" in text:
        hints.append("a digest is 'sha256:' followed by 64 lower-case hex characters")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return (
        f"{text!r} is not a valid image reference: {detail}{hint}. Expected "
        "[registry/]repository[:tag][@sha256:digest], e.g. 'alpine:3.20'"
    )
