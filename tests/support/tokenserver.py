"""A Docker token server (the ``auth.token`` realm) written for the tests.

It implements the token protocol a registry points clients to in its
``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` challenge:
``GET /token?service=…&scope=repository:NAME:ACTIONS`` with optional HTTP
Basic credentials. Tokens are RS256 JWTs the registry verifies against the
certificate written to :attr:`TokenServer.rootcert`.

https://distribution.github.io/distribution/spec/auth/token/
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import math
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_USERS = {"alice": "wonderland"}
DEFAULT_SERVICE = "dgetkit-test-registry"
DEFAULT_ISSUER = "dgetkit-test-token-server"
DEFAULT_EXPIRES_IN = 300
PRIVATE_PREFIX = "private/"

# distribution 2.8.2 accepts a token until 60 s after its ``exp`` (clock skew
# leeway), so ``exp`` is set that much earlier for ``expires_in`` to hold.
# https://github.com/distribution/distribution/blob/v2.8.2/registry/auth/token/token.go
REGISTRY_LEEWAY = 60
TOKEN_KEYS = ("token", "access_token")


def libtrust_key_id(public_key) -> str:
    """Return the libtrust fingerprint the registry uses as a JWT ``kid``.

    It is the base32 form of the first 30 bytes of the SHA-256 of the DER
    SubjectPublicKeyInfo, without padding, in groups of four joined by ``:``.

    Examples
    --------
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> kid = libtrust_key_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    >>> len(kid.split(":"))
    12
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    encoded = encoded.rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _signing_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEFAULT_ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name)
    builder = builder.public_key(key.public_key())
    builder = builder.serial_number(x509.random_serial_number())
    builder = builder.not_valid_before(now - datetime.timedelta(hours=1))
    builder = builder.not_valid_after(now + datetime.timedelta(days=2))
    return builder.sign(key, hashes.SHA256())


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """Split ``repository:NAME:pull,push`` into type, name and actions.

    Examples
    --------
    >>> parse_scope("repository:private/x:pull,push")
    ('repository', 'private/x', ['pull', 'push'])
    >>> parse_scope("nonsense") is None
    True
    """
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [action for action in actions.split(",") if action]


@dataclass
class TokenRequest:
    """One request the token server answered (never with the password)."""

    method: str
    path: str
    query: dict[str, list[str]]
    has_credentials: bool
    user: str | None
    status: int
    scopes: list[str] = field(default_factory=list)


class TokenServer:
    """A threaded HTTP(S) token server on 127.0.0.1.

    Parameters
    ----------
    folder : path-like
        Where the signing certificate (``rootcert.pem``) is written.
    users : dict, optional
        ``{user: password}``; defaults to ``{"alice": "wonderland"}``.
    expires_in : int
        Token lifetime in seconds; change the attribute at any time (see
        :meth:`configured`).
    token_keys : sequence of str
        Which JSON keys carry the token: ``"token"``, ``"access_token"`` or both.
    ca : CertificateAuthority, optional
        Serve HTTPS with a certificate issued by this CA.

    Examples
    --------
    >>> with TokenServer(tmp_path) as server:  # doctest: +SKIP
    ...     answer = requests.get(server.realm, params={"service": server.service,
    ...                           "scope": "repository:lib/x:pull"}).json()
    """

    def __init__(
        self,
        folder,
        *,
        users: dict[str, str] | None = None,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        expires_in: int = DEFAULT_EXPIRES_IN,
        token_keys=TOKEN_KEYS,
        ca=None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.token_keys = tuple(token_keys)
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = libtrust_key_id(self._key.public_key())
        self.rootcert = self._write_rootcert()
        self._ssl_context = self._make_ssl_context(ca)
        self._server = None
        self._thread = None
        self.url = None

    def _write_rootcert(self) -> Path:
        path = self.folder / "rootcert.pem"
        cert = _signing_certificate(self._key)
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def _make_ssl_context(self, ca) -> ssl.SSLContext | None:
        if ca is None:
            return None
        cert, key = ca.issue("token-server")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    @property
    def realm(self) -> str:
        """The URL the registry sends clients to for tokens."""
        return f"{self.url}/token"

    def registry_auth_config(self) -> dict:
        """Return the registry's ``auth.token`` configuration section."""
        return {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": str(self.rootcert),
        }

    def start(self) -> TokenServer:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        self._server = _TokenHTTPServer(("127.0.0.1", 0), _TokenHandler, self)
        if self._ssl_context is not None:
            self._server.socket = self._ssl_context.wrap_socket(
                self._server.socket,
                server_side=True,
                do_handshake_on_connect=False,
            )
        scheme = "https" if self._ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="token-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @contextlib.contextmanager
    def configured(self, **changes):
        """Change attributes such as ``expires_in`` for a ``with`` block only.

        Examples
        --------
        >>> with server.configured(expires_in=2):  # doctest: +SKIP
        ...     pull_slowly()
        """
        saved = {name: getattr(self, name) for name in changes}
        for name, value in changes.items():
            setattr(self, name, value)
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def token_requests(self, scope_contains: str = "") -> list[TokenRequest]:
        """Return the recorded requests with a scope containing the text."""
        with self._lock:
            recorded = list(self.requests)
        if not scope_contains:
            return recorded
        return [r for r in recorded if any(scope_contains in s for s in r.scopes)]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def record(self, request: TokenRequest) -> None:
        """Append one request to :attr:`requests` (thread-safe)."""
        with self._lock:
            self.requests.append(request)

    def authenticate(self, username: str | None, password: str | None) -> bool:
        """Say whether the credentials are absent-but-fine or correct."""
        if username is None:
            return True
        expected = self.users.get(username)
        if expected is None:
            return False
        return secrets.compare_digest(expected.encode(), password.encode())

    def allowed_actions(self, user: str | None, kind: str, name: str, wanted) -> list:
        """Apply the test policy to one scope and return the granted actions."""
        if kind == "registry":
            return list(wanted) if user else []
        if kind != "repository":
            return []
        if name.startswith(PRIVATE_PREFIX) and user is None:
            return []
        return [action for action in wanted if action == "pull" or user]

    def issue(self, user: str | None, scopes: list[str]) -> dict:
        """Sign a token for ``user`` with the granted part of ``scopes``."""
        now = time.time()
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": math.ceil(now) + self.expires_in - REGISTRY_LEEWAY,
            "nbf": int(now) - 1,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
            "access": self._access(user, scopes),
        }
        token = jwt.encode(
            claims, self._key, algorithm="RS256", headers={"kid": self.kid}
        )
        answer = {key: token for key in self.token_keys}
        answer["expires_in"] = self.expires_in
        answer["issued_at"] = datetime.datetime.fromtimestamp(
            now, datetime.timezone.utc
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        return answer

    def _access(self, user, scopes) -> list[dict]:
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            actions = self.allowed_actions(user, kind, name, wanted)
            if actions:
                access.append({"type": kind, "name": name, "actions": actions})
        return access


class _TokenHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, token_server):
        self.token_server = token_server
        super().__init__(address, handler)


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format, *args) -> None:
        """Stay quiet; the test reads :attr:`TokenServer.requests` instead."""

    def do_GET(self) -> None:
        server = self.server.token_server
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        username, password = self._credentials()
        status, body = self._answer(server, url.path, query, username, password)
        server.record(
            TokenRequest(
                method="GET",
                path=url.path,
                query=query,
                has_credentials=username is not None,
                user=username if status == 200 else None,
                status=status,
                scopes=query.get("scope", []),
            )
        )
        self._send(status, body)

    def _answer(self, server, path, query, username, password):
        if path != "/token":
            return 404, {"errors": [{"code": "NOT_FOUND", "message": path}]}
        if not server.authenticate(username, password):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]}
        return 200, server.issue(username, query.get("scope", []))

    def _credentials(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            decoded = base64.b64decode(value.strip()).decode()
        except ValueError:
            return "", ""  # unreadable credentials fail like a wrong password
        username, _, password = decoded.partition(":")
        return username, password

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="dgetkit-test"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
