"""Docker Hub mirrors: tried in order for Docker Hub references only.

Docker Hub itself cannot be reached here, so a plain registry stands in for
it: the tests point ``dgetkit.registry.DOCKER_HUB_API`` (the host Docker Hub
references go to) at it, or at a closed port to make the hub unreachable.
The mirror is a second registry in front of it, running as a pull-through
cache (``proxy.remoteurl``), as company mirrors do. The transcript of
``dgetkit.record()`` tells which host answered each request.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest

import dgetkit
from dgetkit import cli
from dgetkit import registry as registry_module
from dgetkit.errors import RegistryUnreachable
from dgetkit.registry import Options
from tests.support.images import Pusher, make_config, make_layer, push_recorded
from tests.support.loaders import podman_load
from tests.support.registry import RegistryServer, free_port

pytestmark = pytest.mark.integration

HUB_IMAGE = "docker.io/library/hello:1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The registry standing in for Docker Hub, holding ``library/hello:1``."""
    with RegistryServer(tmp_path_factory.mktemp("hub")) as server:
        layers = [make_layer({"hello": b"from the hub\n"}), make_layer({"b": b"2"})]
        server.record = push_recorded(
            Pusher(server.url), "library/hello", "1", layers, make_config(layers)
        )
        yield server


@pytest.fixture(scope="module")
def mirror(hub, tmp_path_factory):
    """A pull-through mirror of the hub."""
    folder = tmp_path_factory.mktemp("mirror")
    with RegistryServer(folder, proxy_remote=hub.url) as server:
        yield server


@pytest.fixture(scope="module")
def empty_mirror(tmp_path_factory):
    """A mirror that has nothing (a plain registry, not a proxy)."""
    with RegistryServer(tmp_path_factory.mktemp("empty-mirror")) as server:
        yield server


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(registry_module, "_clients", {})
    monkeypatch.setattr(registry_module, "sleep", lambda seconds: None)


@pytest.fixture
def hub_at(monkeypatch):
    """Send Docker Hub references to ``host`` instead of registry-1.docker.io."""

    def point(host: str) -> str:
        monkeypatch.setattr(registry_module, "DOCKER_HUB_API", host)
        return host

    return point


def closed_host() -> str:
    return f"127.0.0.1:{free_port()}"


def hosts(transcript, status_below=600) -> list[str]:
    return [
        urlsplit(e.url).netloc for e in transcript.exchanges if e.status < status_below
    ]


def served(transcript) -> dict[str, set[str]]:
    """Which host answered 2xx for manifests and blobs."""
    found: dict[str, set[str]] = {}
    for e in transcript.exchanges:
        kind = (
            "manifests"
            if "/manifests/" in e.url
            else "blobs"
            if "/blobs/" in e.url
            else ""
        )
        if kind and 200 <= e.status < 300:
            found.setdefault(kind, set()).add(urlsplit(e.url).netloc)
    return found


def test_a_mirror_hit_never_touches_the_hub(hub, mirror, hub_at, tmp_path, loader_dir):
    unreachable = hub_at(closed_host())
    options = Options(mirrors=(mirror.url,), retries=0)
    with dgetkit.record() as transcript:
        result = dgetkit.pull(
            "hello:1", tmp_path / "h.tar", progress=False, cache=False, options=options
        )
    assert result.digest == hub.record["digest"]
    assert set(hosts(transcript)) == {mirror.host}
    assert unreachable not in hosts(transcript)
    assert served(transcript) == {"manifests": {mirror.host}, "blobs": {mirror.host}}
    assert podman_load(result.path, loader_dir) == [HUB_IMAGE]


def test_a_mirror_miss_falls_back_to_the_hub(hub, empty_mirror, hub_at, tmp_path):
    hub_at(hub.host)
    options = Options(mirrors=(empty_mirror.url,), retries=0)
    with dgetkit.record() as transcript:
        result = dgetkit.pull(
            HUB_IMAGE, tmp_path / "h.tar", progress=False, cache=False, options=options
        )
    assert result.image_id == hub.record["config_digest"]
    assert served(transcript) == {"manifests": {hub.host}, "blobs": {hub.host}}
    misses = [
        e for e in transcript.exchanges if urlsplit(e.url).netloc == empty_mirror.host
    ]
    assert misses and {e.status for e in misses if "/v2/library/" in e.url} == {404}
    first = transcript.exchanges[0]
    assert urlsplit(first.url).netloc == empty_mirror.host, "the mirror is asked first"


def test_a_mirror_miss_with_the_hub_unreachable_is_a_clear_error(
    empty_mirror, hub_at, caplog
):
    unreachable = hub_at(closed_host())
    caplog.set_level(logging.INFO, logger="dgetkit")
    options = Options(mirrors=(empty_mirror.url,), retries=0)
    with pytest.raises(RegistryUnreachable) as caught:
        dgetkit.resolve(HUB_IMAGE, options=options)
    assert unreachable in str(caught.value)
    assert f"mirror {empty_mirror.host} failed" in caplog.text
    assert "library/hello" in caplog.text


def test_the_error_says_what_the_mirrors_answered(empty_mirror, hub_at):
    hub_at(closed_host())
    options = Options(mirrors=(empty_mirror.url,), retries=0)
    with pytest.raises(RegistryUnreachable) as caught:
        dgetkit.resolve(HUB_IMAGE, options=options)
    assert empty_mirror.host in str(caught.value)


@pytest.mark.parametrize(
    "order", ["dead-then-live", "empty-then-live"], ids=["dead-first", "empty-first"]
)
def test_mirrors_are_tried_in_order(hub, mirror, empty_mirror, hub_at, caplog, order):
    hub_at(closed_host())
    caplog.set_level(logging.INFO, logger="dgetkit")
    first = f"http://{closed_host()}" if order == "dead-then-live" else empty_mirror.url
    options = Options(mirrors=(first, mirror.url), retries=0)
    with dgetkit.record() as transcript:
        image = dgetkit.resolve(HUB_IMAGE, options=options)
    assert str(image.digest) == hub.record["digest"]
    assert served(transcript) == {"manifests": {mirror.host}, "blobs": {mirror.host}}
    assert f"mirror {urlsplit(first).netloc} failed" in caplog.text


def test_mirrors_apply_to_docker_hub_references_only(hub, empty_mirror):
    options = Options(mirrors=(empty_mirror.url,), retries=0)
    with dgetkit.record() as transcript:
        image = dgetkit.resolve(f"{hub.host}/library/hello:1", options=options)
    assert str(image.digest) == hub.record["digest"]
    assert set(hosts(transcript)) == {hub.host}


@pytest.mark.parametrize("form", ["url", "host-port"])
def test_cli_mirror_flag(hub, mirror, hub_at, tmp_path, capsys, form):
    hub_at(closed_host())
    given = mirror.url if form == "url" else mirror.host
    out = tmp_path / "h.tar"
    code = cli.main(
        [
            "pull",
            "hello:1",
            "--mirror",
            given,
            "-o",
            str(out),
            "--no-progress",
            "--no-cache",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert hub.record["digest"] in capsys.readouterr().out
