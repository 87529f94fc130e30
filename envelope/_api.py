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
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _crypto as crypto
from ._format import (
    FINAL_CONTENT,
    FINAL_FRAME_MARKER,
    FINAL_FRAME_STRING,
    FINAL_IV,
    FINAL_LENGTH,
    FINAL_PREFIX,
    SIGNATURE_LENGTH,
    WRITER_IV,
    EncryptedDataKey,
    Footer,
    Header,
    HeaderAuth,
    body_aad,
    check_frame_length,
    footer_length,
    framed_layout,
    header_auth_bytes,
    header_tag_aad,
    header_template,
    new_header,
    new_header_bytes,
    parse_footer,
    parse_header,
    serialize_footer,
    serialize_header_auth,
)
from ._keyrings.base import Keyring
from ._materials import (
    DefaultMaterialsManager,
    EncryptionMaterials,
    EncryptionRequest,
    MaterialsManager,
    check_signing_context,
    new_decryption_request,
    new_encryption_request,
    reads_ahead,
)
from ._stream import (
    BATCH_BYTES,
    Source,
    default_threads,
    open_buffer,
    open_framed,
    open_non_framed,
    seal_buffer,
    seal_framed,
    sealed_length,
    write_all,
)
from ._suites import (
    AlgorithmSuite,
    CommitmentPolicy,
    check_decrypt_policy,
    default_suite_for,
    resolve_policy,
    resolve_suite,
)
from .errors import (
    AuthenticationError,
    ContextMismatchError,
    FormatError,
    KeyringError,
    PolicyError,
    TruncatedError,
    UsageError,
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
#: Added to a key that did not authenticate when no pair was reproduced: nothing in a message says it needs some.
REPRODUCE_HINT = ("if the message was encrypted with required encryption context, its pairs must be reproduced "
                  "(reproduced_context=)")


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


def _decrypt_result(plaintext: bytes, header: Header) -> DecryptResult:
    """``DecryptResult(plaintext, header)`` without the frozen ``__init__``, as the one-shot paths' other objects
    are made (:func:`envelope._materials.new_encryption_request`); equal to the constructor's
    (tests/api/test_small_results.py)."""
    result = _new_object(DecryptResult)
    result.__dict__.update(plaintext=plaintext, header=header)
    return result


_new_object = object.__new__


@dataclass(frozen=True)
class StreamResult:
    header: Header
    bytes_read: int
    bytes_written: int


_NO_KEYS: frozenset[str] = frozenset()
_NO_PAIRS: Mapping[str, str] = MappingProxyType({})


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


def _encrypt_settings(context: Mapping[str, str] | None, algorithm: int | str | AlgorithmSuite | None,
                      frame_length: int | None, commitment_policy: CommitmentPolicy | str | None
                      ) -> tuple[dict[str, str], AlgorithmSuite | None, int, CommitmentPolicy]:
    """Validate what the caller asked for (context, suite, frame length, policy) before any key is used."""
    policy = resolve_policy(commitment_policy)
    suite = resolve_suite(algorithm)
    frame_length = DEFAULT_FRAME_LENGTH if frame_length is None else frame_length
    check_frame_length(frame_length)
    context = dict(context or {})
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError("encryption context keys and values must be strings")
        if name.startswith(RESERVED_PREFIX):
            raise UsageError(f"encryption context keys starting with {RESERVED_PREFIX!r} are reserved: {name!r}")
    return context, suite, frame_length, policy


def _required_keys(context: Mapping[str, str], keys: Iterable[str] | None) -> frozenset[str]:
    """``required_context_keys=``: each a key of the context (section 6.4); their pairs go into the header tag's
    AAD instead of the stored context."""
    if not keys:
        return frozenset()
    if isinstance(keys, str):
        raise UsageError("required_context_keys must be a collection of keys, not one string")
    found = frozenset(keys)
    for key in sorted(found, key=repr):
        if not isinstance(key, str):
            raise UsageError("required encryption context keys must be strings")
        if key not in context:
            raise UsageError(f"required encryption context key {key!r} is not in the encryption context")
    return found


def _split_context(materials: EncryptionMaterials, requested: frozenset[str]
                   ) -> tuple[Mapping[str, str], dict[str, str]]:
    """Section 6.4: (the context the header stores, the required pairs only the header tag authenticates). The
    materials name the required keys (at least those requested; a materials manager may add some, as the MPL's
    required-EC CMM does); every one must be in the materials' context."""
    keys = materials.required_context_keys
    if not keys and not requested:
        return materials.context, {}
    if not requested <= keys:
        raise UsageError("the materials manager dropped required encryption context keys: "
                         + ", ".join(repr(k) for k in sorted(requested - keys)))
    missing = keys - materials.context.keys()
    if missing:
        raise UsageError("required encryption context keys are not in the materials' context: "
                         + ", ".join(repr(k) for k in sorted(missing)))
    stored = {k: v for k, v in materials.context.items() if k not in keys}
    return stored, {k: materials.context[k] for k in sorted(keys)}


#: Header templates of materials that serve many messages (the data-key cache's: their context is a read-only
#: MappingProxyType), by id(materials); each entry holds a weak reference to its materials, so an id reused by
#: other materials never matches (the reference is dead or is another object). At most _TEMPLATES_SIZE.
_TEMPLATES: dict[int, tuple[weakref.ref[EncryptionMaterials], Mapping[str, str], int, tuple[bytes, bytes]]] = {}
_TEMPLATES_SIZE = 64


def _template(materials: EncryptionMaterials, stored: Mapping[str, str], frame_length: int) -> tuple[bytes, bytes]:
    """The header bytes around the message ID and commitment for these materials, this stored context and frame
    length (:func:`envelope._format.header_template`), made once per cached data key rather than per message."""
    found = _TEMPLATES.get(id(materials))
    if found is not None and found[0]() is materials and found[2] == frame_length and found[1] == stored:
        return found[3]
    template = header_template(materials.suite, stored, materials.encrypted_data_keys, frame_length)
    if len(_TEMPLATES) >= _TEMPLATES_SIZE:
        _TEMPLATES.clear()
    _TEMPLATES[id(materials)] = (weakref.ref(materials), dict(stored), frame_length, template)
    return template


@dataclass(slots=True)
class _Started:
    """A message whose header is ready: what the body and the footer need."""

    header: Header
    head: bytes  # header body and header authentication, as written
    aead: AESGCM
    signer: crypto.Signer | None


def _start_message(manager: MaterialsManager, request: EncryptionRequest, frame_length: int,
                   max_encrypted_data_keys: int | None) -> _Started:
    """Materials -> message ID -> key and commitment -> header and its tag (sections 1, 2.3, 2.4)."""
    materials = manager.get_encryption_materials(request)
    suite = materials.suite
    _check_edk_count(materials.encrypted_data_keys, max_encrypted_data_keys)
    stored, required = _split_context(materials, request.required_context_keys)
    message_id = os.urandom(suite.message_id_length)
    key, commitment = crypto.derive_key(suite, materials.data_key, message_id)
    template = _template(materials, stored, frame_length) if type(materials.context) is MappingProxyType else None
    header = new_header(suite, message_id, stored, materials.encrypted_data_keys, frame_length, commitment, template)
    aead = AESGCM(key)
    tag = crypto.header_tag(aead, crypto.ZERO_IV, header_tag_aad(header.raw, required))
    head = header.raw + header_auth_bytes(header.version, crypto.ZERO_IV, tag)
    signer = crypto.Signer(suite, materials.signing_key) if suite.signed else None
    if signer is not None:
        signer.update(head)
    return _Started(header, head, aead, signer)


def _footer(signer: crypto.Signer) -> bytes:
    # section 4: the signature has the ESDK's fixed DER length (Signer.finalize), so footer_length() holds
    return serialize_footer(Footer(signer.finalize()))


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
    required_context_keys: Iterable[str] | None = None,
) -> StreamResult:
    """Encrypt everything ``source`` yields into ``destination``, in constant memory.

    ``destination`` is written to but neither flushed nor closed. ``plaintext_length`` is optional; when
    given, it is what the data-key cache counts, so input that runs past it is refused (:class:`UsageError`)
    before those bytes are encrypted. When it is not given and the materials manager reads ahead (the caching
    manager: see :mod:`envelope._cache`), up to its bound is read to learn the length.

    ``required_context_keys``: keys of ``context`` whose pairs are authenticated but not stored in the message
    (the ESDK's required encryption context, section 6.4): decrypting needs them as ``reproduced_context``.
    """
    context, suite, frame_length, policy = _encrypt_settings(context, algorithm, frame_length, commitment_policy)
    required_keys = _required_keys(context, required_context_keys)
    manager = _manager(keyring, materials_manager)
    nthreads = _threads(threads)
    if plaintext_length is not None and plaintext_length < 0:
        raise UsageError("plaintext_length must be 0 or more")
    src = _DeclaredSource(source)
    if plaintext_length is None and reads_ahead(manager):  # the caching manager (envelope._cache)
        plaintext_length = _read_ahead(src, manager.read_ahead_limit(
            EncryptionRequest(context, policy, suite, None, required_keys)))
    src.limit = plaintext_length
    started = _start_message(manager, EncryptionRequest(context, policy, suite, plaintext_length, required_keys),
                             frame_length, max_encrypted_data_keys)
    write_all(destination.write, started.head)
    read, written = seal_framed(src, destination.write, started.aead, started.header.message_id, frame_length,
                                hasher=started.signer, threads=nthreads, length_hint=plaintext_length)
    written += len(started.head)
    if started.signer is not None:
        footer = _footer(started.signer)
        write_all(destination.write, footer)
        written += len(footer)
    return StreamResult(started.header, read, written)


def _result_buffer(size: int) -> tuple[io.BytesIO, memoryview]:
    """A writable buffer of ``size`` bytes that becomes the returned ``bytes`` without a copy: ``getvalue()``
    shares a BytesIO's own buffer. Fresh memory is costly here (each new page faults, ~1 GB/s on the
    development VM), so a ``bytearray`` plus ``bytes(...)`` would pay it twice."""
    out = io.BytesIO()
    if size:
        out.seek(size - 1)
        out.write(b"\0")
    return out, out.getbuffer()


def _buffer_workers(size: int) -> int:
    """Threads for a whole message in memory: the caller's thread has nothing else to do, so it counts."""
    return default_threads() + 1 if size >= 2 * BATCH_BYTES else 1


def _seal_final_only(aead: AESGCM, message_id: bytes, data: memoryview) -> bytes:
    """The body of a message shorter than one frame: its final frame (number 1) alone, the bytes
    :func:`envelope._stream.seal_buffer` writes, made without the output buffer and the batch machinery it sets up
    for large messages (a few us of a 1 KiB message). The layout is :mod:`envelope._format`'s."""
    n = len(data)
    return FINAL_PREFIX.pack(FINAL_FRAME_MARKER, 1, 1, n) + aead.encrypt(
        WRITER_IV.pack(1), data, body_aad(message_id, FINAL_FRAME_STRING, 1, n))


def _check_edk_count(edks: tuple[EncryptedDataKey, ...], max_encrypted_data_keys: int | None) -> None:
    if max_encrypted_data_keys is not None and len(edks) > max_encrypted_data_keys:
        raise UsageError(f"the keys make {len(edks)} encrypted data keys, more than the "
                         f"limit of {max_encrypted_data_keys}")


def _encrypt_final_only(manager: DefaultMaterialsManager, data: memoryview, context: dict[str, str],
                        suite: AlgorithmSuite | None, policy: CommitmentPolicy, frame_length: int,
                        max_encrypted_data_keys: int | None) -> bytes:
    """:func:`encrypt` of a message shorter than one frame, unsigned, with no required context, through the
    default materials manager: what :func:`_start_message` and :func:`_seal_final_only` make, the same bytes, without
    the request, materials, header and other objects the general path builds for callers that need them (about a
    quarter of a 1 KiB message's time). Sections 1, 2.3, 2.4 and 3.1, as there."""
    suite, data_key, edks, context, signing_key = manager.wrap_for(suite, policy, context, _NO_KEYS)
    assert signing_key is None and not suite.signed, "the caller passes unsigned suites only"
    _check_edk_count(edks, max_encrypted_data_keys)
    message_id = os.urandom(suite.message_id_length)
    key, commitment = crypto.derive_key(suite, data_key, message_id)
    raw = new_header_bytes(suite, message_id, context, edks, frame_length, commitment)
    aead = AESGCM(key)
    tag = crypto.header_tag(aead, crypto.ZERO_IV, raw)
    return raw + header_auth_bytes(suite.message_version, crypto.ZERO_IV, tag) + _seal_final_only(aead, message_id,
                                                                                                    data)


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
    required_context_keys: Iterable[str] | None = None,
) -> bytes:
    """Encrypt ``plaintext`` and return the whole message.

    The same bytes as :func:`encrypt_stream` would write, sealed straight from ``plaintext`` into one output
    of the exact size (no intermediate buffers), with large inputs split across cores.
    ``required_context_keys``: as for :func:`encrypt_stream`.
    """
    data = memoryview(plaintext).cast("B")
    context, suite, frame_length, policy = _encrypt_settings(context, algorithm, frame_length, commitment_policy)
    required_keys = _required_keys(context, required_context_keys)
    manager = _manager(keyring, materials_manager)
    if (type(manager) is DefaultMaterialsManager and not required_keys and len(data) < frame_length
            and not (suite or default_suite_for(policy)).signed):
        return _encrypt_final_only(manager, data, context, suite, policy, frame_length, max_encrypted_data_keys)
    started = _start_message(manager, new_encryption_request(context, policy, suite, len(data), required_keys),
                             frame_length, max_encrypted_data_keys)
    if started.signer is None and len(data) < frame_length:
        return started.head + _seal_final_only(started.aead, started.header.message_id, data)
    head = len(started.head)
    body = sealed_length(len(data), frame_length)
    suite = started.header.suite
    out, view = _result_buffer(head + body + (footer_length(suite.signature_length) if suite.signed else 0))
    view[:head] = started.head
    seal_buffer(started.aead, started.header.message_id, frame_length, data, view[head:head + body],
                workers=_buffer_workers(len(data)))
    if started.signer is not None:
        started.signer.update(view[head:head + body])
        view[head + body:] = _footer(started.signer)
    view.release()
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


def _check_required(context: Mapping[str, str], required: Mapping[str, str | None] | None) -> None:
    """``required_context=``: pairs the message must store (a value of None: the key, with any value)."""
    for key, value in (required or {}).items():
        if key not in context:
            raise ContextMismatchError(key, "is missing from the message")
        if value is not None and context[key] != value:
            raise ContextMismatchError(key, "has a different value in the message")


def _reproduced(context: Mapping[str, str], reproduced: Mapping[str, str] | None) -> dict[str, str]:
    """``reproduced_context=`` (section 6.4, the ESDK's ``encryption_context=`` on decrypt): a pair the message
    stores must have the same value, refused before any key is used; the others are returned, to be
    authenticated as required pairs (by the keyring, which sees them, and by the header tag)."""
    appended: dict[str, str] = {}
    for key, value in (reproduced or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError("reproduced encryption context keys and values must be strings")
        if key in context:
            if context[key] != value:
                raise ContextMismatchError(key, "has a different value in the message")
        elif key.startswith(RESERVED_PREFIX):
            raise UsageError(f"encryption context keys starting with {RESERVED_PREFIX!r} are reserved: {key!r}")
        else:
            appended[key] = value
    return appended


def _not_reproduced(appended: Mapping[str, str], detail: str | None = None) -> AuthenticationError:
    """A reproduced pair the message does not store did not authenticate: a wrong value, or a pair the message was
    never encrypted with (nothing in a message says which pairs it requires). Names the keys, never the values."""
    keys = ", ".join(repr(k) for k in sorted(appended))
    what = f"encryption context key {keys} is" if len(appended) == 1 else f"encryption context keys {keys} are"
    message = (f"{what} missing from the message, and the message does not authenticate with "
               f"{'it' if len(appended) == 1 else 'them'} as reproduced (required) context: a wrong value, or a pair "
               "it was not encrypted with")
    return AuthenticationError(f"{message} ({detail})" if detail else message)


class _MemoryReader:
    """Reads a buffer without copying it first (``io.BytesIO`` copies anything but ``bytes``)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self._view) - self._pos)
        buf[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n


#: The ``source`` :func:`decrypt` gives :func:`_open_header` when it reads the body from memory: an empty input,
#: never read (it is replaced by a real one before the streaming reader could run).
_NOT_READ = Source(_MemoryReader(memoryview(b"")))  # type: ignore[arg-type]


@dataclass(slots=True)
class _Opened:
    """A message whose header authenticated: what reading the body needs."""

    header: Header
    source: Source  # positioned at the body
    aead: AESGCM
    verifier: crypto.Verifier | None  # signed suites: already fed the header
    data_key: bytes = field(default=b"", repr=False)  # for rewrap (envelope._rewrap)
    #: the reproduced pairs the header does not store, which its tag authenticates (section 6.4)
    required_context: Mapping[str, str] = field(default_factory=dict)


def _open_message(source: BinaryIO, manager: MaterialsManager, policy: CommitmentPolicy,
                  required_context: Mapping[str, str | None] | None, unsigned_only: bool,
                  max_encrypted_data_keys: int | None, max_frame_length: int, max_header_length: int,
                  reproduced_context: Mapping[str, str] | None = None) -> _Opened:
    """Section 5, steps 1-5: parse the header with its limits, apply every policy before any keyring is called,
    unwrap the data key, derive the key, check the commitment (constant time) and the header tag (over the
    header and the reproduced pairs it does not store, section 6.4)."""
    header, auth, src = read_header(source, max_encrypted_data_keys=max_encrypted_data_keys,
                                    max_header_length=max_header_length)
    return _open_header(header, auth, src, manager, policy, required_context, unsigned_only, max_frame_length,
                        reproduced_context)


def _open_header(header: Header, auth: HeaderAuth, src: Source, manager: MaterialsManager, policy: CommitmentPolicy,
                 required_context: Mapping[str, str | None] | None, unsigned_only: bool, max_frame_length: int,
                 reproduced_context: Mapping[str, str] | None) -> _Opened:
    """:func:`_open_message` once the header is parsed (its limits enforced): ``src`` is at the body."""
    suite = header.suite
    check_decrypt_policy(suite, policy)
    if unsigned_only and suite.signed:
        raise PolicyError(f"the message uses signed suite {suite.hex_id}, refused by the unsigned-only option")
    if header.framed and header.frame_length > max_frame_length:
        raise PolicyError(f"the frame length {header.frame_length} is above the limit of {max_frame_length} "
                          "(raise max_frame_length, or --max-frame-length, to read it)")
    # both calls skipped when the caller gave no pairs: ~0.5 us of a 1 KiB decrypt's ~18 (measured A/B)
    if required_context:
        _check_required(header.encryption_context, required_context)
    appended = _reproduced(header.encryption_context, reproduced_context) if reproduced_context else _NO_PAIRS
    # section 4/5: the verification key must be present (signed) or absent (unsigned) and must decode, all
    # before any keyring is called
    public_key = check_signing_context(suite, header.encryption_context)
    verifier = crypto.Verifier(suite, public_key) if public_key is not None else None
    context = {**header.encryption_context, **appended} if appended else header.encryption_context
    try:
        if type(manager) is DefaultMaterialsManager:  # the data key without the request and materials objects
            data_key = manager.unwrap_for(suite, header.encrypted_data_keys, context)
        else:
            data_key = manager.decrypt_materials(
                new_decryption_request(suite, header.encrypted_data_keys, context,
                                       frozenset(appended) if appended else _NO_KEYS)).data_key
    except KeyringError as exc:
        if appended and exc.unauthenticated:  # the keyring authenticates the whole context (raw AES, KMS)
            raise _not_reproduced(appended, str(exc)) from None
        if exc.unauthenticated:
            exc.args = (f"{exc}; {REPRODUCE_HINT}",)
        raise
    key, commitment = crypto.derive_key(suite, data_key, header.message_id)
    if suite.committing:
        crypto.check_commitment(commitment, header.commitment)
    aead = AESGCM(key)
    try:
        crypto.verify_header_tag(aead, auth.iv, header_tag_aad(header.raw, appended), auth.tag)
    except AuthenticationError:
        if appended:
            raise _not_reproduced(appended) from None
        raise
    if verifier is not None:
        verifier.update(header.raw)
        verifier.update(serialize_header_auth(header, auth))
    return _Opened(header, src, aead, verifier, data_key, appended)


def _read_body(opened: _Opened, write: Callable[[Any], Any], max_frame_length: int, threads: int) -> int:
    """Section 5, steps 6-8, streaming: frames, then the signature, then the end of the input."""
    src, verifier, header = opened.source, opened.verifier, opened.header

    def finish() -> None:
        if verifier is not None:  # section 4: UInt16 length, DER signature of any length
            length = SIGNATURE_LENGTH.unpack(src.read_exact(SIGNATURE_LENGTH.size, "signature length"))[0]
            verifier.verify(src.read_exact(length, "signature"))
        if not src.at_eof():
            raise FormatError("end of message", src.position, "trailing bytes after the message")

    if header.framed:
        return open_framed(src, write, opened.aead, header.message_id, header.frame_length, finish=finish,
                           hasher=verifier, threads=threads)
    return open_non_framed(src, write, opened.aead, header.message_id, finish=finish, max_length=max_frame_length,
                           hasher=verifier)


def decrypt_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str | None] | None = None,
    unsigned_only: bool = False,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
    threads: int | None = None,
    reproduced_context: Mapping[str, str] | None = None,
) -> StreamResult:
    """Decrypt one message from ``source`` into ``destination``.

    Plaintext is written only after it authenticates; for signed suites the final frame (or a non-framed
    body) is written only after the signature verifies. On any error, what was already written came from
    authenticated frames but the message as a whole is not valid: callers writing to files should write to
    a temporary file and discard it (the CLI does).

    ``required_context``: pairs the message must store, each checked before any key is used (a value of None:
    the key must be there, with any value). ``reproduced_context``: pairs the caller reproduces, as the ESDK's
    ``encryption_context=`` on decrypt (section 6.4): one the message stores must have the same value (checked
    before any key is used); the others are authenticated as the message's required context (not stored in it),
    and a missing or wrong one fails as an :class:`AuthenticationError` naming the key.
    ``unsigned_only``: refuse signed suites before any key is used or byte is written.
    """
    manager = _manager(keyring, materials_manager)
    nthreads = _threads(threads)
    opened = _open_message(source, manager, resolve_policy(commitment_policy), required_context, unsigned_only,
                           max_encrypted_data_keys, max_frame_length, max_header_length, reproduced_context)
    written = _read_body(opened, destination.write, max_frame_length, nthreads)
    return StreamResult(opened.header, opened.source.position, written)


def _only_footer(tail: memoryview) -> Footer | None:
    """The footer, if ``tail`` is exactly one; otherwise None (the streaming reader then names what is wrong)."""
    try:
        footer, end = parse_footer(tail)
    except FormatError:
        return None
    return footer if end == len(tail) else None


def _parse_in_memory(data: memoryview, max_encrypted_data_keys: int | None, max_header_length: int
                     ) -> tuple[Header, HeaderAuth, int] | None:
    """The header of a whole message in memory, parsed in place: what :func:`read_header` returns, without its
    reads through a :class:`Source`. None when parsing fails in any way (truncated, malformed, over a limit):
    the caller then runs :func:`read_header`, which raises the error it always raised."""
    try:
        header, auth, used = parse_header(data[:max_header_length], max_encrypted_data_keys=max_encrypted_data_keys)
    except (FormatError, PolicyError):
        return None
    return header, auth, used


def _open_final_only(aead: AESGCM, message_id: bytes, body: memoryview, length: int) -> bytes:
    """The plaintext of a body that :func:`envelope._format.framed_layout` found to be its final frame alone (of
    ``length`` bytes of content) and nothing after it: one AES-GCM call, no output buffer to set up. The same
    check and error as :func:`envelope._stream.open_buffer`."""
    try:
        return aead.decrypt(body[FINAL_IV:FINAL_LENGTH], body[FINAL_CONTENT:],
                            body_aad(message_id, FINAL_FRAME_STRING, 1, length))
    except InvalidTag:
        raise AuthenticationError("final frame 1 failed to authenticate (the message was changed)") from None


def decrypt(
    message: bytes | bytearray | memoryview,
    *,
    keyring: Keyring | None = None,
    materials_manager: MaterialsManager | None = None,
    commitment_policy: CommitmentPolicy | str | None = None,
    required_context: Mapping[str, str | None] | None = None,
    unsigned_only: bool = False,
    max_encrypted_data_keys: int | None = DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
    reproduced_context: Mapping[str, str] | None = None,
) -> DecryptResult:
    """Decrypt a whole message held in memory. Nothing is returned unless the whole message verified.

    A well-formed framed body is opened straight from ``message`` into one output of the exact size, with large
    messages split across cores; anything irregular goes through the streaming reader, which reports the
    exact field and offset. ``required_context`` and ``reproduced_context``: as for :func:`decrypt_stream`.
    """
    data = memoryview(message).cast("B")
    manager = _manager(keyring, materials_manager)
    policy = resolve_policy(commitment_policy)
    parsed = _parse_in_memory(data, max_encrypted_data_keys, max_header_length)
    if parsed is None:  # anything irregular: read_header says exactly what (and the same as decrypt_stream)
        opened = _open_message(_MemoryReader(data), manager,  # type: ignore[arg-type]
                               policy, required_context, unsigned_only,
                               max_encrypted_data_keys, max_frame_length, max_header_length, reproduced_context)
        used = opened.source.position
    else:
        header, auth, used = parsed
        # the body is read from ``data`` itself; a Source over it is made only if the streaming reader runs
        opened = _open_header(header, auth, _NOT_READ, manager, policy, required_context, unsigned_only,
                              max_frame_length, reproduced_context)
    header, verifier = opened.header, opened.verifier
    body = data[used:]
    layout = framed_layout(body, header.frame_length) if header.framed else None
    if layout is not None:
        end = layout[2]
        tail = body[end:]  # the footer (signed suites) and nothing else
        if verifier is None and layout[0] == 0 and len(tail) == 0:
            return _decrypt_result(_open_final_only(opened.aead, header.message_id, body, layout[1]), header)
        footer = _only_footer(tail) if verifier is not None else None
        if (verifier is None and len(tail) == 0) or footer is not None:
            out, view = _result_buffer(layout[0] * header.frame_length + layout[1])
            open_buffer(opened.aead, header.message_id, header.frame_length, body, layout, view,
                        workers=_buffer_workers(len(body)))
            view.release()
            if verifier is not None and footer is not None:
                verifier.update(body[:end])
                verifier.verify(footer.signature)
            return DecryptResult(out.getvalue(), header)
    if opened.source is _NOT_READ:
        opened.source = Source(_MemoryReader(body), position=used)  # type: ignore[arg-type]
    out_stream = io.BytesIO()
    _read_body(opened, out_stream.write, max_frame_length, 0)
    return DecryptResult(out_stream.getvalue(), header)
