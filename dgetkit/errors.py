"""The exceptions dgetkit raises.

Every error derives from :class:`DgetkitError`, so ``except DgetkitError`` catches
all of them. Errors about what the user typed also derive from :class:`ValueError`.
Messages say what was expected, what came, and what to do next; none of them ever
contains a token, a password or an ``Authorization`` value.
"""

from __future__ import annotations


class DgetkitError(Exception):
    """Root of every error dgetkit raises."""


class InvalidReference(DgetkitError, ValueError):
    """An image reference that does not follow the distribution grammar."""


class InvalidDigest(DgetkitError, ValueError):
    """A digest string that is not ``algorithm:hex`` with a valid hex part."""


class InvalidPlatform(DgetkitError, ValueError):
    """A platform string that is not ``os/architecture[/variant]``."""


class InvalidOption(DgetkitError, ValueError):
    """Options that are missing, conflicting or out of range."""


class RegistryError(DgetkitError):
    """A registry answered with an error status.

    Attributes
    ----------
    status : int or None
        The HTTP status code.
    method, url : str
        The request, with any query string that could hold a secret removed.
    codes : list of str
        The registry's error codes (``MANIFEST_UNKNOWN``, ``DENIED``, ...).
    """

    def __init__(self, message, *, status=None, method="", url="", codes=()):
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url
        self.codes = list(codes)


class AuthenticationError(RegistryError):
    """The registry refused the credentials, or needs some that were not given."""


class RepositoryNotFound(RegistryError):
    """The repository does not exist, or is private and no access was granted."""


class ManifestNotFound(RegistryError):
    """The repository exists but has no such tag or digest."""


class BlobNotFound(RegistryError):
    """A blob named by a manifest is missing from the registry."""


class RateLimited(RegistryError):
    """The registry kept answering 429 Too Many Requests after every retry."""


class RegistryUnreachable(DgetkitError):
    """The registry could not be reached at all (DNS, refused, timed out)."""


class TLSVerificationError(RegistryUnreachable):
    """The registry's TLS certificate could not be verified."""


class UnsupportedMediaType(DgetkitError):
    """A manifest, config or layer of a kind dgetkit does not handle."""


class Schema1NotSupported(UnsupportedMediaType):
    """A Docker schema 1 manifest: deprecated and not pulled by dgetkit."""


class PlatformNotFound(DgetkitError):
    """No entry of an index matches the requested platform.

    Attributes
    ----------
    wanted : Platform
    available : list of Platform
    """

    def __init__(self, message, *, wanted=None, available=()):
        super().__init__(message)
        self.wanted = wanted
        self.available = list(available)


class IntegrityError(DgetkitError):
    """Bytes that do not match the digest or size that describes them."""


class DigestMismatch(IntegrityError):
    """Content whose digest is not the one expected.

    Attributes
    ----------
    expected, got : str
        The two digests.
    """

    def __init__(self, message, *, expected="", got=""):
        super().__init__(message)
        self.expected = expected
        self.got = got


class SizeMismatch(IntegrityError):
    """Content whose length is not the size its descriptor gives."""

    def __init__(self, message, *, expected=0, got=0):
        super().__init__(message)
        self.expected = expected
        self.got = got


class ContentTooLarge(DgetkitError):
    """A manifest or config larger than the limit dgetkit reads into memory."""


class OutputError(DgetkitError):
    """The output path cannot be written: it exists, or its folder is missing."""


class DiskFull(OutputError):
    """The disk filled up while writing; nothing was left at the output path."""


class InvalidArchive(DgetkitError, ValueError):
    """A file that is not a readable docker-save or OCI archive."""


class UnsafeArchiveMember(DgetkitError):
    """A layer member that would be written outside the target folder."""
