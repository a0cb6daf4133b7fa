"""Shared fixtures: real registries on 127.0.0.1, a token server, a fault proxy.

Expensive servers are session-scoped; anything a test may change (token
server settings, proxy rules) comes from a function-scoped fixture that
resets it. Without ``docker-registry`` (or podman/skopeo for the loader
fixtures) the tests that need it are skipped, except on CI (``CI=true``)
where a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# Make ``tests.support`` importable however pytest is started (``pytest`` or
# ``python -m pytest``, with or without a ``tests/__init__.py``).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.faultproxy import BlobServer, FaultProxy
from tests.support.images import Pusher, build_standard_images
from tests.support.loaders import podman_cleanup
from tests.support.registry import CertificateAuthority, RegistryServer
from tests.support.tokenserver import TokenServer

MARKERS = {
    "integration": "uses real processes: registries, proxies, podman or skopeo",
    "slow": "takes more than a few seconds",
    "browser": "drives a real browser against JupyterLab",
}
BASIC_USERS = {"bob": "builder"}
INSTALL_HINTS = {
    "docker-registry": "apt-get install docker-registry",
    "podman": "apt-get install podman",
    "skopeo": "apt-get install skopeo",
    "htpasswd": "apt-get install apache2-utils",
}


def pytest_configure(config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def require_tools(*tools: str) -> None:
    """Skip the test if a tool is missing; fail instead when ``CI=true``."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    hints = "; ".join(INSTALL_HINTS.get(tool, tool) for tool in missing)
    reason = f"not installed: {', '.join(missing)} ({hints})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have every test tool installed, {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_user_state(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's blob cache and Docker login."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DGETKIT_CACHE", str(home / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / "docker"))
    monkeypatch.delenv("DGETKIT_USERNAME", raising=False)
    monkeypatch.delenv("DGETKIT_PASSWORD", raising=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A plain-HTTP registry without auth that accepts foreign-layer ``urls``."""
    require_tools("docker-registry")
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    """A TLS registry with Docker token auth.

    Attributes beyond :class:`RegistryServer`: ``ca_cert`` (CA PEM that
    verifies the registry and the token server), ``token_server``,
    ``users`` and ``username``/``password`` (alice, who may push).
    Repositories under ``private/`` need a login; the rest pull anonymously.
    """
    require_tools("docker-registry")
    folder = tmp_path_factory.mktemp("token-registry")
    ca = CertificateAuthority(folder / "ca")
    with TokenServer(folder / "token", ca=ca) as token_server:
        server = RegistryServer(
            folder / "registry", tls=True, ca=ca, token_server=token_server
        )
        with server:
            yield server


@pytest.fixture
def token_server(token_registry):
    """The token registry's token server, with an empty request log.

    Settings changed by the test (``expires_in``, ``token_keys``) are put
    back afterwards.
    """
    server = token_registry.token_server
    saved = server.expires_in, server.token_keys
    server.clear()
    yield server
    server.expires_in, server.token_keys = saved


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory):
    """A plain-HTTP registry with htpasswd Basic auth (``username``/``password``)."""
    require_tools("docker-registry", "htpasswd")
    folder = tmp_path_factory.mktemp("basic-registry")
    with RegistryServer(folder, htpasswd=BASIC_USERS) as server:
        yield server


@pytest.fixture(scope="session")
def images(registry):
    """The standard catalogue pushed to ``registry``; see ``build_standard_images``."""
    return build_standard_images(Pusher(registry.url))


@pytest.fixture
def registry_factory(tmp_path):
    """Start extra registries (e.g. a mirror) for one test: ``factory(**options)``.

    Options are those of :class:`RegistryServer`; all are stopped afterwards.
    """
    require_tools("docker-registry")
    started = []

    def start(**options) -> RegistryServer:
        server = RegistryServer(tmp_path / f"registry-{len(started)}", **options)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fault_proxy(registry):
    """Start fault proxies in front of ``registry``: ``fault_proxy()``.

    ``fault_proxy(upstream=other_registry)`` fronts another plain-HTTP
    registry. Proxies (and blob servers from ``fault_proxy.blob_server()``)
    are stopped after the test.
    """
    started = []

    def start(upstream=None) -> FaultProxy:
        proxy = FaultProxy((upstream or registry).url)
        started.append(proxy.start())
        return proxy

    def blob_server(**options) -> BlobServer:
        server = BlobServer(**options)
        started.append(server.start())
        return server

    start.blob_server = blob_server
    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def loader_dir(tmp_path):
    """A fresh folder for podman's storage (and other loader state)."""
    require_tools("podman", "skopeo")
    folder = tmp_path / "loader"
    folder.mkdir()
    yield folder
    podman_cleanup(folder)
