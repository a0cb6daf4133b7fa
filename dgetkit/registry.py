"""A client for the Registry HTTP API v2: the *source* side of a pull.

It speaks to one registry host: finds out how to authenticate from the
registry's own ``/v2/`` answer, retries what is worth retrying, and hands out
manifests as bytes and blobs as streams. It knows nothing of archives.
Protocol: https://github.com/opencontainers/distribution-spec/blob/main/spec.md
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from . import transcript
from .auth import (
    Challenge,
    Credentials,
    TokenStore,
    find_credentials,
    parse_challenges,
    pick_challenge,
)
from .digest import Digest, Verifier
from .errors import (
    AuthenticationError,
    BlobNotFound,
    ContentTooLarge,
    InvalidOption,
    ManifestNotFound,
    RateLimited,
    RegistryError,
    RegistryUnreachable,
    RepositoryNotFound,
    TLSVerificationError,
)
from .manifest import MANIFEST_ACCEPT
from .reference import DOCKER_HUB, DOCKER_HUB_API, is_loopback

log = logging.getLogger("dgetkit")

#: (connect, read) seconds before a silent connection counts as failed.
DEFAULT_TIMEOUT = (15.0, 60.0)
#: Attempts after the first for connection errors and retryable statuses.
DEFAULT_RETRIES = 5
#: Statuses worth asking again for: the registry or a proxy is busy or broken.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
#: Backoff: BACKOFF_FACTOR * 2**(n-1) seconds, at most BACKOFF_MAX.
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 20.0
#: A ``Retry-After`` longer than this is cut to it.
RETRY_AFTER_MAX = 60.0
#: Manifests and configs are read into memory; anything larger is refused.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: Docker's per-registry CA folder: ``<dir>/<host:port>/ca.crt``.
DEFAULT_CERTS_DIR = "/etc/docker/certs.d"
USER_AGENT = "dgetkit/0.1 (+python-requests)"
_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


def sleep(seconds: float) -> None:
    """Every wait between retries goes through here, so tests can skip it."""
    time.sleep(seconds)


@dataclass(frozen=True)
class Options:
    """How to reach registries: credentials, TLS, mirrors, timeouts, retries.

    Parameters
    ----------
    username, password : str, optional
        Credentials; otherwise looked up as :mod:`dgetkit.auth` describes.
    insecure : bool
        Allow plain HTTP and unverified TLS for every registry (loopback
        registries may use plain HTTP anyway).
    ca_cert : str, optional
        A PEM file of CA certificates to verify registries with.
    certs_dir : str
        Docker's layout of per-registry CAs, ``<dir>/<host:port>/ca.crt``.
    mirrors : tuple of str
        Registry mirrors for Docker Hub images, tried in order before Docker Hub.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    ca_cert: str | None = None
    certs_dir: str = field(
        default_factory=lambda: os.environ.get("DGETKIT_CERTS_DIR", DEFAULT_CERTS_DIR)
    )
    mirrors: tuple[str, ...] = ()
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    def __post_init__(self):
        if isinstance(self.mirrors, str):
            object.__setattr__(self, "mirrors", (self.mirrors,))
        object.__setattr__(self, "mirrors", tuple(self.mirrors or ()))
        if self.ca_cert and not Path(self.ca_cert).is_file():
            raise InvalidOption(
                f"the CA certificate file {self.ca_cert} does not exist"
            )
        if self.retries < 0:
            raise InvalidOption("retries must be 0 or more")


OPTION_NAMES = tuple(f.name for f in fields(Options))


def connection(options: Options | None = None, **settings) -> Options:
    """The :class:`Options` for keyword connection settings.

    Parameters
    ----------
    options : Options, optional
        Ready-made options; then no other settings may be given.
    **settings
        ``username``, ``password``, ``insecure``, ``ca_cert``, ``mirrors``,
        ``timeout``, ``retries``: the fields of :class:`Options`.

    Examples
    --------
    >>> connection(insecure=True).insecure
    True
    """
    if options is not None and settings:
        raise InvalidOption(
            "give connection settings as options= or as keywords, not both"
        )
    if options is not None:
        return options
    unknown = sorted(set(settings) - set(OPTION_NAMES))
    if unknown:
        raise InvalidOption(
            f"unknown connection setting {', '.join(unknown)}; the settings are "
            f"{', '.join(OPTION_NAMES)}"
        )
    return Options(**settings)


class RetryPolicy(Retry):
    """urllib3's retry, with one INFO line per retry and a replaceable sleep."""

    def increment(self, method=None, url=None, response=None, error=None, **kw):
        if _is_final(error):  # a typo or nothing listening: no point waiting
            raise MaxRetryError(kw.get("_pool"), url, error)
        new = super().increment(method, url, response, error, **kw)
        why = f"status {response.status}" if response is not None else repr(error)
        log.info("retrying %s %s after %s", method, url, why)
        return new

    def sleep(self, response=None):
        delay = None
        if response is not None and self.respect_retry_after_header:
            delay = self.get_retry_after(response)
        if delay is None:
            delay = self.get_backoff_time()
        else:
            delay = min(delay, RETRY_AFTER_MAX)
        if delay > 0:
            sleep(delay)

    def parse_retry_after(self, retry_after):
        try:
            return super().parse_retry_after(retry_after)
        except Exception:  # noqa: BLE001 - urllib3 raises its own for dates
            parsed = email.utils.parsedate_to_datetime(retry_after)
            return max(0.0, parsed.timestamp() - time.time())


def _is_final(error) -> bool:
    """Errors that another try will not change: no such host, connection refused."""
    if isinstance(error, NameResolutionError):
        return True
    reason = getattr(error, "__context__", None) or getattr(error, "reason", None)
    return isinstance(error, NewConnectionError) and isinstance(
        reason, ConnectionRefusedError
    )


def retry_policy(retries: int) -> RetryPolicy:
    return RetryPolicy(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=10,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


class _NoNetrc(requests.auth.AuthBase):
    """A do-nothing session auth: its presence stops requests reading ``.netrc``."""

    def __call__(self, request):
        return request


class Session(requests.Session):
    """A requests session that never leaks credentials across a redirect.

    ``Authorization`` is dropped whenever a redirect changes scheme, host or
    port, and ``.netrc`` credentials are never added (requests would add them
    for the new host). Proxies from the environment still apply.
    """

    def __init__(self):
        super().__init__()
        self.auth = _NoNetrc()
        self.headers["User-Agent"] = USER_AGENT

    def rebuild_auth(self, prepared_request, response):
        if "Authorization" in prepared_request.headers and _origin(
            response.request.url
        ) != _origin(prepared_request.url):
            del prepared_request.headers["Authorization"]


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname, parts.port or default


def new_session(retries: int) -> Session:
    session = Session()
    adapter = HTTPAdapter(max_retries=retry_policy(retries), pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.hooks["response"].append(_record)
    return session


def _record(response, *args, **kwargs):
    transcript.add(response)
    return response


class RegistryClient:
    """Talks to one registry host.

    Parameters
    ----------
    host : str
        ``host[:port]`` of the registry API (``registry-1.docker.io`` for Hub).
    options : Options
    name : str, optional
        The registry's name as users write it (``docker.io``), for credentials.
    """

    def __init__(
        self,
        host: str,
        options: Options | None = None,
        name: str = "",
        scheme: str | None = None,
    ):
        self.host = host
        self.scheme = scheme
        self.name = name or host
        self.options = options or Options()
        self.session = new_session(self.options.retries)
        # Given per request: a session-wide setting loses to REQUESTS_CA_BUNDLE.
        self.verify = self._verify_setting()
        self.base_url = ""
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()
        self._credentials: Credentials | None = None
        self._tokens: TokenStore | None = None

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r})"

    # -- connecting ----------------------------------------------------------------

    def _verify_setting(self):
        if self.options.ca_cert:
            return self.options.ca_cert
        docker_ca = Path(self.options.certs_dir) / self.host / "ca.crt"
        if docker_ca.is_file():
            return str(docker_ca)
        return not self.options.insecure

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = find_credentials(
                self.name, self.options.username, self.options.password
            )
        return self._credentials

    def ping(self) -> None:
        """Find the scheme and the auth challenge from ``GET /v2/``, once."""
        with self._lock:
            if self.base_url:
                return
            schemes = ["https"]
            if self.options.insecure or is_loopback(self.host):
                schemes.append("http")
            if self.scheme:
                schemes = [self.scheme]
            response = self._first_answer(schemes)
            if response.status_code == 401:
                values = response.raw.headers.getlist("WWW-Authenticate")
                self._challenge = pick_challenge(parse_challenges(values))
                if self._challenge is None:
                    raise AuthenticationError(
                        f"{self.host} asks for authentication with a scheme dgetkit "
                        f"does not speak: {values}",
                        status=401,
                    )
            elif response.status_code >= 400:
                raise RegistryError(
                    f"{self.host} answered {response.status_code} to GET /v2/: it is "
                    "not a Docker/OCI registry, or it is broken",
                    status=response.status_code,
                    method="GET",
                    url=response.url,
                )
            response.close()
            self._tokens = TokenStore(self._send, self.credentials)

    def _first_answer(self, schemes: list[str]):
        error = None
        for scheme in schemes:
            try:
                response = self._send("GET", f"{scheme}://{self.host}/v2/")
            except TLSVerificationError:
                raise
            except RegistryUnreachable as err:
                error = err
                continue
            self.base_url = f"{scheme}://{self.host}"
            return response
        raise error

    def _send(self, method: str, url: str, **kwargs):
        """One HTTP exchange, with retries; network failures become our errors."""
        kwargs.setdefault("timeout", self.options.timeout)
        kwargs.setdefault("verify", self.verify)
        try:
            return self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as err:
            if "CERTIFICATE_VERIFY_FAILED" in str(err) or "certificate" in str(err):
                raise TLSVerificationError(
                    f"the TLS certificate of {urlsplit(url).netloc} could not be "
                    "verified; if the registry uses a private CA pass it with "
                    "--ca-cert FILE (ca_cert=...), or put it in "
                    f"{self.options.certs_dir}/{self.host}/ca.crt"
                ) from err
            raise RegistryUnreachable(
                f"TLS handshake with {urlsplit(url).netloc} failed: {_reason(err)}"
            ) from err
        except requests.exceptions.RetryError as err:
            raise RegistryUnreachable(
                f"{method} {_safe(url)} kept failing after {self.options.retries} "
                f"retries: {_reason(err)}"
            ) from err
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
        ) as err:
            reason = _reason(err)
            hint = (
                "nothing listens there: is the registry running, and the port right?"
                if "refused" in reason.lower()
                else "check the host name, the network and any proxy settings"
            )
            raise RegistryUnreachable(
                f"cannot reach {urlsplit(url).netloc} ({reason}); {hint}"
            ) from err

    # -- authenticated requests ----------------------------------------------------

    def request(self, method: str, path: str, repository: str, **kwargs):
        """A request to this registry with the right ``Authorization``.

        A 401 carrying a challenge (an expired token, a wider scope, a registry
        that only challenges on the repository) fetches a new token and tries
        once more.
        """
        self.ping()
        url = urljoin(self.base_url + "/", path.lstrip("/"))
        scopes = (f"repository:{repository}:pull",)
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            if self._challenge is not None:
                headers["Authorization"] = self._authorization(scopes)
            response = self._send(method, url, headers=headers, **kwargs)
            if response.status_code != 401 or attempt == 2:
                return response
            challenge = pick_challenge(
                parse_challenges(response.raw.headers.getlist("WWW-Authenticate"))
            )
            if challenge is None:
                return response
            response.close()
            if self._challenge is not None:
                self._tokens.forget(self._challenge, scopes)
            scopes = _merge_scopes(scopes, challenge.params.get("scope", ""))
            self._challenge = challenge
        return response

    def _authorization(self, scopes: tuple[str, ...]) -> str:
        try:
            return self._tokens.header(self._challenge, scopes)
        except AuthenticationError:
            forget_client(self)  # a 'docker login' now is seen by the next call
            raise

    def check(self, response, what: str):
        """Raise the matching :class:`RegistryError` for an error answer."""
        if response.status_code < 400:
            return response
        if response.status_code in (401, 403):
            forget_client(self)
        raise registry_error(response, what, self.credentials)

    # -- the endpoints -------------------------------------------------------------

    def get_manifest(
        self, repository: str, identifier: str
    ) -> tuple[bytes, str, Digest]:
        """The manifest's exact bytes, its media type and its digest.

        When ``identifier`` is a digest the bytes are checked against it.
        """
        try:
            raw, headers = self._read_small(
                f"/v2/{repository}/manifests/{identifier}",
                repository,
                f"manifest {_name(repository, identifier)}",
                headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
            )
        except ManifestNotFound as err:
            if not self._repository_exists(repository):
                raise RepositoryNotFound(
                    f"the repository {repository} does not exist on {self.name}; "
                    "check its name",
                    status=err.status,
                    method=err.method,
                    url=err.url,
                    codes=err.codes,
                ) from err
            raise
        if identifier.startswith("sha"):
            verifier = Verifier(
                Digest.parse(identifier), what=f"manifest {repository}@{identifier}"
            )
            verifier.update(raw)
            verifier.verify()
        return raw, headers.get("Content-Type", ""), Digest.of(raw)

    def _repository_exists(self, repository: str) -> bool:
        """Registries often answer MANIFEST_UNKNOWN for a missing repository too."""
        response = self.request(
            "GET", f"/v2/{repository}/tags/list", repository, params={"n": 1}
        )
        with response:
            return response.status_code != 404

    def _read_small(self, path: str, repository: str, what: str, headers=None):
        """A small body in memory; a connection that breaks mid-body is retried."""
        for attempt in range(self.options.retries + 1):
            response = self.request(
                "GET", path, repository, headers=headers, stream=True
            )
            with response:
                self.check(response, what)
                try:
                    return read_limited(
                        response, MAX_MANIFEST_BYTES, what
                    ), response.headers
                except _BODY_ERRORS as err:
                    if attempt == self.options.retries:
                        raise RegistryUnreachable(
                            f"{what} kept breaking off: {_reason(err)}"
                        ) from err
                    log.info("reading %s broke off (%s); retrying", what, _reason(err))
                    sleep(min(BACKOFF_FACTOR * 2**attempt, BACKOFF_MAX))
        raise AssertionError("unreachable")

    def head_manifest(self, repository: str, identifier: str):
        """Headers of the manifest (digest, size, rate limit) without a pull."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{identifier}",
            repository,
            headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
        )
        self.check(response, f"manifest {_name(repository, identifier)}")
        return response.headers

    def get_blob(self, repository: str, descriptor) -> bytes:
        """A small blob (a config) in memory, verified against ``descriptor``."""
        what = f"blob {descriptor.digest}"
        if descriptor.size > MAX_MANIFEST_BYTES:
            raise ContentTooLarge(
                f"{what} is {descriptor.size} bytes; dgetkit reads configs of at "
                f"most {MAX_MANIFEST_BYTES} bytes into memory"
            )
        raw, _ = self._read_small(
            f"/v2/{repository}/blobs/{descriptor.digest}", repository, what
        )
        verifier = Verifier(descriptor.digest, descriptor.size, what)
        verifier.update(raw)
        verifier.verify()
        return raw

    def open_blob(self, repository: str, digest: Digest, offset: int = 0):
        """A streaming response for a blob, from ``offset`` if above zero.

        The caller checks a ranged answer: 206 with a matching ``Content-Range``,
        or 200 when the registry ignored the range.
        """
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            repository,
            headers=headers,
            stream=True,
        )
        if response.status_code == 416:
            return response
        return self.check(response, f"blob {digest} of {repository}")

    def open_url(self, url: str, offset: int = 0):
        """A blob from a foreign-layer URL: never with registry credentials."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError(f"refusing foreign-layer URL {_safe(url)}: not http(s)")
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._send("GET", url, headers=headers, stream=True)
        if response.status_code >= 400 and response.status_code != 416:
            response.close()
            raise BlobNotFound(
                f"foreign layer URL {_safe(url)} answered {response.status_code}",
                status=response.status_code,
                method="GET",
                url=_safe(url),
            )
        return response

    def tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository``, following ``Link`` pagination."""
        path = f"/v2/{repository}/tags/list"
        params = {"n": page_size} if page_size else None
        found: list[str] = []
        while path:
            response = self.request("GET", path, repository, params=params)
            with response:
                self.check(response, f"tags of {repository}")
                body = response.json()
            found.extend(t for t in body.get("tags") or [] if isinstance(t, str))
            path = _next_link(response.headers.get("Link", ""))
            params = None
        return found


def _name(repository: str, identifier: str) -> str:
    """``repo:tag`` or ``repo@sha256:...``, as users write them."""
    separator = "@" if ":" in identifier else ":"
    return f"{repository}{separator}{identifier}"


def _merge_scopes(scopes: tuple[str, ...], extra: str) -> tuple[str, ...]:
    """Our scopes plus those a challenge asks for (space-separated)."""
    merged = list(scopes)
    merged += [s for s in extra.split() if s not in merged]
    return tuple(merged)


def _next_link(header: str) -> str:
    """The ``rel="next"`` target of a ``Link`` header (RFC 8288), or ''."""
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return part[start + 1 : end]
    return ""


def read_limited(response, limit: int, what: str) -> bytes:
    """The whole body, refusing more than ``limit`` bytes."""
    chunks, total = [], 0
    for chunk in response.iter_content(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise ContentTooLarge(
                f"{what} is larger than {limit} bytes; dgetkit refuses manifests and "
                "configs that large (they are kilobytes in real images)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def registry_error(response, what: str, credentials=None) -> RegistryError:
    """The error that best explains an error answer."""
    status = response.status_code
    codes, message = _error_body(response)
    kwargs = {
        "status": status,
        "method": response.request.method,
        "url": _safe(response.url),
        "codes": codes,
    }
    detail = f" ({message})" if message else ""
    if status in (401, 403):
        hint = (
            "check the credentials and that this account may pull it"
            if credentials
            else "it may be private or may not exist: log in with --username and "
            "--password-stdin, or 'docker login'"
        )
        return AuthenticationError(
            f"access to {what} was denied ({status}){detail}; {hint}", **kwargs
        )
    if status == 404:
        if "NAME_UNKNOWN" in codes:
            return RepositoryNotFound(
                f"{what}: the repository does not exist{detail}; check its name",
                **kwargs,
            )
        if "BLOB_UNKNOWN" in codes or "/blobs/" in response.url:
            return BlobNotFound(
                f"{what} is missing from the registry{detail}", **kwargs
            )
        hint = (
            "check the digest"
            if "@" in what
            else "check the tag ('dgetkit tags REPOSITORY' lists them)"
        )
        return ManifestNotFound(f"{what} was not found{detail}; {hint}", **kwargs)
    if status == 429:
        return RateLimited(
            f"the registry kept refusing {what} with 429 Too Many Requests{detail}; "
            "wait a while, or log in to get a higher limit",
            **kwargs,
        )
    return RegistryError(
        f"the registry answered {status} for {what}{detail}; try again later",
        **kwargs,
    )


def _error_body(response) -> tuple[list[str], str]:
    try:
        errors = response.json().get("errors") or []
        codes = [str(e.get("code", "")) for e in errors]
        message = "; ".join(str(e.get("message", "")) for e in errors if e)
        return codes, message
    except Exception:  # noqa: BLE001 - an HTML page from a proxy, an empty body
        return [], ""


def _safe(url: str) -> str:
    return transcript.redact_url(url)


def _reason(err: Exception) -> str:
    """The innermost reason of a requests/urllib3 exception, briefly."""
    inner = err
    while inner.args and isinstance(inner.args[0], Exception):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None) or inner
    return str(reason).split(": ", 1)[-1][:200]


class MirroredClient:
    """Docker Hub through mirrors: each mirror in order, then Docker Hub itself.

    It offers the same reading methods as :class:`RegistryClient`. Blobs are
    verified by digest whoever serves them; the transcript shows which host
    answered.
    """

    def __init__(self, clients: list[RegistryClient]):
        self.clients = clients
        self.host = clients[-1].host
        self.name = clients[-1].name

    def _first(self, method: str, *args, **kwargs):
        misses = []
        for client in self.clients[:-1]:
            try:
                return getattr(client, method)(*args, **kwargs)
            except (RegistryError, RegistryUnreachable) as err:
                log.info("mirror %s failed (%s); trying the next", client.host, err)
                misses.append(f"mirror {client.host}: {err}")
        try:
            return getattr(self.clients[-1], method)(*args, **kwargs)
        except (RegistryError, RegistryUnreachable) as err:
            if misses:
                err.args = (f"{err} (after the mirrors failed: {'; '.join(misses)})",)
            raise

    def get_manifest(self, *args, **kwargs):
        return self._first("get_manifest", *args, **kwargs)

    def head_manifest(self, *args, **kwargs):
        return self._first("head_manifest", *args, **kwargs)

    def get_blob(self, *args, **kwargs):
        return self._first("get_blob", *args, **kwargs)

    def open_blob(self, *args, **kwargs):
        return self._first("open_blob", *args, **kwargs)

    def open_url(self, *args, **kwargs):
        return self.clients[-1].open_url(*args, **kwargs)

    def tags(self, *args, **kwargs):
        return self._first("tags", *args, **kwargs)


def mirror_client(url: str, options: Options) -> RegistryClient:
    """A client for a mirror given as ``host[:port]`` or ``http(s)://host[:port]``."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if not parts.netloc or parts.scheme not in ("", "http", "https"):
        raise InvalidOption(
            f"{url!r} is not a mirror URL: expected https://host[:port]"
        )
    return RegistryClient(
        parts.netloc, options, name=parts.netloc, scheme=parts.scheme or None
    )


# -- one client per registry, shared by every call in the process -----------------

_clients: dict[tuple, RegistryClient] = {}
_clients_lock = threading.Lock()


def client_for(registry: str, options: Options | None = None):
    """The shared client for ``registry`` (a name such as ``docker.io``).

    Sharing keeps tokens and connections alive across notebook calls. Docker
    Hub with mirrors configured gets a :class:`MirroredClient`.
    """
    options = options or Options()
    key = (registry, options)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(registry, options)
        return client


def _new_client(registry: str, options: Options):
    if registry != DOCKER_HUB:
        return RegistryClient(registry, options, name=registry)
    hub = RegistryClient(DOCKER_HUB_API, options, name=DOCKER_HUB)
    if not options.mirrors:
        return hub
    return MirroredClient([mirror_client(m, options) for m in options.mirrors] + [hub])


def forget_client(client) -> None:
    """Drop ``client`` from the shared ones, so credentials are looked up anew."""
    with _clients_lock:
        for key in [k for k, v in _clients.items() if v is client]:
            del _clients[key]
