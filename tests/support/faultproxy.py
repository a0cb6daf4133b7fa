"""A fault-injecting HTTP/1.1 reverse proxy for a registry on 127.0.0.1.

Requests pass through to the upstream registry unchanged (``Range``
included; ``Location`` headers are rewritten to point back at the proxy)
unless a rule matches. A rule pairs a method and a path pattern with a
:class:`Fault` and fires for its first ``times`` matching requests::

    proxy.add(reset_after(1000), path=BLOB_PATH, times=2)
    proxy.add(status(429, {"Retry-After": "1"}), path=MANIFEST_PATH)

The proxy counts the blob body bytes it sends per path and records every
request (method, path, header names, ``Range``, status, fault), so a test
can check what a client asked for and what it got.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import struct
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BLOB_PATH = r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$"
MANIFEST_PATH = r"^/v2/.+/manifests/[^/]+$"
UPLOAD_PATH = r"^/v2/.+/blobs/uploads/"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
CHUNK_SIZE = 64 * 1024
UPSTREAM_TIMEOUT = 60
POLL_INTERVAL = 0.05
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# -- faults -------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """What to do to a matching request; build one with the functions below."""

    kind: str
    nbytes: int | None = None
    code: int | None = None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    offset: int | None = None
    seconds: float | None = None
    target: BlobServer | None = None

    @property
    def needs_range(self) -> bool:
        """Only requests that carry a ``Range`` header match range faults."""
        return self.kind in ("ignore_range", "range_416")


def reset_after(nbytes: int) -> Fault:
    """Send the headers and ``nbytes`` of body, then reset the connection (RST)."""
    return Fault("reset_after", nbytes=nbytes)


def status(code: int, headers: dict | None = None, body: bytes = b"") -> Fault:
    """Answer ``code`` without asking upstream.

    Examples
    --------
    >>> status(429, {"Retry-After": "2"}).code
    429
    """
    return Fault("status", code=code, headers=dict(headers or {}), body=body)


def truncate(nbytes: int) -> Fault:
    """Announce the full ``Content-Length`` but close after ``nbytes`` of body."""
    return Fault("truncate", nbytes=nbytes)


def flip(offset: int) -> Fault:
    """Invert the body byte at ``offset`` (the digest check must catch it)."""
    return Fault("flip", offset=offset)


def chunked() -> Fault:
    """Drop ``Content-Length`` and send the body with chunked transfer coding."""
    return Fault("chunked")


def slow(seconds: float) -> Fault:
    """Wait ``seconds`` before answering (longer than a client's read timeout)."""
    return Fault("slow", seconds=seconds)


def redirect(to_server: BlobServer) -> Fault:
    """Answer 307 to a copy of the blob on ``to_server`` (which refuses auth)."""
    return Fault("redirect", target=to_server)


def ignore_range() -> Fault:
    """Answer a ``Range`` request with 200 and the whole body."""
    return Fault("ignore_range")


def range_416() -> Fault:
    """Answer a ``Range`` request with 416 Range Not Satisfiable."""
    return Fault("range_416")


@dataclass
class Rule:
    """A fault bound to a method and a path pattern, for ``times`` requests."""

    fault: Fault
    path: re.Pattern
    method: str | None = "GET"
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str, headers) -> bool:
        """Say whether this rule applies to a request (ignores ``times``)."""
        if self.method and method != self.method:
            return False
        if self.fault.needs_range and "Range" not in headers:
            return False
        return bool(self.path.search(path))


@dataclass
class ProxiedRequest:
    """One request as the proxy saw and answered it (no header values kept)."""

    method: str
    path: str
    header_names: frozenset
    range: str | None
    status: int | None = None
    fault: str | None = None
    body_bytes: int = 0

    @property
    def had_authorization(self) -> bool:
        """Whether the client sent an ``Authorization`` header."""
        return "authorization" in self.header_names


def _record(handler) -> ProxiedRequest:
    return ProxiedRequest(
        method=handler.command,
        path=handler.path,
        header_names=frozenset(name.lower() for name in handler.headers),
        range=handler.headers.get("Range"),
    )


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname in LOCAL_HOSTS


# -- the shared server plumbing -------------------------------------------------


class _Server(ThreadingHTTPServer):
    """A threaded server that can cut its open connections on shutdown."""

    daemon_threads = True

    def __init__(self, handler, owner):
        self.owner = owner
        self.open_sockets = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request, client_address):
        with self.lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up mid-answer are what the faults are for: stay quiet."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self.lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Serving:
    """Start/stop of a :class:`_Server` in a background thread."""

    handler = None

    def start(self):
        """Listen on a free port of 127.0.0.1 in a background thread."""
        self._server = _Server(self.handler, self)
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections and close the socket."""
        self.stopping.set()
        server, self._server = getattr(self, "_server", None), None
        if server is None:
            return
        server.shutdown()
        server.cut_connections()
        server.server_close()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, format, *args) -> None:
        """Stay quiet; tests read the recorded requests instead."""

    def send_bytes(self, code: int, headers: dict, body: bytes) -> None:
        self.send_response_only(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# -- the redirect target ----------------------------------------------------------


class BlobServer(_Serving):
    """Serves blob copies like a storage backend behind a registry redirect.

    It answers 400 to any request carrying ``Authorization`` (as S3 does when a
    presigned URL also gets a header) and sets :attr:`auth_seen`. ``Range``
    requests get 206.

    Parameters
    ----------
    location_host : str
        Host name put in redirect URLs; ``"localhost"`` makes the redirect
        cross-host for clients that compare host names.
    """

    def __init__(self, *, location_host: str = "127.0.0.1"):
        if location_host not in LOCAL_HOSTS:
            raise ValueError(f"location_host must be one of {LOCAL_HOSTS}")
        self.location_host = location_host
        self.blobs: dict[str, bytes] = {}
        self.requests: list[ProxiedRequest] = []
        self.auth_seen = False
        self.stopping = threading.Event()
        self.handler = _BlobHandler

    def put(self, data: bytes, name: str = "blob") -> str:
        """Store ``data`` under a fresh path and return its URL."""
        path = f"/storage/{uuid.uuid4().hex}/{name.replace(':', '-')}"
        self.blobs[path] = data
        return f"http://{self.location_host}:{self.port}{path}"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or not (match[1] or match[2]):
        return None
    if not match[1]:
        return max(0, size - int(match[2])), size - 1
    end = int(match[2]) if match[2] else size - 1
    return int(match[1]), min(end, size - 1)


class _BlobHandler(_QuietHandler):
    def do_GET(self) -> None:
        owner = self.server.owner
        record = _record(self)
        owner.requests.append(record)
        code, headers, body = self._answer(owner)
        record.status, record.body_bytes = code, len(body)
        self.send_bytes(code, headers, body)

    do_HEAD = do_GET

    def _answer(self, owner) -> tuple[int, dict, bytes]:
        if "Authorization" in self.headers:
            owner.auth_seen = True
            return 400, {"Content-Type": "text/plain"}, b"only one auth mechanism\n"
        data = owner.blobs.get(self.path.split("?")[0])
        if data is None:
            return 404, {}, b""
        wanted = self.headers.get("Range")
        span = _parse_range(wanted, len(data)) if wanted else None
        if span is None or span[0] >= len(data):
            return 200, {"Accept-Ranges": "bytes"}, data
        start, end = span
        content_range = f"bytes {start}-{end}/{len(data)}"
        return 206, {"Content-Range": content_range}, data[start : end + 1]


# -- the proxy ----------------------------------------------------------------------


class FaultProxy(_Serving):
    """A reverse proxy to ``upstream_url`` that injects faults on request.

    Parameters
    ----------
    upstream_url : str
        ``http://127.0.0.1:PORT`` of the registry; other hosts are refused.

    Attributes
    ----------
    url, host : str
        Where clients connect (``http://127.0.0.1:PORT``).
    requests : list of ProxiedRequest
    bytes_sent : dict
        Blob body bytes sent to clients, per request path.

    Examples
    --------
    >>> with FaultProxy(registry.url) as proxy:  # doctest: +SKIP
    ...     proxy.add(status(503), path=MANIFEST_PATH, times=2)
    ...     pull(proxy.host + "/multi/oci:1")
    """

    def __init__(self, upstream_url: str):
        if not _is_local(upstream_url):
            raise ValueError(
                f"the fault proxy only forwards to 127.0.0.1: {upstream_url}"
            )
        parts = urlsplit(upstream_url)
        if parts.scheme != "http":
            raise ValueError(f"the upstream must be plain HTTP: {upstream_url}")
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_host = parts.netloc
        self.rules: list[Rule] = []
        self.requests: list[ProxiedRequest] = []
        self.bytes_sent: dict[str, int] = {}
        self.stopping = threading.Event()
        self.handler = _ProxyHandler
        self._lock = threading.Lock()

    def add(self, fault: Fault, *, path=BLOB_PATH, method="GET", times=1) -> Rule:
        """Apply ``fault`` to the first ``times`` requests matching method and path.

        ``path`` is a regular expression searched in the request path (query
        included); ``method=None`` matches every method.
        """
        rule = Rule(fault=fault, path=re.compile(path), method=method, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove all rules and forget requests and byte counts."""
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.bytes_sent.clear()

    def take_rule(self, method: str, path: str, headers) -> Rule | None:
        """Return the first live rule for a request and count the hit."""
        with self._lock:
            for rule in self.rules:
                if rule.hits < rule.times and rule.matches(method, path, headers):
                    rule.hits += 1
                    return rule
        return None

    def count_body(self, path: str, nbytes: int) -> None:
        """Add ``nbytes`` of a blob body sent on ``path`` to :attr:`bytes_sent`."""
        with self._lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + nbytes

    def blob_bytes(self, digests=None) -> int:
        """Return the blob body bytes sent to clients, configs included.

        With ``digests`` only blobs with those digests count (e.g. a
        record's ``layer_digests`` to leave the config out).
        """
        with self._lock:
            counts = dict(self.bytes_sent)
        if digests is not None:
            wanted = {f"/blobs/{digest}" for digest in digests}
            counts = {
                p: n for p, n in counts.items() if p[p.rfind("/blobs/") :] in wanted
            }
        return sum(counts.values())

    def requests_to(self, pattern: str, method: str | None = None) -> list:
        """Return the recorded requests whose path matches ``pattern``."""
        regex = re.compile(pattern)
        return [
            r
            for r in list(self.requests)
            if regex.search(r.path) and (method is None or r.method == method)
        ]

    def rewrite_location(self, location: str) -> str:
        """Point an upstream ``Location`` back at the proxy."""
        return location.replace(self.upstream_url, self.url, 1)

    def upstream(self) -> http.client.HTTPConnection:
        """Open a connection to the upstream registry."""
        return http.client.HTTPConnection(self.upstream_host, timeout=UPSTREAM_TIMEOUT)


class _LimitedReader:
    """Reads at most ``remaining`` bytes of a request body from the client."""

    def __init__(self, stream, remaining: int):
        self.stream = stream
        self.remaining = remaining

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.stream.read(size) if size else b""
        self.remaining -= len(data)
        return data


class _ProxyHandler(_QuietHandler):
    def _serve(self) -> None:
        proxy = self.server.owner
        record = _record(self)
        proxy.requests.append(record)
        rule = proxy.take_rule(self.command, self.path, self.headers)
        fault = rule.fault if rule else Fault("none")
        record.fault = rule.fault.kind if rule else None
        if fault.kind == "slow" and proxy.stopping.wait(fault.seconds):
            self.close_connection = True
            return
        answers = {
            "status": self._answer_status,
            "range_416": self._answer_416,
            "redirect": self._answer_redirect,
            "ignore_range": self._forward_without_range,
        }
        answers.get(fault.kind, self._forward)(proxy, record, fault)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    # -- faults answered without streaming ---------------------------------------

    def _answer_status(self, proxy, record, fault) -> None:
        self._discard_body()
        record.status = fault.code
        self.send_bytes(fault.code, fault.headers, fault.body)

    def _answer_416(self, proxy, record, fault) -> None:
        size = self._upstream_size(proxy)
        record.status = 416
        headers = {"Content-Range": f"bytes */{size if size is not None else '*'}"}
        self.send_bytes(416, headers, b"")

    def _answer_redirect(self, proxy, record, fault) -> None:
        response, data = self._fetch(proxy, drop=("range",))
        if response.status != 200:
            record.status = response.status
            self.send_bytes(response.status, {}, data)
            return
        location = fault.target.put(data, self.path.rsplit("/", 1)[-1])
        record.status = 307
        self.send_bytes(307, {"Location": location}, b"")

    def _upstream_size(self, proxy) -> int | None:
        connection = proxy.upstream()
        try:
            headers = self._upstream_headers(proxy, drop=("range",))
            connection.request("HEAD", self.path, headers=headers)
            length = connection.getresponse().getheader("Content-Length")
        finally:
            connection.close()
        return int(length) if length else None

    def _fetch(self, proxy, drop=()) -> tuple[http.client.HTTPResponse, bytes]:
        connection = proxy.upstream()
        try:
            headers = self._upstream_headers(proxy, drop)
            connection.request("GET", self.path, headers=headers)
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    # -- forwarding ----------------------------------------------------------------

    def _forward_without_range(self, proxy, record, fault) -> None:
        self._forward(proxy, record, fault, drop=("range",))

    def _upstream_headers(self, proxy, drop=()) -> dict:
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in drop
        }
        headers["Host"] = proxy.upstream_host
        return headers

    def _request_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return _LimitedReader(self.rfile, length) if length else None

    def _read_chunked_body(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _discard_body(self) -> None:
        body = self._request_body()
        if isinstance(body, _LimitedReader):
            while body.read(CHUNK_SIZE):
                pass

    def _forward(self, proxy, record, fault, drop=()) -> None:
        connection = proxy.upstream()
        try:
            body = self._request_body()
            headers = self._upstream_headers(proxy, drop)
            if isinstance(body, bytes):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            record.status = response.status
            self._relay(proxy, record, fault, response)
        finally:
            connection.close()

    def _relay(self, proxy, record, fault, response) -> None:
        length = response.getheader("Content-Length")
        use_chunks = fault.kind == "chunked" or (
            length is None
            and self.command != "HEAD"
            and response.status not in (204, 304)
        )
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            self._relay_header(proxy, name, value, use_chunks)
        if use_chunks:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command != "HEAD" and response.status not in (204, 304):
            self._stream(proxy, record, fault, response, use_chunks)

    def _relay_header(self, proxy, name, value, use_chunks) -> None:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or (use_chunks and lowered == "content-length"):
            return
        if lowered == "location":
            value = proxy.rewrite_location(value)
        self.send_header(name, value)

    def _stream(self, proxy, record, fault, response, use_chunks) -> None:
        limit = fault.nbytes if fault.kind in ("reset_after", "truncate") else None
        counted = self.command == "GET" and "/blobs/sha256:" in self.path
        complete = True
        for chunk in _chunks(response):
            if chunk is None:
                complete = False
                break
            chunk = _flipped(chunk, record.body_bytes, fault.offset)
            if limit is not None:
                chunk = chunk[: max(0, limit - record.body_bytes)]
            # Count before writing: a client may check the counts as soon
            # as its last byte arrives.
            record.body_bytes += len(chunk)
            if counted:
                proxy.count_body(self.path, len(chunk))
            self._write(chunk, use_chunks)
            if limit is not None and record.body_bytes >= limit:
                complete = False
                break
        self._finish_body(fault, use_chunks, complete)

    def _write(self, chunk: bytes, use_chunks: bool) -> None:
        if not chunk:
            return
        if use_chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        else:
            self.wfile.write(chunk)

    def _finish_body(self, fault, use_chunks, complete) -> None:
        if fault.kind == "reset_after":
            self._reset()
        elif not complete:
            self.close_connection = True
        elif use_chunks:
            self.wfile.write(b"0\r\n\r\n")

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the client gets a TCP RST, not a FIN."""
        self.wfile.flush()
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        # detach() frees the descriptor even while rfile/wfile still refer
        # to the socket object, so the close happens now.
        os.close(self.connection.detach())
        self.close_connection = True


def _chunks(response: http.client.HTTPResponse):
    """Yield body chunks; a final ``None`` means upstream ended early."""
    while True:
        try:
            chunk = response.read(CHUNK_SIZE)
        except (http.client.IncompleteRead, OSError):
            yield None
            return
        if not chunk:
            return
        yield chunk


def _flipped(chunk: bytes, start: int, offset: int | None) -> bytes:
    if offset is None or not start <= offset < start + len(chunk):
        return chunk
    position = offset - start
    return chunk[:position] + bytes([chunk[position] ^ 0xFF]) + chunk[position + 1 :]
