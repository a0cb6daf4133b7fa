"""Credentials and TLS the way Docker users have them set up.

Docker's ``config.json`` (``auths``, ``identitytoken``, ``credHelpers``,
``credsStore``, the Docker Hub key, ``DOCKER_CONFIG``) against the Basic-auth
and token-auth registries; credential helpers are a small fake
``docker-credential-test`` written by the test and put on ``PATH``. Private
CAs through ``ca_cert=`` and Docker's ``certs.d`` layout against the TLS
registry.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs

import pytest

import dgetkit
from dgetkit import cli
from dgetkit import registry as registry_module
from dgetkit.auth import DOCKER_HUB_CONFIG_KEY, find_credentials
from dgetkit.errors import AuthenticationError, TLSVerificationError
from dgetkit.registry import Options
from tests.support import tokenserver
from tests.support.images import Pusher, make_config, make_layer, push_recorded
from tests.support.registry import RegistryServer, free_port
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.integration

HELPER_NAME = "test"


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    """Registry clients keep the credentials they found: start each test afresh."""
    monkeypatch.setattr(registry_module, "_clients", {})
    monkeypatch.setattr(registry_module, "sleep", lambda seconds: None)


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """Write Docker's ``config.json`` into ``$DOCKER_CONFIG`` (a fresh folder).

    ``HOME`` points at an empty folder, so no real login can leak in.
    """
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DGETKIT_USERNAME", raising=False)
    monkeypatch.delenv("DGETKIT_PASSWORD", raising=False)
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))

    def write(config: dict, where: Path = folder) -> Path:
        path = where / "config.json"
        path.write_text(json.dumps(config))
        return path

    write.home = home
    return write


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """A fake ``docker-credential-test`` on PATH; ``helper.secrets[server] = (u, p)``.

    It logs every call (argument and the server read from stdin) to
    ``helper.calls()``, and answers as real helpers do: JSON with ``Username``
    and ``Secret``, or "credentials not found" with exit status 1.
    """
    folder = tmp_path / "bin"
    folder.mkdir()
    store, log = tmp_path / "helper-secrets.json", tmp_path / "helper-calls.log"
    script = folder / f"docker-credential-{HELPER_NAME}"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "server = sys.stdin.read().strip()\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(sys.argv[1] + ' ' + server + '\\n')\n"
        f"secrets = json.load(open({str(store)!r}))\n"
        "if server not in secrets:\n"
        "    print('credentials not found in native keychain')\n"
        "    sys.exit(1)\n"
        "user, secret = secrets[server]\n"
        "print(json.dumps({'ServerURL': server, 'Username': user, 'Secret': secret}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    class Helper:
        def __init__(self):
            self.secrets: dict = {}

        def save(self):
            store.write_text(json.dumps(self.secrets))

        def calls(self) -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

    found = Helper()
    found.save()
    return found


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def basic_image(basic_registry):
    pusher = Pusher(
        basic_registry.url, auth=(basic_registry.username, basic_registry.password)
    )
    layers = [make_layer({"etc/creds": b"basic\n"})]
    record = push_recorded(pusher, "creds/basic", "1", layers, make_config(layers))
    return record | {"name": f"{basic_registry.host}/creds/basic:1"}


@pytest.fixture(scope="module")
def token_image(token_registry):
    pusher = Pusher(
        token_registry.url,
        auth=(token_registry.username, token_registry.password),
        verify=token_registry.ca_cert,
    )
    layers = [make_layer({"etc/creds": b"token\n"})]
    record = push_recorded(pusher, "private/creds", "1", layers, make_config(layers))
    return record | {"name": f"{token_registry.host}/private/creds:1"}


def config_digest(name: str, **options) -> str:
    image = dgetkit.resolve(name, options=Options(**options))
    return str(image.config.digest)


# -- config.json against the Basic-auth registry -------------------------------------

GOOD, BAD = "good", "bad"

# (id, config.json (HOST, GOOD/BAD filled in), helper secrets, ok?)
BASIC_CASES = [
    ("auths-base64-by-host", {"auths": {"HOST": {"auth": GOOD}}}, {}, True),
    ("auths-key-as-url", {"auths": {"http://HOST/v1/": {"auth": GOOD}}}, {}, True),
    ("auths-wrong-password", {"auths": {"HOST": {"auth": BAD}}}, {}, False),
    ("auths-for-another-host", {"auths": {"127.0.0.1:1": {"auth": GOOD}}}, {}, False),
    ("cred-helper", {"credHelpers": {"HOST": HELPER_NAME}}, {"HOST": GOOD}, True),
    ("creds-store", {"credsStore": HELPER_NAME}, {"HOST": GOOD}, True),
    (
        "cred-helper-wins-over-auths",
        {"credHelpers": {"HOST": HELPER_NAME}, "auths": {"HOST": {"auth": BAD}}},
        {"HOST": GOOD},
        True,
    ),
    (
        "auths-used-when-the-helper-is-for-another-host",
        {"credHelpers": {"other:5000": HELPER_NAME}, "auths": {"HOST": {"auth": GOOD}}},
        {},
        True,
    ),
    ("creds-store-has-nothing", {"credsStore": HELPER_NAME}, {}, False),
    ("no-config-entries", {}, {}, False),
]


def _fill(value, host: str, user: str, password: str):
    """Put the registry host and credentials into a case's template."""
    if isinstance(value, dict):
        return {
            _fill(k, host, user, password): _fill(v, host, user, password)
            for k, v in value.items()
        }
    if value == GOOD:
        return basic_auth(user, password)
    if value == BAD:
        return basic_auth(user, "wrong")
    return value.replace("HOST", host) if isinstance(value, str) else value


@pytest.mark.parametrize(
    "config, secrets, ok", [c[1:] for c in BASIC_CASES], ids=[c[0] for c in BASIC_CASES]
)
def test_docker_config_with_basic_auth(
    basic_registry, basic_image, docker_config, helper, config, secrets, ok
):
    host, user, password = (
        basic_registry.host,
        basic_registry.username,
        basic_registry.password,
    )
    docker_config(_fill(config, host, user, password))
    helper.secrets = {k.replace("HOST", host): [user, password] for k in secrets}
    helper.save()
    if ok:
        assert config_digest(basic_image["name"]) == basic_image["config_digest"]
    else:
        with pytest.raises(AuthenticationError):
            config_digest(basic_image["name"])
    if secrets or "credsStore" in config:
        assert helper.calls() == [f"get {host}"]


def test_helper_missing_from_path_says_which(
    basic_registry, basic_image, docker_config
):
    docker_config({"credHelpers": {basic_registry.host: "nothere"}})
    with pytest.raises(AuthenticationError, match="docker-credential-nothere"):
        config_digest(basic_image["name"])


def test_explicit_arguments_win_over_the_file(
    basic_registry, basic_image, docker_config
):
    user, password = basic_registry.username, basic_registry.password
    docker_config({"auths": {basic_registry.host: {"auth": basic_auth(user, "wrong")}}})
    name = basic_image["name"]
    assert (
        config_digest(name, username=user, password=password)
        == basic_image["config_digest"]
    )
    docker_config(
        {"auths": {basic_registry.host: {"auth": basic_auth(user, password)}}}
    )
    with pytest.raises(AuthenticationError):
        config_digest(name, username=user, password="wrong")


@pytest.mark.parametrize(
    "where", ["docker-config", "home"], ids=["DOCKER_CONFIG", "HOME"]
)
def test_docker_config_folder_is_honoured(
    basic_registry, basic_image, docker_config, monkeypatch, where
):
    user, password = basic_registry.username, basic_registry.password
    good = {"auths": {basic_registry.host: {"auth": basic_auth(user, password)}}}
    bad = {"auths": {basic_registry.host: {"auth": basic_auth(user, "wrong")}}}
    if where == "home":
        monkeypatch.delenv("DOCKER_CONFIG")
        docker_config(good, docker_config.home / ".docker")
    else:
        docker_config(good)
        docker_config(bad, docker_config.home / ".docker")
    assert config_digest(basic_image["name"]) == basic_image["config_digest"]


def test_environment_credentials_win_over_the_file(
    basic_registry, basic_image, docker_config, monkeypatch
):
    user = basic_registry.username
    docker_config({"auths": {basic_registry.host: {"auth": basic_auth(user, "wrong")}}})
    monkeypatch.setenv("DGETKIT_USERNAME", user)
    monkeypatch.setenv("DGETKIT_PASSWORD", basic_registry.password)
    assert config_digest(basic_image["name"]) == basic_image["config_digest"]


def test_a_whole_pull_through_a_helper(
    basic_registry, basic_image, docker_config, helper, tmp_path, loader_dir
):
    from tests.support.loaders import podman_load

    docker_config({"credHelpers": {basic_registry.host: HELPER_NAME}})
    helper.secrets = {
        basic_registry.host: [basic_registry.username, basic_registry.password]
    }
    helper.save()
    result = dgetkit.pull(
        basic_image["name"], tmp_path / "b.tar", progress=False, cache=False
    )
    assert result.image_id == basic_image["config_digest"]
    assert podman_load(result.path, loader_dir) == [basic_image["name"]]


# -- Docker Hub's key ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["docker.io", "index.docker.io", "registry-1.docker.io"]
)
def test_docker_hub_key_is_found_for_every_hub_name(docker_config, name):
    docker_config(
        {"auths": {DOCKER_HUB_CONFIG_KEY: {"auth": basic_auth("hubuser", "pw")}}}
    )
    found = find_credentials(name)
    assert (found.username, found.password) == ("hubuser", "pw")


def test_docker_hub_helper_is_asked_for_the_hub_key(docker_config, helper):
    docker_config({"credsStore": HELPER_NAME})
    helper.secrets = {DOCKER_HUB_CONFIG_KEY: ["hubuser", "pw"]}
    helper.save()
    found = find_credentials("docker.io")
    assert (found.username, found.password) == ("hubuser", "pw")
    assert helper.calls() == [f"get {DOCKER_HUB_CONFIG_KEY}"]


def test_docker_hub_key_used_against_a_stand_in_hub(
    basic_registry, basic_image, docker_config, monkeypatch
):
    """Docker Hub references go to the hub host; the stand-in needs Basic auth."""
    monkeypatch.setattr(registry_module, "DOCKER_HUB_API", basic_registry.host)
    auth = basic_auth(basic_registry.username, basic_registry.password)
    docker_config({"auths": {DOCKER_HUB_CONFIG_KEY: {"auth": auth}}})
    image = dgetkit.resolve("docker.io/creds/basic:1", options=Options(retries=0))
    assert str(image.config.digest) == basic_image["config_digest"]


# -- config.json against the token registry ------------------------------------------


@pytest.mark.parametrize("source", ["auths", "cred-helper"])
def test_token_registry_with_docker_login(
    token_registry, token_image, token_server, docker_config, helper, source
):
    host = token_registry.host
    user, password = token_registry.username, token_registry.password
    if source == "auths":
        docker_config({"auths": {host: {"auth": basic_auth(user, password)}}})
    else:
        docker_config({"credHelpers": {host: HELPER_NAME}})
        helper.secrets = {host: [user, password]}
        helper.save()
    ca = str(token_registry.ca_cert)
    assert (
        config_digest(token_image["name"], ca_cert=ca) == token_image["config_digest"]
    )
    asked = token_server.token_requests("private/creds")
    assert asked and all(r.user == user for r in asked)


def test_token_registry_without_login_is_refused(
    token_registry, token_image, docker_config
):
    docker_config({})
    with pytest.raises(AuthenticationError, match="docker login"):
        config_digest(token_image["name"], ca_cert=str(token_registry.ca_cert))


def test_secrets_never_reach_logs_or_transcript(
    token_registry, token_image, docker_config, caplog
):
    caplog.set_level(logging.DEBUG)
    password = token_registry.password
    docker_config(
        {
            "auths": {
                token_registry.host: {
                    "auth": basic_auth(token_registry.username, password)
                }
            }
        }
    )
    with dgetkit.record() as transcript:
        config_digest(token_image["name"], ca_cert=str(token_registry.ca_cert))
    text = transcript.frame().to_string() + caplog.text
    assert password not in text
    assert basic_auth(token_registry.username, password) not in text
    assert "Bearer <redacted>" in set(transcript.frame().authorization)


# -- identity tokens (OAuth2 refresh tokens) ------------------------------------------


class _OAuthHandler(tokenserver._TokenHandler):
    """The token handler plus Docker's OAuth2 form: POST with a refresh token."""

    def do_POST(self) -> None:
        server = self.server.token_server
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        server.posted.append(form)
        user = server.refresh_tokens.get(form.get("refresh_token"))
        if form.get("grant_type") != "refresh_token" or user is None:
            self._send(401, {"error": "invalid_grant"})
            return
        self._send(200, server.issue(user, form.get("scope", "").split()))


class OAuthTokenServer(TokenServer):
    """A token server that also accepts identity tokens, as Docker Hub does."""

    def __init__(self, folder, **kwargs):
        super().__init__(folder, **kwargs)
        self.refresh_tokens = {"refresh-for-alice": "alice"}
        self.posted: list[dict] = []

    def start(self):
        with mock.patch.object(tokenserver, "_TokenHandler", _OAuthHandler):
            return super().start()


@pytest.fixture(scope="module")
def oauth_registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oauth-registry")
    server = OAuthTokenServer(folder / "token")
    with server, RegistryServer(folder / "registry", token_server=server) as registry:
        pusher = Pusher(registry.url, auth=("alice", server.users["alice"]))
        layers = [make_layer({"etc/creds": b"identity token\n"})]
        registry.record = push_recorded(
            pusher, "private/oauth", "1", layers, make_config(layers)
        )
        yield registry


@pytest.mark.parametrize(
    "token, ok",
    [("refresh-for-alice", True), ("stolen", False)],
    ids=["valid", "wrong"],
)
def test_identity_token_from_docker_config(oauth_registry, docker_config, token, ok):
    server = oauth_registry.token_server
    server.posted.clear()
    docker_config(
        {"auths": {oauth_registry.host: {"auth": "", "identitytoken": token}}}
    )
    name = f"{oauth_registry.host}/private/oauth:1"
    if ok:
        assert config_digest(name) == oauth_registry.record["config_digest"]
    else:
        with pytest.raises(AuthenticationError):
            config_digest(name)
    assert server.posted, "the identity token was not sent as an OAuth2 refresh token"
    assert {p["grant_type"] for p in server.posted} == {"refresh_token"}
    assert all(p["refresh_token"] == token for p in server.posted)
    assert all("repository:private/oauth:pull" in p["scope"] for p in server.posted)


# -- private CAs -----------------------------------------------------------------------


def _certs_dir(tmp_path: Path, host: str, ca: Path) -> Path:
    folder = tmp_path / "certs.d"
    (folder / host).mkdir(parents=True)
    (folder / host / "ca.crt").write_bytes(ca.read_bytes())
    return folder


# (id, how the CA is given, verified?)
CA_CASES = [
    ("no-ca", "none", False),
    ("ca-cert-argument", "argument", True),
    ("certs-d-option", "certs_dir", True),
    ("certs-d-environment", "environment", True),
    ("certs-d-other-host-only", "other-host", False),
]


@pytest.mark.parametrize(
    "how, verified", [c[1:] for c in CA_CASES], ids=[c[0] for c in CA_CASES]
)
def test_private_ca(token_registry, token_image, tmp_path, monkeypatch, how, verified):
    host, ca = token_registry.host, Path(token_registry.ca_cert)
    monkeypatch.setenv("DGETKIT_USERNAME", token_registry.username)
    monkeypatch.setenv("DGETKIT_PASSWORD", token_registry.password)
    monkeypatch.delenv("DGETKIT_CERTS_DIR", raising=False)
    options = {"certs_dir": str(tmp_path / "empty")}
    if how == "argument":
        options = {"ca_cert": str(ca)}
    elif how == "certs_dir":
        options = {"certs_dir": str(_certs_dir(tmp_path, host, ca))}
    elif how == "environment":
        monkeypatch.setenv("DGETKIT_CERTS_DIR", str(_certs_dir(tmp_path, host, ca)))
        options = {}
    elif how == "other-host":
        options = {
            "certs_dir": str(_certs_dir(tmp_path, f"127.0.0.1:{free_port()}", ca))
        }
    if verified:
        assert (
            config_digest(token_image["name"], **options)
            == token_image["config_digest"]
        )
        return
    with pytest.raises(TLSVerificationError) as caught:
        config_digest(token_image["name"], **options)
    assert "--ca-cert" in str(caught.value)
    assert host in str(caught.value)


def test_cli_ca_cert(token_registry, token_image, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DGETKIT_USERNAME", token_registry.username)
    monkeypatch.setenv("DGETKIT_PASSWORD", token_registry.password)
    out = tmp_path / "p.tar"
    args = ["pull", token_image["name"], "-o", str(out), "--no-progress", "--no-cache"]
    assert cli.main(args) == 1
    assert "--ca-cert" in capsys.readouterr().err
    assert cli.main(args + ["--ca-cert", str(token_registry.ca_cert)]) == 0
    assert out.stat().st_size > 0
