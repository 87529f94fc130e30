"""One exception tree for every layer of ``envelope``.

    EnvelopeError
    ├── FormatError            bytes that are not a valid message (names the field and byte offset)
    │   └── TruncatedError     the input ended inside a field
    ├── AuthenticationError    a tag, commitment or signature did not verify (deliberately vague)
    ├── PolicyError            refused by a setting: commitment policy, signed suite, context, limits
    │   └── ContextMismatchError
    ├── KeyringError           no keyring could produce or open the data key (lists every attempt)
    │   └── KmsError           AWS KMS refused or could not be reached (names the key ARN)
    ├── KeyFileError           a key file is missing or malformed (names the field)
    ├── StorageError           reading or writing a remote location failed (S3, SSM, Secrets Manager;
    │                          names the location, e.g. the s3:// URL)
    └── UsageError             an argument is invalid (also a ValueError)

Messages never contain key material or plaintext.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ContextMismatchError",
    "EnvelopeError",
    "FormatError",
    "KeyFileError",
    "KeyringError",
    "KmsError",
    "PolicyError",
    "StorageError",
    "TruncatedError",
    "UsageError",
]


class EnvelopeError(Exception):
    """Root of every error raised on purpose by ``envelope``."""


class FormatError(EnvelopeError):
    """The input is not a well-formed ESDK message.

    ``field`` names the field being read and ``offset`` is its byte offset from the start of the message.
    """

    def __init__(self, field: str, offset: int, reason: str) -> None:
        self.field = field
        self.offset = offset
        self.reason = reason
        super().__init__(f"{field} at byte {offset}: {reason}")

    @property
    def at_start(self) -> bool:
        """True when one of the first fields (version, type, suite ID: the first 4 bytes) was refused: the input
        does not start as an ESDK message does (other data, or base64), rather than being a damaged message."""
        return self.field in _FIRST_FIELDS and self.offset < 4


_FIRST_FIELDS = frozenset({"version", "type", "algorithm suite ID"})  # the names _format gives those fields


class TruncatedError(FormatError):
    """The input ended inside ``field``; ``needed`` is the minimum total length that would let parsing go on."""

    def __init__(self, field: str, offset: int, needed: int) -> None:
        self.needed = needed
        super().__init__(field, offset, "input ends inside this field (truncated message)")


class AuthenticationError(EnvelopeError):
    """A header tag, frame tag, key commitment or signature did not verify."""


class PolicyError(EnvelopeError):
    """The message is well formed but a setting refuses it (commitment policy, signed suite, limits)."""


class ContextMismatchError(PolicyError):
    """A required encryption-context pair is missing or has another value. Names the key, never the value."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"encryption context key {key!r} {problem}")


class KeyringError(EnvelopeError):
    """No keyring could generate, wrap or unwrap the data key.

    ``attempts`` lists one line per keyring or encrypted data key that was tried. ``unauthenticated``: an
    encrypted data key meant for the keyring was found but did not authenticate (a raw AES tag, KMS
    ``InvalidCiphertextException``): a wrong key of the right name, or an encryption context other than the one
    it was wrapped under, such as a wrong reproduced pair (section 6.4).
    """

    def __init__(self, message: str, attempts: list[str] | None = None, *, unauthenticated: bool = False) -> None:
        self.unauthenticated = unauthenticated
        self.attempts = list(attempts or [])
        detail = "; ".join(self.attempts)
        super().__init__(f"{message} ({detail})" if detail else message)


class KmsError(KeyringError):
    """AWS KMS refused a call or could not be reached. ``key_id`` names the key involved."""

    def __init__(self, message: str, key_id: str | None = None, code: str | None = None,
                 attempts: list[str] | None = None, *, unauthenticated: bool | None = None) -> None:
        self.key_id = key_id
        self.code = code
        super().__init__(message, attempts, unauthenticated=code == "InvalidCiphertextException"
                         if unauthenticated is None else unauthenticated)


class KeyFileError(EnvelopeError):
    """A key file could not be read or does not have the pinned shape."""


class StorageError(EnvelopeError):
    """A remote location (an S3 object, an SSM parameter, a secret) could not be read or written.

    ``location`` names it as the user wrote it (``s3://bucket/key``, ``ssm:/name``, ...); ``code`` is the AWS
    error code or one of ours (``EndpointUnreachable``, ``NoCredentials``, ``TooLarge``, ...). The message
    never holds a secret value. The CLI maps it to the I/O exit code (4), like a file that cannot be read.
    """

    def __init__(self, message: str, location: str | None = None, code: str | None = None) -> None:
        self.location = location
        self.code = code
        super().__init__(message)


class UsageError(EnvelopeError, ValueError):
    """An argument is invalid (unknown suite name, reserved context key, bad frame length, ...)."""
