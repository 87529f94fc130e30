"""The public encrypt / decrypt API: one-shot over bytes and streaming between binary file objects.

Encrypt: materials (suite, data key, EDKs, signing key) -> derive key and commitment -> header and its tag ->
framed body -> footer for signed suites.

Decrypt follows esdk-format.md section 5 step by step: parse the header (limits enforced while parsing) ->
policies -> required context -> unwrap the data key -> commitment -> header tag -> frames -> signature ->
no trailing bytes. Nothing is written to the destination before the header and the first batch of frames
authenticate; the final frame waits for the signature and the end-of-input check.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import crypto
from .errors import ContextMismatchError, FormatError, PolicyError, TruncatedError, UsageError
from .format import CONTENT_FRAMED, Header, HeaderAuth, parse_header, serialize_header_body
from .keyrings.base import Keyring
from .materials import (
    DecryptionRequest,
    DefaultMaterialsManager,
    EncryptionRequest,
    MaterialsManager,
    check_signing_context,
)
from .stream import Source, default_threads, open_framed, open_non_framed, seal_framed, write_all
from .suites import (
    AlgorithmSuite,
    CommitmentPolicy,
    check_decrypt_policy,
    resolve_policy,
    resolve_suite,
)

__all__ = [
    "DEFAULT_FRAME_LENGTH",
    "DEFAULT_MAX_ENCRYPTED_DATA_KEYS",
    "DEFAULT_MAX_FRAME_LENGTH",
    "DEFAULT_MAX_HEADER_LENGTH",
    "DecryptResult",
    "StreamResult",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "read_header",
]

#: Chosen by measurement (benchmarks/): see README "Performance".
DEFAULT_FRAME_LENGTH = 1024 * 1024
#: Decrypt limits (section 9). Each is a keyword argument of the decrypt functions.
DEFAULT_MAX_ENCRYPTED_DATA_KEYS = 256
DEFAULT_MAX_HEADER_LENGTH = 1024 * 1024
DEFAULT_MAX_FRAME_LENGTH = 64 * 1024 * 1024
RESERVED_PREFIX = "aws-crypto-"


@dataclass(frozen=True)
class DecryptResult:
    plaintext: bytes = field(repr=False)
    header: Header

    @property
    def suite(self) -> AlgorithmSuite:
        return self.header.suite

    @property
    def context(self) -> Mapping[str, str]:
        return self.header.encryption_context


@dataclass(frozen=True)
class StreamResult:
    header: Header
    bytes_read: int
    bytes_written: int


def _manager(keyring: Keyring | None, materials_manager: MaterialsManager | None) -> MaterialsManager:
    if (keyring is None) == (materials_manager is None):
        raise UsageError("pass exactly one of keyring= or materials_manager=")
    if materials_manager is not None:
        return materials_manager
    assert keyring is not None
    return DefaultMaterialsManager(keyring)


class _DeclaredSource(Source):
    """Refuses to yield more than ``limit`` bytes: the data-key cache reserved that many (section 8)."""

    limit: int | None = None

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = super().readinto(buf)
        if self.limit is not None and self.position > self.limit:
            raise UsageError(f"the input is longer than the declared plaintext length of {self.limit} bytes")
        return n


def _read_ahead(src: Source, bound: int | None) -> int | None:
    """Read up to ``bound`` + 1 bytes and push them back: the input's length if it ended within ``bound``."""
    if bound is None or bound < 0:
        return None
    buf = bytearray(bound + 1)
    got = src.readinto(buf)
    src.unread(memoryview(buf)[:got])
    return got if got <= bound else None


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if threads < 0:
        raise UsageError("threads must be 0 or more")
    return threads


# ---------------------------------------------------------------------------------------------------------
# encrypt


def encrypt_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    context: Mapping[str, str] | None = None,
    algorithm: int | str | AlgorithmSuite | None = None,
    frame_length: int | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    max_encrypted_data_keys: int | None = None,
    plaintext_length: int | None = None,
    threads: int | None = None,
) -> StreamResult:
    """Encrypt everything ``source`` yields into ``destination``, in constant memory.

    ``destination`` is written to but neither flushed nor closed. ``plaintext_length`` is optional; when
    given, it is what the data-key cache counts, so input that runs past it is refused (:class:`UsageError`)
    before those bytes are encrypted. When it is not given and the materials manager reads ahead (the caching
    manager: see :mod:`envelope.cache`), up to its bound is read to learn the length.
    """
    policy = resolve_policy(commitment_policy)
    suite = resolve_suite(algorithm)
    frame_length = DEFAULT_FRAME_LENGTH if frame_length is None else frame_length
    if not 0 < frame_length <= 2**31 - 1:
        raise UsageError("frame length must be between 1 and 2^31 - 1 bytes")
    context = dict(context or {})
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError("encryption context keys and values must be strings")
        if name.startswith(RESERVED_PREFIX):
            raise UsageError(f"encryption context keys starting with {RESERVED_PREFIX!r} are reserved: {name!r}")
    manager = _manager(keyring, materials_manager)
    nthreads = _threads(threads)
    if plaintext_length is not None and plaintext_length < 0:
        raise UsageError("plaintext_length must be 0 or more")
    src = _DeclaredSource(source)
    read_ahead_limit = getattr(manager, "read_ahead_limit", None)  # the caching manager (envelope.cache)
    if plaintext_length is None and read_ahead_limit is not None:
        plaintext_length = _read_ahead(src, read_ahead_limit(EncryptionRequest(context, policy, suite)))
    src.limit = plaintext_length
    request = EncryptionRequest(context, policy, suite, plaintext_length)
    materials = manager.get_encryption_materials(request)
    suite = materials.suite
    if max_encrypted_data_keys is not None and len(materials.encrypted_data_keys) > max_encrypted_data_keys:
        raise UsageError(f"the keys make {len(materials.encrypted_data_keys)} encrypted data keys, more than the "
                         f"limit of {max_encrypted_data_keys}")
    message_id = os.urandom(suite.message_id_length)
    key, commitment = crypto.derive_key(suite, materials.data_key, message_id)
    header = Header(suite.message_version, suite, message_id, materials.context, materials.encrypted_data_keys,
                    CONTENT_FRAMED, frame_length, commitment)
    body = serialize_header_body(header)
    object.__setattr__(header, "raw", body)  # the frozen header carries the bytes it was written as
    aead = AESGCM(key)
    tag = crypto.header_tag(aead, crypto.ZERO_IV, body)
    head = body + (crypto.ZERO_IV if suite.message_version == 1 else b"") + tag
    signer = crypto.Signer(suite, materials.signing_key) if suite.signed else None
    write_all(destination.write, head)
    if signer is not None:
        signer.update(head)
    read, written = seal_framed(src, destination.write, aead, message_id, frame_length,
                                hasher=signer, threads=nthreads, length_hint=plaintext_length)
    written += len(head)
    if signer is not None:
        signature = signer.finalize()
        footer = len(signature).to_bytes(2, "big") + signature
        write_all(destination.write, footer)
        written += len(footer)
    return StreamResult(header, read, written)


def encrypt(
    plaintext: bytes | bytearray | memoryview,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    context: Mapping[str, str] | None = None,
    algorithm: int | str | AlgorithmSuite | None = None,
    frame_length: int | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    max_encrypted_data_keys: int | None = None,
) -> bytes:
    """Encrypt ``plaintext`` and return the whole message."""
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, keyring=keyring, materials_manager=materials_manager,
                   context=context, algorithm=algorithm, frame_length=frame_length,
                   commitment_policy=commitment_policy, max_encrypted_data_keys=max_encrypted_data_keys,
                   plaintext_length=memoryview(plaintext).nbytes, threads=0)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------
# decrypt


def read_header(
    source: BinaryIO,
    *,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
) -> tuple[Header, HeaderAuth, Source]:
    """Read and parse just the header (no key needed). Returns it and a :class:`Source` positioned after it.

    Reads only as many bytes as parsing needs (doubling), never more than ``max_header_length``.
    """
    src = Source(source)
    buf = bytearray()
    want = 4096
    while True:
        chunk = bytearray(want - len(buf))
        got = src.readinto(chunk)
        buf += memoryview(chunk)[:got]
        try:
            header, auth, used = parse_header(buf, max_encrypted_data_keys=max_encrypted_data_keys)
        except TruncatedError as exc:
            if not buf:
                raise FormatError("message", 0, "the input is empty") from None
            if got < len(chunk):
                raise
            if exc.needed > max_header_length:
                raise PolicyError(f"the header is longer than the limit of {max_header_length} bytes "
                                  "(raise max_header_length to read it)") from None
            want = min(max(exc.needed, 2 * len(buf)), max_header_length)
            continue
        if used > max_header_length:  # it fitted in the first read, which does not stop at a small limit
            raise PolicyError(f"the header is {used} bytes, longer than the limit of {max_header_length} bytes "
                              "(raise max_header_length to read it)")
        src.unread(memoryview(buf)[used:])
        return header, auth, src


def _check_required(context: Mapping[str, str], required: Mapping[str, str] | None) -> None:
    for key, value in (required or {}).items():
        if key not in context:
            raise ContextMismatchError(key, "is missing from the message")
        if context[key] != value:
            raise ContextMismatchError(key, "has a different value in the message")


def decrypt_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str] | None = None,
    unsigned_only: bool = False,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
    threads: int | None = None,
) -> StreamResult:
    """Decrypt one message from ``source`` into ``destination``.

    Plaintext is written only after it authenticates; for signed suites the final frame (or a non-framed
    body) is written only after the signature verifies. On any error, what was already written came from
    authenticated frames but the message as a whole is not valid: callers writing to files should write to
    a temporary file and discard it (the CLI does).

    ``required_context``: each pair must be in the message's context with the same value.
    ``unsigned_only``: refuse signed suites before any key is used or byte is written.
    """
    policy = resolve_policy(commitment_policy)
    manager = _manager(keyring, materials_manager)
    nthreads = _threads(threads)
    header, auth, src = read_header(source, max_encrypted_data_keys=max_encrypted_data_keys,
                                    max_header_length=max_header_length)
    suite = header.suite
    check_decrypt_policy(suite, policy)
    if unsigned_only and suite.signed:
        raise PolicyError(f"the message uses signed suite {suite.hex_id}, refused by the unsigned-only option")
    if header.framed and header.frame_length > max_frame_length:
        raise PolicyError(f"the frame length {header.frame_length} is above the limit of {max_frame_length} "
                          "(raise max_frame_length, or --max-frame-length, to read it)")
    _check_required(header.encryption_context, required_context)
    # section 4/5: the verification key must be present (signed) or absent (unsigned) and must decode, all
    # before any keyring is called
    public_key = check_signing_context(suite, header.encryption_context)
    verifier = crypto.Verifier(suite, public_key) if public_key is not None else None
    materials = manager.decrypt_materials(
        DecryptionRequest(suite, header.encrypted_data_keys, header.encryption_context))
    key, commitment = crypto.derive_key(suite, materials.data_key, header.message_id)
    if suite.committing:
        crypto.check_commitment(commitment, header.commitment)
    aead = AESGCM(key)
    crypto.verify_header_tag(aead, auth.iv, header.raw, auth.tag)
    if verifier is not None:
        verifier.update(header.raw)
        verifier.update(auth.iv + auth.tag if header.version == 1 else auth.tag)

    def finish() -> None:
        if verifier is not None:  # section 4: UInt16 length, DER signature of any length
            length = src.read_exact(2, "signature length")
            verifier.verify(src.read_exact(int.from_bytes(length, "big"), "signature"))
        if not src.at_eof():
            raise FormatError("end of message", src.position, "trailing bytes after the message")

    if header.framed:
        written = open_framed(src, destination.write, aead, header.message_id, header.frame_length,
                              finish=finish, hasher=verifier, threads=nthreads)
    else:
        written = open_non_framed(src, destination.write, aead, header.message_id, finish=finish,
                                  max_length=max_frame_length, hasher=verifier)
    return StreamResult(header, src.position, written)


def decrypt(
    message: bytes | bytearray | memoryview,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str] | None = None,
    unsigned_only: bool = False,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
) -> DecryptResult:
    """Decrypt a whole message held in memory. Nothing is returned unless the whole message verified."""
    out = io.BytesIO()
    result = decrypt_stream(io.BytesIO(message), out, keyring=keyring, materials_manager=materials_manager,
                            commitment_policy=commitment_policy, required_context=required_context,
                            unsigned_only=unsigned_only, max_encrypted_data_keys=max_encrypted_data_keys,
                            max_frame_length=max_frame_length, max_header_length=max_header_length, threads=0)
    return DecryptResult(out.getvalue(), result.header)
