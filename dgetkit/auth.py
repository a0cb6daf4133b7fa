"""Registry authentication: challenges, credentials and bearer tokens.

A registry says how it wants to be spoken to in the ``WWW-Authenticate`` header
of its 401 answers (https://distribution.github.io/distribution/spec/auth/token/):
``Basic`` means send the user's password on every request; ``Bearer`` means fetch
a token from the ``realm`` URL for the ``service`` and ``scope`` and send that.

Credentials are looked up, first found wins: explicit arguments, the
``DGETKIT_USERNAME`` / ``DGETKIT_PASSWORD`` environment variables, then Docker's
``config.json`` (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``):
``credHelpers``, ``auths`` and ``credsStore``, the way ``docker login`` left them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import AuthenticationError, DgetkitError

log = logging.getLogger("dgetkit")

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: Tokens are renewed this many seconds before the registry would refuse them.
TOKEN_EXPIRY_MARGIN = 10
#: Registries that send no ``expires_in`` mean 60 seconds (the token spec).
DEFAULT_TOKEN_LIFETIME = 60
HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lower case) and parameters."""

    scheme: str
    params: dict = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or an identity (refresh) token.

    The secret never appears in ``repr`` or ``str``.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""

    def __bool__(self) -> bool:
        return bool((self.username and self.password) or self.identity_token)

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` values into challenges.

    Parameters may come in any order; quoted strings may hold commas and
    backslash escapes; several challenges may share one header value.
    """
    challenges = []
    for value in values:
        challenges.extend(_parse_header(value))
    return challenges


def _parse_header(text: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    pos, end = 0, len(text)
    while pos < end:
        pos = _skip(text, pos, " \t,")
        token, pos = _token(text, pos)
        if not token:
            break
        pos = _skip(text, pos, " \t")
        if pos < end and text[pos] == "=" and challenges:
            value, pos = _value(text, _skip(text, pos + 1, " \t"))
            challenges[-1].params[token.lower()] = value
        else:
            challenges.append(Challenge(token.lower(), {}))
    return challenges


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in ' \t,="':
        pos += 1
    return text[start:pos], pos


def _value(text: str, pos: int) -> tuple[str, int]:
    if pos >= len(text) or text[pos] != '"':
        return _token(text, pos)
    out, pos = [], pos + 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and pos + 1 < len(text):
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos + 1


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer if offered, else Basic."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


# -- where credentials come from ---------------------------------------------------


def find_credentials(
    host: str, username: str | None = None, password: str | None = None
) -> Credentials:
    """Credentials for registry ``host`` from arguments, environment or Docker config.

    Parameters
    ----------
    host : str
        The registry as users name it (``docker.io``, ``ghcr.io``, ``host:5000``).
    username, password : str, optional
        Explicit credentials; they win over everything else.
    """
    if username or password:
        if not (username and password):
            raise AuthenticationError(
                "give both a user name and a password (or token), not only one"
            )
        return Credentials(username, password, source="arguments")
    env_user = os.environ.get("DGETKIT_USERNAME")
    env_password = os.environ.get("DGETKIT_PASSWORD")
    if env_user and env_password:
        return Credentials(env_user, env_password, source="environment")
    return from_docker_config(host)


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    folder = os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker"
    return Path(folder) / "config.json"


def from_docker_config(host: str) -> Credentials:
    """Credentials ``docker login`` stored for ``host``; empty if there are none."""
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return Credentials()
    except (OSError, ValueError) as err:
        raise DgetkitError(
            f"cannot read Docker's credentials file {path}: {err}; fix or move it, "
            "or set DOCKER_CONFIG to another folder"
        ) from err
    keys = _config_keys(host)
    helper = _lookup(config.get("credHelpers") or {}, keys)
    if helper:
        return _from_helper(helper, keys[0])
    if config.get("credsStore"):
        # Docker asks the store first; ``auths`` then only holds what it lacks.
        creds = _from_helper(config["credsStore"], keys[0])
        if creds:
            return creds
    entry = _lookup(config.get("auths") or {}, keys)
    return _from_auth_entry(entry, path) if entry else Credentials()


def _config_keys(host: str) -> list[str]:
    """The names under which ``config.json`` may file ``host``, preferred first."""
    if host in _DOCKER_HUB_ALIASES:
        return [DOCKER_HUB_CONFIG_KEY, *_DOCKER_HUB_ALIASES]
    return [host]


def _lookup(mapping: dict, keys: list[str]):
    normalized = {_strip_url(k): v for k, v in mapping.items()}
    for key in keys:
        if key in mapping:
            return mapping[key]
        if _strip_url(key) in normalized:
            return normalized[_strip_url(key)]
    return None


def _strip_url(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``, as Docker matches config keys."""
    if "://" in key:
        return urlsplit(key).netloc
    return key.split("/", 1)[0]


def _from_auth_entry(entry: dict, path: Path) -> Credentials:
    if entry.get("identitytoken"):
        return Credentials(identity_token=entry["identitytoken"], source=str(path))
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError as err:
            raise DgetkitError(
                f"an 'auth' entry in {path} is not base64 of 'user:password'; run "
                "'docker login' again"
            ) from err
        return Credentials(user, password, source=str(path))
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source=str(path))
    return Credentials()


def _from_helper(name: str, server: str) -> Credentials:
    """Run ``docker-credential-<name> get`` with the server on stdin."""
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        raise AuthenticationError(
            f"Docker's config names the credential helper {name!r}, but "
            f"docker-credential-{name} is not on PATH; install it, or pass "
            "credentials with --username/--password-stdin"
        )
    try:
        done = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise AuthenticationError(f"credential helper {name!r} failed: {err}") from err
    if done.returncode != 0:
        # Helpers answer "credentials not found" with a non-zero exit.
        log.debug("credential helper %s has nothing for %s", name, server)
        return Credentials()
    try:
        answer = json.loads(done.stdout)
    except ValueError as err:
        raise AuthenticationError(
            f"credential helper {name!r} printed something that is not JSON"
        ) from err
    user, secret = answer.get("Username", ""), answer.get("Secret", "")
    if user == "<token>":
        return Credentials(identity_token=secret, source=f"helper {name}")
    return Credentials(user, secret, source=f"helper {name}")


# -- bearer tokens -----------------------------------------------------------------


@dataclass
class Token:
    value: str = field(repr=False)
    expires_at: float

    @property
    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at - TOKEN_EXPIRY_MARGIN


class TokenStore:
    """Bearer tokens per scope, fetched on demand and renewed before they expire.

    Parameters
    ----------
    fetch : callable
        ``fetch(method, url, **requests_kwargs) -> requests.Response``: the
        registry client's own HTTP call (retries, TLS settings, transcript).
    credentials : Credentials
    """

    def __init__(self, fetch, credentials: Credentials):
        self._fetch = fetch
        self._credentials = credentials
        self._tokens: dict[tuple, Token] = {}
        self._lock = threading.Lock()

    def header(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        """``Authorization`` value for ``scopes``, fetching a token if needed."""
        if challenge.scheme == "basic":
            if not self._credentials or not self._credentials.username:
                raise AuthenticationError(
                    "this registry needs a user name and password: pass --username "
                    "and --password-stdin, set DGETKIT_USERNAME/DGETKIT_PASSWORD, or "
                    "run 'docker login'"
                )
            return self._credentials.basic_header()
        key = (challenge.realm, challenge.params.get("service", ""), scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is None or not token.fresh:
                token = self._request(challenge, scopes)
                self._tokens[key] = token
        return f"Bearer {token.value}"

    def forget(self, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        """Drop the cached token so the next :meth:`header` fetches a new one."""
        key = (challenge.realm, challenge.params.get("service", ""), scopes)
        with self._lock:
            self._tokens.pop(key, None)

    def _request(self, challenge: Challenge, scopes: tuple[str, ...]) -> Token:
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(
                f"the registry's token realm {realm!r} is not an http(s) URL"
            )
        service = challenge.params.get("service")
        creds = self._credentials
        if creds.identity_token:
            response = self._oauth(realm, service, scopes)
        else:
            params = [("scope", s) for s in scopes]
            if service:
                params.insert(0, ("service", service))
            headers = {}
            if creds:
                params.append(("account", creds.username))
                headers["Authorization"] = creds.basic_header()
            response = self._fetch("GET", realm, params=params, headers=headers)
        return _read_token(response, bool(creds))

    def _oauth(self, realm: str, service: str | None, scopes: tuple[str, ...]):
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._credentials.identity_token,
            "client_id": "dgetkit",
            "scope": " ".join(scopes),
        }
        if service:
            form["service"] = service
        return self._fetch("POST", realm, data=form)


def _read_token(response, had_credentials: bool) -> Token:
    if response.status_code in (401, 403):
        hint = (
            "check the user name and password"
            if had_credentials
            else "this image may be private: log in with --username/--password-stdin "
            "or 'docker login'"
        )
        raise AuthenticationError(
            f"the registry's token service refused access ({response.status_code}); "
            + hint,
            status=response.status_code,
        )
    if response.status_code != 200:
        raise AuthenticationError(
            f"the registry's token service answered {response.status_code}; try "
            "again later",
            status=response.status_code,
        )
    try:
        body = response.json()
    except ValueError as err:
        raise AuthenticationError(
            "the registry's token service did not answer with JSON"
        ) from err
    value = body.get("token") or body.get("access_token")
    if not value:
        raise AuthenticationError("the registry's token service sent no token")
    lifetime = max(int(body.get("expires_in") or 0), DEFAULT_TOKEN_LIFETIME)
    return Token(value, time.monotonic() + lifetime)
