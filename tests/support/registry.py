"""A real ``docker-registry`` (distribution 2.8.2) process for the tests.

The registry listens on 127.0.0.1 on a free port and keeps its storage,
configuration and log in one folder. It can speak TLS (with a test CA made
here), ask for tokens from a :class:`~tests.support.tokenserver.TokenServer`,
ask for Basic credentials from an htpasswd file, or act as a pull-through
mirror of another registry.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 40

# The registry checks every URL in a pushed manifest's descriptors against
# these patterns; an unset list refuses any manifest that carries ``urls``.
# https://github.com/distribution/distribution/blob/v2.8.2/docs/configuration.md#validation
DEFAULT_URL_PATTERNS = ("^https?://",)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now.

    Examples
    --------
    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_pem(path: Path, data: bytes) -> Path:
    """Write PEM bytes to ``path`` and return the path."""
    path.write_bytes(data)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = builder.not_valid_before(now - datetime.timedelta(hours=1))
    return builder.not_valid_after(now + datetime.timedelta(days=2))


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A throw-away CA that issues server certificates for 127.0.0.1.

    Parameters
    ----------
    folder : path-like
        Where ``ca.pem`` and the issued certificates and keys are written.

    Examples
    --------
    >>> ca = CertificateAuthority(tmp_path)  # doctest: +SKIP
    >>> cert, key = ca.issue("registry")  # doctest: +SKIP
    >>> requests.get(url, verify=ca.cert_path)  # doctest: +SKIP
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._self_sign()
        self.cert_path = write_pem(
            self.folder / "ca.pem",
            self._cert.public_bytes(serialization.Encoding.PEM),
        )

    def _self_sign(self) -> x509.Certificate:
        builder = _validity(x509.CertificateBuilder())
        builder = builder.subject_name(_name("dgetkit test CA"))
        builder = builder.issuer_name(_name("dgetkit test CA"))
        builder = builder.public_key(self._key.public_key())
        builder = builder.serial_number(x509.random_serial_number())
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
        return builder.sign(self._key, hashes.SHA256())

    def issue(self, name: str) -> tuple[Path, Path]:
        """Issue a server certificate for 127.0.0.1 and ``localhost``.

        Returns
        -------
        tuple of Path
            The certificate PEM and the private key PEM, named after ``name``.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName(
            [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]
        )
        builder = _validity(x509.CertificateBuilder())
        builder = builder.subject_name(_name(name)).issuer_name(self._cert.subject)
        builder = builder.public_key(key.public_key())
        builder = builder.serial_number(x509.random_serial_number())
        builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path = write_pem(
            self.folder / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)
        )
        return cert_path, write_pem(self.folder / f"{name}-key.pem", _key_pem(key))


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """Write a bcrypt htpasswd file for ``users`` with ``htpasswd -Bbn``."""
    lines = []
    for user, password in users.items():
        done = subprocess.run(
            ["htpasswd", "-Bbn", user, password],
            check=True,
            capture_output=True,
            text=True,
        )
        lines.append(done.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return path


class RegistryServer:
    """A ``docker-registry serve`` process on 127.0.0.1.

    Parameters
    ----------
    folder : path-like
        Holds ``config.yml``, ``storage/`` and ``registry.log``.
    tls : bool
        Serve HTTPS with a certificate from ``ca`` (or a new CA in ``folder``).
    ca : CertificateAuthority, optional
        The CA to issue the server certificate from (share it with a token
        server so one ``ca_cert`` verifies both).
    token_server : TokenServer, optional
        Require Bearer tokens issued by this (already started) token server.
    htpasswd : dict, optional
        Require HTTP Basic credentials, one ``{user: password}`` entry each.
    url_patterns : sequence of str or None
        Regular expressions that foreign-layer ``urls`` in pushed manifests
        must match; ``None`` turns manifest validation off entirely.
    proxy_remote : str, optional
        Act as a pull-through mirror of the registry at this URL.

    Examples
    --------
    >>> with RegistryServer(tmp_path) as registry:  # doctest: +SKIP
    ...     requests.get(registry.url + "/v2/").status_code
    200
    """

    def __init__(
        self,
        folder,
        *,
        tls: bool = False,
        ca: CertificateAuthority | None = None,
        token_server=None,
        htpasswd: dict[str, str] | None = None,
        url_patterns=DEFAULT_URL_PATTERNS,
        proxy_remote: str | None = None,
    ):
        if token_server is not None and htpasswd is not None:
            raise ValueError("choose token_server or htpasswd auth, not both")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.ca = (ca or CertificateAuthority(self.folder / "ca")) if tls else None
        self.ca_cert = self.ca.cert_path if self.ca else None
        self.token_server = token_server
        self.htpasswd = dict(htpasswd) if htpasswd else None
        self.url_patterns = url_patterns
        self.proxy_remote = proxy_remote
        self.log_path = self.folder / "registry.log"
        self.config_path = self.folder / "config.yml"
        self._process = None
        self._tls_files = None

    @property
    def users(self) -> dict[str, str]:
        """The ``{user: password}`` pairs this registry (or its token server) knows."""
        if self.token_server is not None:
            return dict(self.token_server.users)
        return dict(self.htpasswd or {})

    @property
    def username(self) -> str | None:
        """The first user of :attr:`users` (one who may push), if any."""
        return next(iter(self.users), None)

    @property
    def password(self) -> str | None:
        """The password of :attr:`username`."""
        return self.users.get(self.username)

    @property
    def verify(self):
        """What to pass as ``verify=`` to :mod:`requests` for this registry."""
        return str(self.ca_cert) if self.ca_cert else True

    def config(self) -> dict:
        """Return the registry configuration as a dict (written as YAML-compatible JSON)."""
        storage = self.folder / "storage"
        config = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        config["validation"] = self._validation()
        self._add_tls(config["http"])
        self._add_auth(config)
        if self.proxy_remote:
            config["proxy"] = {"remoteurl": self.proxy_remote}
        return config

    def _validation(self) -> dict:
        if self.url_patterns is None:
            return {"disabled": True}
        return {"manifests": {"urls": {"allow": list(self.url_patterns)}}}

    def _add_tls(self, http: dict) -> None:
        if self._tls_files is None:
            return
        cert, key = self._tls_files
        http["tls"] = {"certificate": str(cert), "key": str(key)}

    def _add_auth(self, config: dict) -> None:
        if self.token_server is not None:
            config["auth"] = {"token": self.token_server.registry_auth_config()}
        elif self.htpasswd is not None:
            path = htpasswd_file(self.folder / "htpasswd", self.htpasswd)
            config["auth"] = {"htpasswd": {"realm": "dgetkit-test", "path": str(path)}}

    def start(self) -> RegistryServer:
        """Start the process and wait until ``GET /v2/`` answers 200 or 401."""
        if shutil.which(REGISTRY_BINARY) is None:
            raise FileNotFoundError(f"{REGISTRY_BINARY} is not installed")
        if self.ca is not None and self._tls_files is None:
            self._tls_files = self.ca.issue(f"registry-{self.port}")
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"docker-registry on {self.url} did not start "
            f"(exit code {self._process.poll()}); log tail:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            response = requests.get(self.url + "/v2/", verify=self.verify, timeout=1)
        except requests.RequestException:
            return False
        return response.status_code in (200, 401)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the registry's log."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the process (kill it if it does not exit in time)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RegistryServer({self.url!r})"
