"""Platforms (``os/architecture[/variant]``) and choosing one from an index.

Names are normalised as containerd does, so ``x86_64`` is ``amd64``,
``aarch64`` is ``arm64``, ``arm64/v8`` equals ``arm64`` and a bare ``arm`` is
``arm/v7``. Matching allows the fallbacks a CPU can run: ``arm/v7`` takes
``v6`` then ``v5`` images, never a newer variant.
See https://github.com/containerd/platforms (``database.go``, ``compare.go``).
"""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from .errors import InvalidPlatform

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "i686": "386",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
}
_OS_NAMES = {"linux", "windows", "darwin", "macos", "freebsd", "netbsd", "openbsd"}
_ALIAS_VARIANTS = {"armhf": "v7", "armel": "v6", "armv7l": "v7", "armv6l": "v6"}


@dataclass(frozen=True)
class Platform:
    """Where an image runs: operating system, CPU architecture and variant.

    Examples
    --------
    >>> Platform.parse("linux/aarch64")
    Platform(os='linux', architecture='arm64', variant='', os_version='')
    >>> str(Platform.parse("linux/arm"))
    'linux/arm/v7'
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (or just ``arch``) and normalise it."""
        parts = (text or "").strip().split("/")
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise InvalidPlatform(
                f"{text!r} is not a platform: expected os/architecture[/variant], "
                "e.g. linux/amd64 or linux/arm/v7"
            )
        if len(parts) == 1:
            if parts[0].lower() in _OS_NAMES:
                raise InvalidPlatform(
                    f"{text!r} names only an operating system: add the "
                    f"architecture, e.g. {parts[0].lower()}/amd64"
                )
            parts = ["linux", *parts]
        return cls(*parts).normalized()

    @classmethod
    def from_dict(cls, data: dict | None) -> Platform | None:
        """From a descriptor's ``platform`` object; None when there is none."""
        if not data:
            return None
        return cls(
            data.get("os", ""),
            data.get("architecture", ""),
            data.get("variant", "") or "",
            data.get("os.version", "") or "",
        )

    @classmethod
    def host(cls) -> Platform:
        """Linux on this machine's architecture: the default to pull."""
        return cls("linux", _host.machine() or "amd64").normalized()

    def normalized(self) -> Platform:
        """The canonical spelling of this platform."""
        os_name = self.os.lower()
        os_name = "darwin" if os_name == "macos" else os_name
        arch = self.architecture.lower()
        variant = self.variant.lower() or _ALIAS_VARIANTS.get(arch, "")
        arch = _ARCH_ALIASES.get(arch, arch)
        variant = _normalize_variant(arch, variant)
        return Platform(os_name, arch, variant, self.os_version)

    def compatible(self) -> list[Platform]:
        """This platform followed by the ones it can also run, best first."""
        wanted = self.normalized()
        same = [
            Platform(wanted.os, wanted.architecture, v, wanted.os_version)
            for v in _fallback_variants(wanted)
        ]
        return same or [wanted]

    def matches(self, candidate: Platform) -> bool:
        """True if ``candidate`` is exactly this platform after normalisation."""
        mine, theirs = self.normalized(), candidate.normalized()
        return (mine.os, mine.architecture, mine.variant) == (
            theirs.os,
            theirs.architecture,
            theirs.variant,
        ) and _os_version_matches(mine.os_version, theirs.os_version)

    def to_dict(self) -> dict:
        data = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        if self.os_version:
            data["os.version"] = self.os_version
        return data

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _normalize_variant(arch: str, variant: str) -> str:
    if arch == "amd64":
        return "" if variant == "v1" else variant
    if arch == "arm64":
        if variant in ("8", "v8", "v8.0"):
            return ""
        return "v9" if variant in ("9", "9.0", "v9.0") else variant
    if arch == "arm":
        if variant in ("", "7"):
            return "v7"
        return f"v{variant}" if variant in ("5", "6", "8") else variant
    if arch == "386":
        return ""
    return variant


def _fallback_variants(wanted: Platform) -> list[str]:
    """Variants of ``wanted.architecture`` a CPU of ``wanted.variant`` runs."""
    arch, variant = wanted.architecture, wanted.variant
    if arch == "arm" and variant in ("v8", "v7", "v6", "v5"):
        return [f"v{n}" for n in range(int(variant[1]), 4, -1)]
    if arch == "amd64" and variant in ("v2", "v3", "v4"):
        return [f"v{n}" for n in range(int(variant[1]), 1, -1)] + [""]
    return [variant]


def _os_version_matches(wanted: str, candidate: str) -> bool:
    """Windows images: ask for a version and only that major.minor.build fits."""
    if not wanted or not candidate:
        return True
    return wanted.split(".")[:3] == candidate.split(".")[:3]


def choose(wanted: Platform, candidates: list[Platform | None]) -> int | None:
    """Index of the best candidate for ``wanted``, or None if none fits.

    Exact matches win; then the fallbacks :meth:`Platform.compatible` lists, in
    order. Among equals the first entry wins, as the image spec asks.
    """
    for option in wanted.compatible():
        for index, candidate in enumerate(candidates):
            if candidate is not None and option.matches(candidate):
                return index
    return None
