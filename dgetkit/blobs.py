"""Reading one blob from a registry as a verified, resumable stream.

:class:`BlobStream` is a readable file object. It hashes every byte, writes the
bytes it downloads to the cache's part file, and when the connection breaks it
asks again from where it stopped (``Range: bytes=N-``, on the registry URL, so
an expired storage redirect is renewed). At the end it checks size and digest.
A part file left by an earlier, interrupted run is read first and continued.
"""

from __future__ import annotations

import io
import logging
import re

import requests
import urllib3

from . import registry as _registry
from .digest import Verifier
from .errors import BlobNotFound, DgetkitError, RegistryError, RegistryUnreachable

log = logging.getLogger("dgetkit")

#: Bytes asked of the socket at a time: large, so hashing and zlib release the GIL.
CHUNK_SIZE = 1 << 20
#: How many times one blob may break mid-stream and be continued.
DEFAULT_RESUMES = 8

_NETWORK_ERRORS = (
    urllib3.exceptions.HTTPError,
    requests.exceptions.RequestException,
    ConnectionError,
    TimeoutError,
)


class Cancelled(DgetkitError):
    """The pull was cancelled (another layer failed, or the user interrupted)."""


class RestartBlob(DgetkitError):
    """The registry cannot continue this blob; it must be fetched from zero."""


class BlobStream(io.RawIOBase):
    """The bytes of ``descriptor`` from ``repository``, verified as they pass.

    Parameters
    ----------
    client : RegistryClient or MirroredClient
    repository : str
    descriptor : Descriptor
    part : file, optional
        The cache's part file opened for appending; downloaded bytes go there.
    part_path : path, optional
        The same file, to read back bytes an earlier run left.
    on_bytes : callable, optional
        Called with the count of every chunk, for progress.
    cancel : threading.Event, optional
        Set by another thread to stop this stream at the next chunk.
    """

    def __init__(
        self,
        client,
        repository,
        descriptor,
        *,
        part=None,
        part_path=None,
        on_bytes=None,
        cancel=None,
        resumes=DEFAULT_RESUMES,
    ):
        super().__init__()
        self.client = client
        self.repository = repository
        self.descriptor = descriptor
        self.verifier = Verifier(
            descriptor.digest, descriptor.size, f"blob {descriptor.digest}"
        )
        self._part = part
        self._on_bytes = on_bytes or (lambda n: None)
        self._cancel = cancel
        self._resumes_left = resumes
        self._buffer = memoryview(b"")
        self._chunks = self._generate(part_path)
        self.resumed_from = 0
        self.downloaded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def drain(self) -> None:
        """Read to the end, so the digest covers every byte of the blob."""
        drain(self)

    # -- the chunk generator -------------------------------------------------------

    def _generate(self, part_path):
        offset = self._part.tell() if self._part is not None else 0
        response, offset = self._open_continuing(offset)
        if offset:
            self.resumed_from = offset
            yield from self._replay(part_path, offset)
        while True:
            try:
                yield from self._receive(response)
                break
            except _NETWORK_ERRORS as err:
                response.close()
                response = self._reopen(err)
        self.verifier.verify()

    def _replay(self, part_path, offset):
        """The bytes an earlier run saved, hashed and passed on again."""
        with open(part_path, "rb") as saved:
            remaining = offset
            while remaining:
                chunk = saved.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise RestartBlob("the part file shrank while being read")
                remaining -= len(chunk)
                self.verifier.update(chunk)
                self._on_bytes(len(chunk))
                yield chunk

    def _receive(self, response):
        raw = response.raw
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise Cancelled("the pull was cancelled")
            chunk = raw.read1(CHUNK_SIZE)
            if not chunk:
                return
            self.verifier.update(chunk)
            if self._part is not None:
                self._part.write(chunk)
            self.downloaded += len(chunk)
            self._on_bytes(len(chunk))
            yield chunk

    def _reopen(self, err):
        """Continue after a broken connection, from the byte where it broke."""
        if self._resumes_left <= 0:
            raise RegistryUnreachable(
                f"blob {self.descriptor.digest} kept breaking off ({err}); the "
                "part downloaded so far is kept: run the same pull again to continue"
            ) from err
        attempt = DEFAULT_RESUMES - self._resumes_left
        self._resumes_left -= 1
        offset = self.verifier.count
        log.info(
            "connection broke at byte %d of %s (%s); continuing from there",
            offset,
            self.descriptor.digest,
            type(err).__name__,
        )
        _registry.sleep(min(_registry.BACKOFF_FACTOR * 2**attempt, 10.0))
        response = self._open(offset)
        if response.status_code == 206:
            return response
        if response.status_code == 200:
            log.info("the registry ignored Range; skipping %d bytes", offset)
            _skip(response.raw, offset)
            return response
        response.close()
        raise RestartBlob(
            f"the registry answered {response.status_code} to a ranged request for "
            f"{self.descriptor.digest}"
        )

    def _open_continuing(self, offset):
        """The first response; a part file the registry cannot continue is reset."""
        response = self._open(offset)
        if offset and response.status_code != 206:
            log.info(
                "cannot continue %s from byte %d (answer %d); starting over",
                self.descriptor.digest,
                offset,
                response.status_code,
            )
            response.close()
            self._part.seek(0)
            self._part.truncate()
            offset = 0
            response = self._open(0)
        if response.status_code not in (200, 206):
            response.close()
            raise RegistryError(
                f"blob {self.descriptor.digest} answered {response.status_code}",
                status=response.status_code,
            )
        return response, offset

    def _open(self, offset: int):
        """A response from the registry, or from the layer's ``urls`` if it has them."""
        try:
            response = self.client.open_blob(
                self.repository, self.descriptor.digest, offset
            )
        except BlobNotFound:
            if not self.descriptor.urls:
                raise
            response = self._open_foreign(offset)
        if response.status_code == 206 and not _range_starts_at(response, offset):
            response.close()
            raise RestartBlob(
                f"the registry answered a range that does not start at byte {offset}"
            )
        return response

    def _open_foreign(self, offset: int):
        error = None
        for url in self.descriptor.urls:
            try:
                return self.client.open_url(url, offset)
            except (RegistryError, RegistryUnreachable) as err:
                error = err
        raise error


def drain(stream) -> None:
    """Read ``stream`` to its end; a :class:`BlobStream` then checks its digest."""
    while stream.read(CHUNK_SIZE):
        pass


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _range_starts_at(response, offset: int) -> bool:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return bool(match) and int(match[1]) == offset


def _skip(raw, count: int) -> None:
    while count:
        chunk = raw.read(min(CHUNK_SIZE, count), decode_content=True)
        if not chunk:
            raise RestartBlob("the registry's answer ended before the resume point")
        count -= len(chunk)
