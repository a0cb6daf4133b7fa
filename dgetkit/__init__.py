"""dgetkit: look inside container images and export them without a Docker daemon.

The names a notebook user types are here; everything else is reachable by
module (``dgetkit.registry``, ``dgetkit.archive``, ...). pandas and ipywidgets
are imported only when a function that needs them is first called.

Examples
--------
>>> import dgetkit                                      # doctest: +SKIP
>>> dgetkit.platforms("alpine:3.20")                    # doctest: +SKIP
>>> dgetkit.pull("alpine:3.20", "alpine.tar", platform="linux/arm64")  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from .cache import Cache
from .errors import (
    AuthenticationError,
    DgetkitError,
    DigestMismatch,
    InvalidReference,
    ManifestNotFound,
    PlatformNotFound,
    RegistryError,
    RepositoryNotFound,
)
from .extract import extract
from .platform import Platform
from .pull import PullResult, pull, resolve
from .reference import Reference
from .registry import Options
from .transcript import record

__version__ = "0.1.0"

logging.getLogger("dgetkit").addHandler(logging.NullHandler())

_LAZY = {
    "platforms": "frames",
    "layers": "frames",
    "history": "frames",
    "tags": "frames",
    "config": "frames",
    "files": "frames",
    "ratelimit": "frames",
    "cache_frame": "frames",
    "image": "frames",
    "picker": "widgets",
    "export_many": "export",
    "inspect_archive": "inspect",
}

__all__ = [
    "AuthenticationError",
    "Cache",
    "DgetkitError",
    "DigestMismatch",
    "InvalidReference",
    "ManifestNotFound",
    "Options",
    "Platform",
    "PlatformNotFound",
    "PullResult",
    "Reference",
    "RegistryError",
    "RepositoryNotFound",
    "cache_frame",
    "config",
    "export_many",
    "extract",
    "files",
    "history",
    "image",
    "inspect_archive",
    "layers",
    "picker",
    "platforms",
    "pull",
    "ratelimit",
    "record",
    "resolve",
    "tags",
]


def __getattr__(name: str):
    """Import the notebook-facing modules (pandas, ipywidgets) on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dgetkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
