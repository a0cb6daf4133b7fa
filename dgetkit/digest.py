"""Content digests (``sha256:<hex>``) and hashing while bytes stream past."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import DigestMismatch, InvalidDigest, SizeMismatch

_ALGORITHM_HEX = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(
    r"^(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)$"
)


@dataclass(frozen=True, order=True)
class Digest:
    """A content address: the algorithm and the lower-case hex of the hash.

    Examples
    --------
    >>> d = Digest.parse("sha256:" + "ab" * 32)
    >>> d.hex[:4], str(d)[:10]
    ('abab', 'sha256:aba')
    """

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``; raise :class:`InvalidDigest` if malformed."""
        match = _DIGEST.match(text or "")
        if not match:
            raise InvalidDigest(
                f"{text!r} is not a digest: expected 'sha256:' followed by 64 "
                "lower-case hex characters"
            )
        algorithm, hexpart = match["algorithm"], match["hex"]
        length = _ALGORITHM_HEX.get(algorithm)
        if length is None:
            raise InvalidDigest(
                f"digest {text!r} uses {algorithm!r}; dgetkit verifies only "
                f"{', '.join(_ALGORITHM_HEX)}"
            )
        if len(hexpart) != length or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise InvalidDigest(
                f"digest {text!r} is malformed: {algorithm} needs exactly "
                f"{length} lower-case hex characters, got {len(hexpart)}"
            )
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        """The first 12 hex characters, as ``docker images`` shows IDs."""
        return self.hex[:12]


class Verifier:
    """Hash bytes as they stream past and check them against a descriptor.

    Parameters
    ----------
    digest : Digest
        What the bytes must hash to.
    size : int or None
        How many bytes must come, if known.
    what : str
        Names the content in error messages, e.g. ``"layer sha256:ab12..."``.
    """

    def __init__(self, digest: Digest, size: int | None = None, what: str = "blob"):
        self.digest = digest
        self.size = size
        self.what = what
        self.count = 0
        self._hash = hashlib.new(digest.algorithm)

    def update(self, chunk) -> None:
        """Add ``chunk``; fail early once more bytes came than the size allows."""
        self._hash.update(chunk)
        self.count += len(chunk)
        if self.size is not None and self.count > self.size:
            raise SizeMismatch(
                f"{self.what} is longer than its descriptor says: expected "
                f"{self.size} bytes, got more; the registry sent bad content",
                expected=self.size,
                got=self.count,
            )

    def current(self) -> Digest:
        """The digest of the bytes seen so far."""
        return Digest(self.digest.algorithm, self._hash.hexdigest())

    def verify(self) -> None:
        """Raise unless the bytes seen match the expected size and digest."""
        if self.size is not None and self.count != self.size:
            raise SizeMismatch(
                f"{self.what}: expected {self.size} bytes, got {self.count}; "
                "the download was cut short or the registry sent bad content",
                expected=self.size,
                got=self.count,
            )
        got = self.current()
        if got != self.digest:
            raise DigestMismatch(
                f"{self.what}: expected digest {self.digest}, got {got}; "
                "the bytes were refused and deleted",
                expected=str(self.digest),
                got=str(got),
            )
