"""WWW-Authenticate parsing and where credentials come from."""

import base64
import json

import pytest

from dgetkit.auth import (
    Credentials,
    find_credentials,
    parse_challenges,
    pick_challenge,
)
from dgetkit.errors import AuthenticationError

CHALLENGES = [
    (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
        "bearer",
        {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"},
    ),
    (
        'Bearer service="svc", scope="repository:a/b:pull,push", realm="https://r/t"',
        "bearer",
        {"realm": "https://r/t", "service": "svc", "scope": "repository:a/b:pull,push"},
    ),
    ('Bearer realm="https://r/t"', "bearer", {"realm": "https://r/t"}),
    ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
    (
        'BEARER Realm="https://r/t",error="invalid_token"',
        "bearer",
        {"realm": "https://r/t", "error": "invalid_token"},
    ),
    (
        r'Bearer realm="https://r/t",service="a \"quoted\" name"',
        "bearer",
        {"realm": "https://r/t", "service": 'a "quoted" name'},
    ),
    (
        "Bearer realm=https://r/t,service=plain",
        "bearer",
        {"realm": "https://r/t", "service": "plain"},
    ),
]


@pytest.mark.parametrize(
    "header, scheme, params", CHALLENGES, ids=[str(i) for i in range(len(CHALLENGES))]
)
def test_parse_challenge(header, scheme, params):
    (challenge,) = parse_challenges([header])
    assert challenge.scheme == scheme
    assert challenge.params == params


def test_several_challenges_prefer_bearer():
    found = parse_challenges(['Basic realm="x", Bearer realm="https://t",service="s"'])
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert pick_challenge(found).realm == "https://t"
    assert pick_challenge(parse_challenges(["Negotiate abc"])) is None


def test_credentials_hide_their_secret():
    creds = Credentials("alice", "s3cret-value")
    assert "s3cret-value" not in repr(creds)
    assert (
        creds.basic_header()
        == "Basic " + base64.b64encode(b"alice:s3cret-value").decode()
    )


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DGETKIT_USERNAME", raising=False)
    monkeypatch.delenv("DGETKIT_PASSWORD", raising=False)

    def write(config):
        (tmp_path / "config.json").write_text(json.dumps(config))

    return write


def _auth(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_config_auths(docker_config):
    docker_config(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _auth("hub", "pw1")},
                "reg.example:5000": {"auth": _auth("me", "pw:with:colons")},
                "https://other.example/v2/": {"identitytoken": "refresh"},
            }
        }
    )
    assert find_credentials("docker.io").username == "hub"
    assert find_credentials("reg.example:5000").password == "pw:with:colons"
    assert find_credentials("other.example").identity_token == "refresh"
    assert not find_credentials("nowhere.example")


def test_explicit_and_environment_win(docker_config, monkeypatch):
    docker_config({"auths": {"reg.example": {"auth": _auth("file", "f")}}})
    assert find_credentials("reg.example", "arg", "a").username == "arg"
    monkeypatch.setenv("DGETKIT_USERNAME", "env")
    monkeypatch.setenv("DGETKIT_PASSWORD", "e")
    assert find_credentials("reg.example").username == "env"
    with pytest.raises(AuthenticationError, match="both"):
        find_credentials("reg.example", "only-user", None)


def test_missing_helper_says_what_to_do(docker_config):
    docker_config({"credsStore": "no-such-helper-xyz"})
    with pytest.raises(
        AuthenticationError, match="docker-credential-no-such-helper-xyz"
    ):
        find_credentials("reg.example")
