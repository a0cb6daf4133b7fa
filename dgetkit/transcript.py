"""A record of every HTTP exchange, for teaching how a pull works.

Use :func:`record` as a context manager; every request any registry client
makes inside it (from any thread) becomes an :class:`Exchange`. Secrets never
reach it: ``Authorization`` is not recorded at all, token bodies are not
recorded, and query strings that may carry signatures are replaced by
``<redacted>``.

Examples
--------
>>> with record() as transcript:          # doctest: +SKIP
...     dgetkit.layers("alpine")
>>> transcript.frame()                     # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
#: Query parameters whose values are safe to show (everything else is redacted).
_SAFE_QUERY = {"service", "scope", "n", "last", "digest", "account"}

_active: list[Transcript] = []
_lock = threading.Lock()


@dataclass
class Exchange:
    """One HTTP request and its answer."""

    method: str
    url: str
    status: int
    media_type: str
    bytes: int | None
    milliseconds: float
    redirect_to: str = ""
    authorization: str = ""
    time: float = 0.0


class Transcript:
    """The exchanges recorded while a :func:`record` block ran."""

    def __init__(self):
        self.exchanges: list[Exchange] = []

    def frame(self):
        """The exchanges as a pandas DataFrame, one row per request."""
        import pandas as pd

        rows = [asdict(e) for e in self.exchanges]
        columns = [
            "method",
            "url",
            "status",
            "media_type",
            "bytes",
            "milliseconds",
            "redirect_to",
            "authorization",
        ]
        frame = pd.DataFrame(rows, columns=columns + ["time"])
        return frame[columns]

    def __len__(self) -> int:
        return len(self.exchanges)


@contextmanager
def record():
    """Record every registry HTTP exchange made inside the ``with`` block."""
    transcript = Transcript()
    with _lock:
        _active.append(transcript)
    try:
        yield transcript
    finally:
        with _lock:
            _active.remove(transcript)


def add(response) -> None:
    """Record a ``requests`` response; each hop of a redirect is its own row."""
    if not _active:
        return
    request = response.request
    location = response.headers.get("Location") if response.is_redirect else None
    scheme = ""
    if request.headers.get("Authorization"):
        scheme = request.headers["Authorization"].split(" ", 1)[0] + " " + REDACTED
    length = response.headers.get("Content-Length")
    exchange = Exchange(
        method=request.method,
        url=redact_url(response.url),
        status=response.status_code,
        media_type=response.headers.get("Content-Type", "").split(";")[0],
        bytes=int(length) if length and length.isdigit() else None,
        milliseconds=round(response.elapsed.total_seconds() * 1000, 1),
        redirect_to=redact_url(location) if location else "",
        authorization=scheme,
        time=time.time(),
    )
    with _lock:
        for transcript in _active:
            transcript.exchanges.append(exchange)


def redact_url(url: str) -> str:
    """``url`` with the values of unknown query parameters replaced.

    Presigned storage URLs carry their credentials in the query string.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, v if k in _SAFE_QUERY else REDACTED)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = urlencode(pairs, safe="<>:/")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
