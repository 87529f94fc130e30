"""The ESDK message format: every byte layout, and pure parsing and serialising (bytes in, frozen dataclasses out).

This module is the one owner of the wire layout. The frame engine (``_stream``), the one-shot paths
(``_api``) and the test tools use its structs, offsets and checks; no other module spells an offset or a
``struct`` of the format. Each format rule is checked in one function here (frame sequence numbers, the final
frame, the non-framed length, the writer's frame length and frame count).

No I/O and no keys. Every rejection is a :class:`FormatError` naming the field and its byte offset; input
that ends inside a field raises :class:`TruncatedError`, whose ``needed`` says how many bytes would let
parsing continue (the streaming reader uses it to read just enough).

Section numbers refer to ``docs/esdk-format.md``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._suites import SUITES, AlgorithmSuite
from .errors import FormatError, PolicyError, TruncatedError, UsageError

__all__ = [
    "BODY_AAD_TAIL",
    "CONTENT_FRAMED",
    "CONTENT_NON_FRAMED",
    "FINAL_CONTENT",
    "FINAL_FRAME_MARKER",
    "FINAL_FRAME_STRING",
    "FINAL_IV",
    "FINAL_LENGTH",
    "FINAL_OVERHEAD",
    "FINAL_PREFIX",
    "FINAL_SEQUENCE",
    "FRAME_STRING",
    "IV_LENGTH",
    "MAX_NON_FRAMED_LENGTH",
    "MAX_REGULAR_FRAMES",
    "MAX_WRITE_FRAME_LENGTH",
    "NON_FRAMED_CONTENT",
    "NON_FRAMED_LENGTH",
    "REGULAR_CONTENT",
    "REGULAR_IV",
    "REGULAR_OVERHEAD",
    "REGULAR_PREFIX",
    "SEQUENCE_NUMBER",
    "SIGNATURE_LENGTH",
    "SINGLE_BLOCK_STRING",
    "TAG_LENGTH",
    "WRITER_IV",
    "EncryptedDataKey",
    "Footer",
    "Frame",
    "Header",
    "HeaderAuth",
    "Message",
    "NonFramedBody",
    "body_aad",
    "check_final_length",
    "check_final_sequence",
    "check_frame_count",
    "check_frame_length",
    "check_non_framed_length",
    "check_body_end",
    "cut_frame_error",
    "final_frame_offset",
    "footer_length",
    "framed_layout",
    "header_auth_bytes",
    "header_fields",
    "header_tag_aad",
    "header_template",
    "message_fields",
    "new_encrypted_data_key",
    "new_header",
    "new_header_bytes",
    "parse_context",
    "parse_footer",
    "parse_header",
    "parse_message",
    "regular_frames",
    "rewrapped_header",
    "sequence_error",
    "serialize_context",
    "serialize_footer",
    "serialize_frame",
    "serialize_header_auth",
    "serialize_header_body",
    "serialize_message",
    "serialize_non_framed",
]

CONTENT_NON_FRAMED = 0x01
CONTENT_FRAMED = 0x02
V1_TYPE = 0x80
IV_LENGTH = 12
TAG_LENGTH = 16
COMMITMENT_LENGTH = 32
FINAL_FRAME_MARKER = 0xFFFFFFFF
#: Section 3.1: sequence numbers are UInt32 and the marker is never one, so a regular frame is numbered at most
#: 2^32 - 2 (the final frame may carry 2^32 - 1).
MAX_REGULAR_FRAMES = FINAL_FRAME_MARKER - 1
#: Section 3.2 (read only).
MAX_NON_FRAMED_LENGTH = 2**36 - 32
#: The largest frame length any ESDK reads (the Python ESDK refuses larger ones): the writer's limit (section 9).
MAX_WRITE_FRAME_LENGTH = 2**31 - 1

# section 3.1 body AAD content strings
FRAME_STRING = b"AWSKMSEncryptionClient Frame"
FINAL_FRAME_STRING = b"AWSKMSEncryptionClient Final Frame"
SINGLE_BLOCK_STRING = b"AWSKMSEncryptionClient Single Block"

# section 0: big-endian unsigned integers
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")

# ---------------------------------------------------------------------------------------------------------
# Section 3 body layout: every offset and struct the frame engine, the one-shot paths and the parser use.
# Offsets are from the start of the frame (or of the non-framed body).

#: Regular frame: UInt32 sequence number | IV | content (frame length bytes) | tag.
REGULAR_IV = 4
REGULAR_CONTENT = REGULAR_IV + IV_LENGTH  # 16
REGULAR_OVERHEAD = REGULAR_CONTENT + TAG_LENGTH  # 32: a regular frame is frame length + this
#: Final frame: marker | UInt32 sequence number | IV | UInt32 content length | content | tag.
FINAL_SEQUENCE = 4
FINAL_IV = 8
FINAL_LENGTH = FINAL_IV + IV_LENGTH  # 20
FINAL_CONTENT = FINAL_LENGTH + 4  # 24
FINAL_OVERHEAD = FINAL_CONTENT + TAG_LENGTH  # 40: a final frame is its content length + this
#: A regular frame's sequence number, or the final-frame marker in its place.
SEQUENCE_NUMBER = U32
#: What a writer puts before the content (section 3.1 writer rule: IV = 8 zero bytes || UInt32 sequence number).
WRITER_IV = struct.Struct(">8xI")
REGULAR_PREFIX = struct.Struct(">I8xI")  # sequence number, IV
FINAL_PREFIX = struct.Struct(">II8xII")  # marker, sequence number, IV, content length
#: The body AAD after the message ID and content string: UInt32 sequence number, UInt64 content length.
BODY_AAD_TAIL = struct.Struct(">IQ")
#: Non-framed body (section 3.2): IV | UInt64 content length | content | tag.
NON_FRAMED_LENGTH = IV_LENGTH  # 12
NON_FRAMED_CONTENT = NON_FRAMED_LENGTH + 8  # 20
#: Footer (section 4): UInt16 signature length, then the signature.
SIGNATURE_LENGTH = U16


@dataclass(frozen=True)
class EncryptedDataKey:
    """Section 7.1. ``provider_id`` is UTF-8 text; ``provider_info`` and ``ciphertext`` are opaque bytes."""

    provider_id: str
    provider_info: bytes
    ciphertext: bytes

    def serialize(self) -> bytes:
        pid = self.provider_id.encode("utf-8")
        info, ciphertext = self.provider_info, self.ciphertext
        if len(pid) > 0xFFFF or len(info) > 0xFFFF or len(ciphertext) > 0xFFFF:
            for name, value in (("provider id", pid), ("provider info", info), ("ciphertext", ciphertext)):
                if len(value) > 0xFFFF:
                    raise UsageError(f"encrypted data key {name} is longer than 65,535 bytes")
        return b"".join((U16.pack(len(pid)), pid, U16.pack(len(info)), info, U16.pack(len(ciphertext)), ciphertext))


@dataclass(frozen=True)
class Header:
    """The header body (sections 1.1 and 1.2). ``commitment`` is the v2 suite data (empty for v1)."""

    version: int
    suite: AlgorithmSuite
    message_id: bytes
    encryption_context: Mapping[str, str]
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    content_type: int
    frame_length: int
    commitment: bytes = b""
    raw: bytes = field(default=b"", repr=False, compare=False)  # the exact bytes parsed or written

    @property
    def framed(self) -> bool:
        return self.content_type == CONTENT_FRAMED


@dataclass(frozen=True)
class HeaderAuth:
    """Section 1.3: v1 stores IV and tag; v2 stores only the tag (its IV is 12 zero bytes)."""

    iv: bytes
    tag: bytes


@dataclass(frozen=True)
class Frame:
    """One frame of a framed body (section 3.1)."""

    sequence_number: int
    iv: bytes
    ciphertext: bytes
    tag: bytes
    final: bool


@dataclass(frozen=True)
class NonFramedBody:
    """Section 3.2 (read only)."""

    iv: bytes
    ciphertext: bytes
    tag: bytes


@dataclass(frozen=True)
class Footer:
    """Section 4."""

    signature: bytes


@dataclass(frozen=True)
class Message:
    header: Header
    auth: HeaderAuth
    body: tuple[Frame, ...] | NonFramedBody
    footer: Footer | None


_new_object = object.__new__


def _header(version: int, suite: AlgorithmSuite, message_id: bytes, encryption_context: Mapping[str, str],
            encrypted_data_keys: tuple[EncryptedDataKey, ...], content_type: int, frame_length: int, commitment: bytes,
            raw: bytes) -> Header:
    """``Header(...)`` for the per-message paths, without the frozen ``__init__``'s nine ``object.__setattr__``
    calls (~0.6 us of a small message's ~15): the same object (no ``__post_init__``, no slots), equal to one
    made by ``Header(...)`` (tests/format/test_header_fast.py)."""
    header = _new_object(Header)
    header.__dict__.update(version=version, suite=suite, message_id=message_id, encryption_context=encryption_context,
                           encrypted_data_keys=encrypted_data_keys, content_type=content_type,
                           frame_length=frame_length, commitment=commitment, raw=raw)
    return header


def new_encrypted_data_key(provider_id: str, provider_info: bytes, ciphertext: bytes) -> EncryptedDataKey:
    """``EncryptedDataKey(...)`` for the per-message paths (the header parser, the raw AES keyring), made as
    :func:`_header` makes headers: equal to the constructor's (tests/format/test_header_fast.py)."""
    edk = _new_object(EncryptedDataKey)
    edk.__dict__.update(provider_id=provider_id, provider_info=provider_info, ciphertext=ciphertext)
    return edk


def _header_auth(iv: bytes, tag: bytes) -> HeaderAuth:
    """``HeaderAuth(iv, tag)`` as :func:`_header` makes headers."""
    auth = _new_object(HeaderAuth)
    auth.__dict__.update(iv=iv, tag=tag)
    return auth


_V2_HEADER_IV = bytes(IV_LENGTH)


class _Cursor:
    """Reads big-endian fields from a buffer, naming the field on every failure."""

    __slots__ = ("bounded", "buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.bounded = end is not None  # reading inside a length-prefixed field (the AAD)
        self.end = len(self.buf) if end is None else end

    def _overrun(self, name: str, start: int, n: int) -> FormatError:
        if self.bounded:  # a sub-field overran the length its enclosing field declared
            return FormatError(name, start, "runs past the end of its enclosing field")
        return TruncatedError(name, start, start + n)

    def skip(self, n: int, name: str) -> int:
        """Step over an ``n``-byte field; returns where it starts."""
        start = self.pos
        if start + n > self.end:
            raise self._overrun(name, start, n)
        self.pos = start + n
        return start

    def take(self, n: int, name: str) -> bytes:
        start = self.pos
        if start + n > self.end:
            raise self._overrun(name, start, n)
        self.pos = start + n
        return bytes(self.buf[start:start + n])

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return int(U16.unpack(self.take(2, name))[0])

    def u32(self, name: str) -> int:
        return int(U32.unpack(self.take(4, name))[0])

    def u64(self, name: str) -> int:
        return int(U64.unpack(self.take(8, name))[0])


class _Recorder(_Cursor):
    """A cursor that lists every field it reads as (name, start, end): see :func:`message_fields`."""

    __slots__ = ("fields",)

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        super().__init__(buf)
        self.fields: list[tuple[str, int, int]] = []

    def skip(self, n: int, name: str) -> int:
        start = super().skip(n, name)
        self.fields.append((name, start, start + n))
        return start

    def take(self, n: int, name: str) -> bytes:
        data = super().take(n, name)
        self.fields.append((name, self.pos - n, self.pos))
        return data


def _utf8(raw: bytes, name: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(name, offset + exc.start, "is not valid UTF-8") from None


# ---------------------------------------------------------------------------------------------------------
# 6.1 encryption context


#: Serialised contexts, by their pairs in the mapping's order: a message is serialised three times or more (the
#: keyring's AAD, the header, the data-key cache's identifier) and most programs repeat a few contexts, so each
#: is encoded once (about 2 us of the ~10 us a small message may take). Only pairs of exact ``str`` are
#: remembered and looked up (a ``str`` subclass could compare equal to text it does not encode as), only
#: short results, and at most :data:`_CONTEXT_MEMO_SIZE` of them (then the memo starts again).
_CONTEXT_MEMO: dict[tuple[tuple[str, str], ...], bytes] = {}
_CONTEXT_MEMO_SIZE = 256
_CONTEXT_MEMO_BYTES = 4096


def serialize_context(context: Mapping[str, str], *, sort: bool = True) -> bytes:
    """Section 6.1: empty context -> b""; otherwise count and entries sorted by the key's UTF-8 bytes.

    ``sort=False`` keeps the mapping's order: readers accept any order, writers sort (test messages only).
    """
    if not context:
        return b""
    if not sort:
        return _serialize_context(context, False)
    pairs = tuple(context.items())
    for key, value in pairs:
        if type(key) is not str or type(value) is not str:
            return _serialize_context(context, True)
    found = _CONTEXT_MEMO.get(pairs)
    if found is None:
        found = _serialize_context(context, True)
        if len(found) <= _CONTEXT_MEMO_BYTES:
            if len(_CONTEXT_MEMO) >= _CONTEXT_MEMO_SIZE:
                _CONTEXT_MEMO.clear()
            _CONTEXT_MEMO[pairs] = found
    return found


#: The other way: parsed contexts by their exact bytes (what parse_context makes of them never changes), for
#: the headers :func:`_parse_header_v2` takes. Only valid contexts are stored.
_PARSED_CONTEXTS: dict[bytes, dict[str, str]] = {}


def _serialize_context(context: Mapping[str, str], sort: bool) -> bytes:
    entries = []
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError("encryption context keys and values must be strings")
        try:
            kb, vb = key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("encryption context keys and values must be valid Unicode text") from None
        if len(kb) > 0xFFFF or len(vb) > 0xFFFF:
            raise UsageError("an encryption context key or value is longer than 65,535 bytes")
        entries.append((kb, vb))
    if sort:
        entries.sort(key=lambda kv: kv[0])
    if len(entries) > 0xFFFF:
        raise UsageError("the encryption context has more than 65,535 entries")
    out = [U16.pack(len(entries))]
    for kb, vb in entries:
        out += [U16.pack(len(kb)), kb, U16.pack(len(vb)), vb]
    return b"".join(out)


def parse_context(buf: bytes | memoryview, offset: int = 0, length: int | None = None) -> dict[str, str]:
    """Parse a serialised context occupying ``buf[offset:offset+length]`` (unique keys, UTF-8, any order)."""
    end = len(buf) if length is None else offset + length
    if end > len(buf):
        raise TruncatedError("encryption context", offset, end)
    if end == offset:
        return {}
    cur = _Cursor(buf, offset, end)
    count = cur.u16("encryption context count")
    if count == 0:
        raise FormatError("encryption context count", offset,
                          "is 0 inside a non-empty field (an empty context must have AAD length 0)")
    context: dict[str, str] = {}
    for _ in range(count):
        key_at = cur.pos + 2
        key_raw = cur.take(cur.u16("encryption context key length"), "encryption context key")
        key = _utf8(key_raw, "encryption context key", key_at)
        value_at = cur.pos + 2
        value_raw = cur.take(cur.u16("encryption context value length"), "encryption context value")
        value = _utf8(value_raw, "encryption context value", value_at)
        # Writers sort by UTF-8 bytes, but readers accept any order: valid KATs 15, 17 and 19 (and messages
        # the ESDK for Python reads) list aws-crypto-public-key last. A repeated key is always rejected.
        if key in context:
            raise FormatError("encryption context key", key_at, f"{key!r} appears twice")
        context[key] = value
    if cur.pos != end:
        raise FormatError("encryption context", cur.pos, f"has {end - cur.pos} bytes left over after the entries")
    return context


# ---------------------------------------------------------------------------------------------------------
# 1.1 / 1.2 header body


def serialize_header_body(header: Header, *, sort_context: bool = True) -> bytes:
    """Sections 1.1 (v1) and 1.2 (v2). ``sort_context``: see :func:`serialize_context`."""
    return _header_body(header.version, header.suite, header.message_id, header.encryption_context,
                        header.encrypted_data_keys, header.content_type, header.frame_length, header.commitment,
                        sort_context)


def new_header(suite: AlgorithmSuite, message_id: bytes, context: Mapping[str, str],
               encrypted_data_keys: tuple[EncryptedDataKey, ...], frame_length: int, commitment: bytes,
               template: tuple[bytes, bytes] | None = None) -> Header:
    """The framed header of a new message, carrying the bytes it is written as (``raw``).

    ``template``: what :func:`header_template` returned for the same suite, context, EDKs and frame length (the
    data-key cache serves many messages that differ only in message ID and commitment)."""
    version = suite.message_version
    if template is None:
        raw = new_header_bytes(suite, message_id, context, encrypted_data_keys, frame_length, commitment)
    else:
        _check_id_and_commitment(suite, message_id, commitment)
        raw = template[0] + message_id + template[1] + commitment
    return _header(version, suite, message_id, context, encrypted_data_keys, CONTENT_FRAMED, frame_length, commitment,
                   raw)


def new_header_bytes(suite: AlgorithmSuite, message_id: bytes, context: Mapping[str, str],
                     encrypted_data_keys: tuple[EncryptedDataKey, ...], frame_length: int, commitment: bytes) -> bytes:
    """The bytes of the framed header :func:`new_header` makes (its ``raw``), without the :class:`Header`: for the
    one-shot encrypt of a small message, which returns bytes only (~0.5 us of ~15)."""
    return _header_body(suite.message_version, suite, message_id, context, encrypted_data_keys, CONTENT_FRAMED,
                        frame_length, commitment, True)


def header_template(suite: AlgorithmSuite, context: Mapping[str, str],
                    encrypted_data_keys: tuple[EncryptedDataKey, ...], frame_length: int) -> tuple[bytes, bytes]:
    """A new framed header's bytes around its message ID and commitment: (before the ID, from after the ID to
    the commitment). The header is ``before || message ID || after || commitment`` (v1: no commitment)."""
    return _header_parts(suite.message_version, suite, context, encrypted_data_keys, CONTENT_FRAMED, frame_length,
                         True)


def _check_id_and_commitment(suite: AlgorithmSuite, message_id: bytes, commitment: bytes) -> None:
    if len(message_id) != suite.message_id_length:
        raise UsageError(f"message ID must be {suite.message_id_length} bytes")
    if suite.message_version == 2 and len(commitment) != COMMITMENT_LENGTH:
        raise UsageError("v2 headers carry a 32-byte commitment")
    if suite.message_version == 1 and commitment:
        raise UsageError("v1 headers carry no commitment")


def rewrapped_header(header: Header, context: Mapping[str, str],
                     encrypted_data_keys: tuple[EncryptedDataKey, ...]) -> Header:
    """The header of ``header``'s message with other encrypted data keys (and ``context``, which a rewrap changes
    only in ``aws-crypto-public-key``): the same version, suite, message ID, content type (framed or not), frame
    length and commitment, so the body stays valid byte for byte (its AAD holds none of the header). ``raw``
    holds the new bytes; the context is written sorted."""
    raw = _header_body(header.version, header.suite, header.message_id, context, encrypted_data_keys,
                       header.content_type, header.frame_length, header.commitment, True)
    return Header(header.version, header.suite, header.message_id, context, encrypted_data_keys, header.content_type,
                  header.frame_length, header.commitment, raw)


def _header_body(version: int, suite: AlgorithmSuite, message_id: bytes, context: Mapping[str, str],
                 encrypted_data_keys: tuple[EncryptedDataKey, ...], content_type: int, frame_length: int,
                 commitment: bytes, sort_context: bool) -> bytes:
    if version != suite.message_version:
        raise UsageError(f"suite {suite.hex_id} needs header version {suite.message_version}")
    if len(message_id) != suite.message_id_length:
        raise UsageError(f"message ID must be {suite.message_id_length} bytes")
    if version == 2 and len(commitment) != COMMITMENT_LENGTH:
        raise UsageError("v2 headers carry a 32-byte commitment")
    before, after = _header_parts(version, suite, context, encrypted_data_keys, content_type, frame_length,
                                  sort_context)
    return before + message_id + after + (commitment if version == 2 else b"")


def _header_parts(version: int, suite: AlgorithmSuite, context: Mapping[str, str],
                  encrypted_data_keys: tuple[EncryptedDataKey, ...], content_type: int, frame_length: int,
                  sort_context: bool) -> tuple[bytes, bytes]:
    if version != suite.message_version:
        raise UsageError(f"suite {suite.hex_id} needs header version {suite.message_version}")
    if not encrypted_data_keys:
        raise UsageError("a message needs at least one encrypted data key")
    if len(encrypted_data_keys) > 0xFFFF:
        raise UsageError("a message holds at most 65,535 encrypted data keys")
    aad = serialize_context(context, sort=sort_context)
    if len(aad) > 0xFFFF:
        raise UsageError("the serialised encryption context is longer than 65,535 bytes")
    before = (bytes((1, V1_TYPE)) if version == 1 else b"\x02") + U16.pack(suite.id)
    parts = [U16.pack(len(aad)), aad, U16.pack(len(encrypted_data_keys))]
    parts += [edk.serialize() for edk in encrypted_data_keys]
    parts.append(bytes((content_type,)))
    if version == 1:
        parts += [b"\x00\x00\x00\x00", bytes((IV_LENGTH,)), U32.pack(frame_length)]
    else:
        parts.append(U32.pack(frame_length))
    return before, b"".join(parts)


def parse_header(buf: bytes | bytearray | memoryview, *, max_encrypted_data_keys: int | None = None
                 ) -> tuple[Header, HeaderAuth, int]:
    """Parse the header body and its authentication. Returns (header, auth, bytes consumed).

    ``header.raw`` holds the exact header-body bytes to authenticate (section 1.3: never re-serialise).
    The EDK limit is enforced as soon as the count is read (section 5 step 1).
    """
    found = _parse_header_v2(buf, max_encrypted_data_keys)
    if found is not None:
        return found
    cur = _Cursor(buf)
    header, auth = _parse_header(cur, max_encrypted_data_keys)
    return header, auth, cur.pos


def _parse_header_v2(buf: bytes | bytearray | memoryview, max_encrypted_data_keys: int | None
                     ) -> tuple[Header, HeaderAuth, int] | None:
    """The common header, a well-formed framed v2 one, parsed with direct offsets and one copy: the same result
    as :func:`_parse_header`, which reads field by field through a :class:`_Cursor` (20-odd calls and copies, a
    few us of a 1 KiB message). None at anything else (v1, non-framed, truncated, malformed, over the EDK limit):
    the caller then runs :func:`_parse_header`, which applies every rule and names the field. Whatever this
    accepts, :func:`_parse_header` accepts with the same result (tests/format/test_header_fast.py)."""
    try:
        n = len(buf)
        if n < 3 or buf[0] != 2:
            return None
        suite = SUITES.get(U16.unpack_from(buf, 1)[0])
        if suite is None or suite.message_version != 2:
            return None
        aad_at = 3 + suite.message_id_length + 2
        if n < aad_at:
            return None
        aad_length = U16.unpack_from(buf, aad_at - 2)[0]
        pos = aad_at + aad_length
        if n < pos + 2:
            return None
        count = U16.unpack_from(buf, pos)[0]
        if count == 0 or (max_encrypted_data_keys is not None and count > max_encrypted_data_keys):
            return None
        pos += 2
        spans = []
        for _ in range(count):
            at = pos
            for _field in range(3):  # provider ID, provider info, ciphertext: each UInt16 length || bytes
                if n < pos + 2:
                    return None
                pos += 2 + U16.unpack_from(buf, pos)[0]
            spans.append(at)
        body_end = pos + 1 + 4 + COMMITMENT_LENGTH
        end = body_end + TAG_LENGTH
        if n < end or buf[pos] != CONTENT_FRAMED:
            return None
        raw = bytes(buf[:end])
        frame_length = U32.unpack_from(raw, pos + 1)[0]
        if frame_length == 0:
            return None
        aad = raw[aad_at:aad_at + aad_length]
        known = _PARSED_CONTEXTS.get(aad)
        if known is None:
            context = parse_context(raw, aad_at, aad_length)
            if aad_length <= _CONTEXT_MEMO_BYTES:
                if len(_PARSED_CONTEXTS) >= _CONTEXT_MEMO_SIZE:
                    _PARSED_CONTEXTS.clear()
                _PARSED_CONTEXTS[aad] = dict(context)
        else:
            context = dict(known)  # each header gets its own dict
        edks = []
        for at in spans:
            length = U16.unpack_from(raw, at)[0]
            pid_end = at + 2 + length
            info_length = U16.unpack_from(raw, pid_end)[0]
            info_end = pid_end + 2 + info_length
            ct_length = U16.unpack_from(raw, info_end)[0]
            edks.append(new_encrypted_data_key(raw[at + 2:pid_end].decode("utf-8"), raw[pid_end + 2:info_end],
                                               raw[info_end + 2:info_end + 2 + ct_length]))
    except (FormatError, UnicodeDecodeError):
        return None
    header = _header(2, suite, raw[3:3 + suite.message_id_length], context, tuple(edks), CONTENT_FRAMED,
                     frame_length, raw[body_end - COMMITMENT_LENGTH:body_end], raw[:body_end])
    return header, _header_auth(_V2_HEADER_IV, raw[body_end:end]), end


def _parse_header(cur: _Cursor, max_encrypted_data_keys: int | None) -> tuple[Header, HeaderAuth]:
    version = cur.u8("version")
    if version == 1:
        msg_type = cur.u8("type")
        if msg_type != V1_TYPE:
            raise FormatError("type", 1, f"is 0x{msg_type:02x}, expected 0x80")
    elif version != 2:
        hint = " (this looks like base64 text: decode it first)" if version == 0x41 else ""
        raise FormatError("version", 0, f"is 0x{version:02x}; an ESDK message starts with 0x01 or 0x02{hint}")
    suite_at = cur.pos
    suite_id = cur.u16("algorithm suite ID")
    suite = SUITES.get(suite_id)
    if suite is None:
        raise FormatError("algorithm suite ID", suite_at, f"0x{suite_id:04x} is not an ESDK algorithm suite")
    if suite.message_version != version:
        raise FormatError("algorithm suite ID", suite_at,
                          f"suite {suite.hex_id} belongs to format version {suite.message_version}, not {version}")
    message_id = cur.take(suite.message_id_length, "message ID")
    aad_length = cur.u16("AAD length")
    aad_at = cur.skip(aad_length, "encryption context")
    context = parse_context(cur.buf, aad_at, aad_length)
    count_at = cur.pos
    edk_count = cur.u16("encrypted data key count")
    if edk_count == 0:
        raise FormatError("encrypted data key count", count_at, "is 0; a message needs at least one")
    if max_encrypted_data_keys is not None and edk_count > max_encrypted_data_keys:
        raise PolicyError(f"the message has {edk_count} encrypted data keys (count at byte {count_at}); "
                          f"the limit is {max_encrypted_data_keys}")
    edks = []
    for _ in range(edk_count):
        pid_at = cur.pos + 2
        pid = _utf8(cur.take(cur.u16("key provider ID length"), "key provider ID"), "key provider ID", pid_at)
        info = cur.take(cur.u16("key provider info length"), "key provider info")
        ciphertext = cur.take(cur.u16("encrypted data key length"), "encrypted data key")
        edks.append(EncryptedDataKey(pid, info, ciphertext))
    ct_at = cur.pos
    content_type = cur.u8("content type")
    if content_type not in (CONTENT_NON_FRAMED, CONTENT_FRAMED):
        raise FormatError("content type", ct_at, f"is 0x{content_type:02x}, expected 0x01 or 0x02")
    if version == 1:
        reserved_at = cur.pos
        if cur.take(4, "reserved") != b"\x00\x00\x00\x00":
            raise FormatError("reserved", reserved_at, "must be 00 00 00 00")
        iv_at = cur.pos
        iv_length = cur.u8("IV length")
        if iv_length != IV_LENGTH:
            raise FormatError("IV length", iv_at, f"is {iv_length}, the suite uses {IV_LENGTH}")
    fl_at = cur.pos
    frame_length = cur.u32("frame length")
    if content_type == CONTENT_NON_FRAMED and frame_length != 0:
        raise FormatError("frame length", fl_at, f"is {frame_length} but must be 0 for non-framed content")
    if content_type == CONTENT_FRAMED and frame_length == 0:
        raise FormatError("frame length", fl_at, "is 0 for framed content")
    commitment = cur.take(COMMITMENT_LENGTH, "commitment key") if version == 2 else b""
    body_end = cur.pos
    if version == 1:
        iv = cur.take(IV_LENGTH, "header IV")
    else:
        iv = bytes(IV_LENGTH)
    tag = cur.take(TAG_LENGTH, "header authentication tag")
    header = Header(version, suite, message_id, context, tuple(edks), content_type, frame_length, commitment,
                    bytes(cur.buf[:body_end]))
    return header, HeaderAuth(iv, tag)


def serialize_header_auth(header: Header, auth: HeaderAuth) -> bytes:
    return header_auth_bytes(header.version, auth.iv, auth.tag)


def header_tag_aad(header_body: bytes, required_context: Mapping[str, str] | None) -> bytes:
    """Sections 1.3 and 6.4: the AAD of the header tag, the exact header-body bytes followed by the serialised
    required-context pairs (authenticated, not stored in the message). Without such pairs it is the header body
    alone, so messages that do not use the feature are unchanged."""
    return header_body + serialize_context(required_context) if required_context else header_body


def header_auth_bytes(version: int, iv: bytes, tag: bytes) -> bytes:
    """Section 1.3: v1 stores the IV and the tag, v2 only the tag (its IV is 12 zero bytes)."""
    return iv + tag if version == 1 else tag


# ---------------------------------------------------------------------------------------------------------
# 3 body: the rules every reader and writer of frames applies, each in one place


def body_aad(message_id: bytes, content_string: bytes, sequence_number: int, length: int) -> bytes:
    """Section 3.1 body AAD: message ID, content string, UInt32 sequence number, UInt64 content length."""
    return message_id + content_string + BODY_AAD_TAIL.pack(sequence_number, length)


def check_frame_length(frame_length: int) -> None:
    """The frame lengths a writer may use: 1 to 2^31 - 1 (section 9; no multiple-of-16 rule, the ESDK reads any)."""
    if not 0 < frame_length <= MAX_WRITE_FRAME_LENGTH:
        raise UsageError("frame length must be between 1 and 2^31 - 1 bytes")


def check_frame_count(last_sequence_number: int, final: bool, frame_length: int) -> None:
    """A writer about to number a frame ``last_sequence_number`` (the final one when ``final``): section 3.1."""
    if last_sequence_number > (FINAL_FRAME_MARKER if final else MAX_REGULAR_FRAMES):
        raise UsageError(f"the plaintext needs more than 2^32 - 1 frames of {frame_length} bytes; "
                         "use a larger frame length")


def sequence_error(number: int, expected: int, at: int) -> FormatError:
    """A regular frame at byte ``at`` numbered ``number`` where ``expected`` was due."""
    return FormatError("sequence number", at, f"is {number}, expected {expected}")


def regular_frames(buf: bytes | bytearray | memoryview, frame_length: int, first: int, at: int = 0) -> int:
    """How many whole regular frames ``buf`` starts with, numbered ``first``, ``first + 1``, ...

    Stops at the final-frame marker or where less than a whole frame is left. A frame numbered otherwise is a
    :class:`FormatError` (``at`` is where ``buf`` starts in the message). The readers' one walk over frames:
    the streaming engine runs it on each batch, the in-memory path and the parser on the whole body.
    """
    r = frame_length + REGULAR_OVERHEAD
    unpack = SEQUENCE_NUMBER.unpack_from
    for i in range(len(buf) // r):
        number = unpack(buf, i * r)[0]
        if number == FINAL_FRAME_MARKER:
            return i
        if number != first + i:
            raise sequence_error(number, first + i, at + i * r)
    return len(buf) // r


def check_final_sequence(number: int, expected: int, at: int) -> None:
    """The final frame (starting at byte ``at``) carries the number after the last regular frame's."""
    if number != expected:
        raise FormatError("final frame sequence number", at + FINAL_SEQUENCE, f"is {number}, expected {expected}")


def check_final_length(length: int, frame_length: int, at: int) -> None:
    """The final frame (starting at byte ``at``) holds at most one frame length of content."""
    if length > frame_length:
        raise FormatError("final frame content length", at + FINAL_LENGTH,
                          f"is {length}, longer than the frame length {frame_length}")


def cut_frame_error(at: int, have: int, frame_length: int) -> TruncatedError:
    """The input ends ``have`` bytes into the regular frame starting at byte ``at`` (fewer than a whole frame)."""
    end = at + frame_length + REGULAR_OVERHEAD
    for name, start, stop in (("frame IV", at + REGULAR_IV, at + REGULAR_CONTENT),
                              ("frame content", at + REGULAR_CONTENT, at + REGULAR_CONTENT + frame_length)):
        if at + have < stop:
            return TruncatedError(name, start, end)
    return TruncatedError("frame tag", at + REGULAR_CONTENT + frame_length, end)


def check_non_framed_length(length: int, at: int) -> None:
    """Section 3.2: the UInt64 content length at byte ``at`` is at most 2^36 - 32."""
    if length > MAX_NON_FRAMED_LENGTH:
        raise FormatError("body content length", at, f"is {length}, above the limit of 2^36 - 32")


def framed_layout(body: bytes | bytearray | memoryview, frame_length: int) -> tuple[int, int, int] | None:
    """Walk a framed body held in memory: (regular frames, final frame content length, body length).

    None at anything irregular (a wrong sequence number, a final frame too long, input that ends early): the
    caller then runs the streaming reader, which reports the exact field and offset.
    """
    try:
        count = regular_frames(body, frame_length, 1)
        at = count * (frame_length + REGULAR_OVERHEAD)
        if at + FINAL_CONTENT > len(body) or SEQUENCE_NUMBER.unpack_from(body, at)[0] != FINAL_FRAME_MARKER:
            return None
        check_final_sequence(SEQUENCE_NUMBER.unpack_from(body, at + FINAL_SEQUENCE)[0], count + 1, at)
        length = U32.unpack_from(body, at + FINAL_LENGTH)[0]
        check_final_length(length, frame_length, at)
    except FormatError:
        return None
    end = at + FINAL_CONTENT + length + TAG_LENGTH
    return None if end > len(body) else (count, length, end)


def final_frame_offset(body_length: int, frame_length: int) -> int:
    """Where, from the start of a framed body of exactly ``body_length`` bytes, its final frame must start (the
    regular frames before it have a fixed size). :func:`check_body_end` checks that it does."""
    r = frame_length + REGULAR_OVERHEAD
    return max(0, body_length - FINAL_OVERHEAD) // r * r


def check_body_end(head: bytes | bytearray | memoryview, at: int, body_length: int, frame_length: int,
                   framed: bool) -> tuple[int, int]:
    """A body of exactly ``body_length`` bytes starting at byte ``at``, seen only through ``head``: for a framed
    body the first :data:`FINAL_CONTENT` bytes at :func:`final_frame_offset`, for a non-framed body its first
    :data:`NON_FRAMED_CONTENT` bytes. Checks that the final frame (marker, number and content length) or the
    block's length ends the body exactly there, so a truncated or extended body is refused without reading it
    (a rewrap that copies a file's body unread). Returns (offset of the final frame or the block from ``at``,
    its content length). Regular frames are not looked at: their numbers and tags are checked when the message
    is decrypted."""
    if not framed:
        if len(head) < NON_FRAMED_CONTENT or body_length < NON_FRAMED_CONTENT + TAG_LENGTH:
            raise TruncatedError("body IV and content length", at, at + NON_FRAMED_CONTENT + TAG_LENGTH)
        length = U64.unpack_from(head, NON_FRAMED_LENGTH)[0]
        check_non_framed_length(length, at + NON_FRAMED_LENGTH)
        if NON_FRAMED_CONTENT + length + TAG_LENGTH != body_length:
            raise FormatError("body content length", at + NON_FRAMED_LENGTH,
                              f"is {length}, but the body holds {body_length - NON_FRAMED_CONTENT - TAG_LENGTH} bytes "
                              "of content (truncated, or bytes appended)")
        return 0, length
    r = frame_length + REGULAR_OVERHEAD
    if body_length < FINAL_OVERHEAD:
        raise TruncatedError("final frame", at, at + FINAL_OVERHEAD)
    regular, length = divmod(body_length - FINAL_OVERHEAD, r)
    final_at = at + regular * r
    if length > frame_length or regular > MAX_REGULAR_FRAMES or len(head) < FINAL_CONTENT \
            or SEQUENCE_NUMBER.unpack_from(head, 0)[0] != FINAL_FRAME_MARKER:
        raise FormatError("end of message", at + body_length, f"a framed body of frame length {frame_length} cannot "
                          "end here: the message was truncated or has bytes appended")
    check_final_sequence(SEQUENCE_NUMBER.unpack_from(head, FINAL_SEQUENCE)[0], regular + 1, final_at)
    stored = U32.unpack_from(head, FINAL_LENGTH)[0]
    if stored != length:
        raise FormatError("final frame content length", final_at + FINAL_LENGTH,
                          f"is {stored}, but the body ends after {length} (truncated, or bytes appended)")
    return regular * r, length


def serialize_frame(frame: Frame) -> bytes:
    if frame.final:
        return b"".join((SEQUENCE_NUMBER.pack(FINAL_FRAME_MARKER), SEQUENCE_NUMBER.pack(frame.sequence_number),
                         frame.iv, U32.pack(len(frame.ciphertext)), frame.ciphertext, frame.tag))
    return b"".join((SEQUENCE_NUMBER.pack(frame.sequence_number), frame.iv, frame.ciphertext, frame.tag))


def serialize_non_framed(body: NonFramedBody) -> bytes:
    return body.iv + U64.pack(len(body.ciphertext)) + body.ciphertext + body.tag


def _parse_frames(cur: _Cursor, frame_length: int) -> tuple[Frame, ...]:
    count = regular_frames(cur.buf[cur.pos:], frame_length, 1, cur.pos)
    frames = []
    for number in range(1, count + 1):
        cur.skip(SEQUENCE_NUMBER.size, "sequence number")
        frames.append(Frame(number, cur.take(IV_LENGTH, "frame IV"), cur.take(frame_length, "frame content"),
                            cur.take(TAG_LENGTH, "frame tag"), False))
    expected = count + 1
    at = cur.pos
    first = cur.u32("sequence number")
    if first != FINAL_FRAME_MARKER:  # less than a whole frame is left: the field it ends in is truncated
        if first != expected:
            raise sequence_error(first, expected, at)
        cur.skip(IV_LENGTH, "frame IV")
        cur.skip(frame_length, "frame content")
        cur.skip(TAG_LENGTH, "frame tag")
        raise AssertionError("regular_frames stopped before a whole frame")  # unreachable: a skip raised
    number = cur.u32("final frame sequence number")
    check_final_sequence(number, expected, at)
    iv = cur.take(IV_LENGTH, "final frame IV")
    length = cur.u32("final frame content length")
    check_final_length(length, frame_length, at)
    ciphertext = cur.take(length, "final frame content")
    tag = cur.take(TAG_LENGTH, "final frame tag")
    frames.append(Frame(number, iv, ciphertext, tag, True))
    return tuple(frames)


def _parse_non_framed(cur: _Cursor) -> NonFramedBody:
    iv = cur.take(IV_LENGTH, "body IV")
    len_at = cur.pos
    length = cur.u64("body content length")
    check_non_framed_length(length, len_at)
    ciphertext = cur.take(length, "body content")
    tag = cur.take(TAG_LENGTH, "body tag")
    return NonFramedBody(iv, ciphertext, tag)


# ---------------------------------------------------------------------------------------------------------
# 4 footer


def footer_length(signature_length: int) -> int:
    """Bytes of a footer holding a signature of ``signature_length`` bytes."""
    return SIGNATURE_LENGTH.size + signature_length


def serialize_footer(footer: Footer) -> bytes:
    return SIGNATURE_LENGTH.pack(len(footer.signature)) + footer.signature


def parse_footer(buf: bytes | memoryview, offset: int = 0) -> tuple[Footer, int]:
    """Section 4: UInt16 length and the DER signature. Returns (footer, end offset)."""
    cur = _Cursor(buf, offset)
    return _parse_footer(cur), cur.pos


def _parse_footer(cur: _Cursor) -> Footer:
    return Footer(cur.take(cur.u16("signature length"), "signature"))


# ---------------------------------------------------------------------------------------------------------
# whole messages


def parse_message(buf: bytes | bytearray | memoryview, *, max_encrypted_data_keys: int | None = None
                  ) -> Message:
    """Parse a whole message (no keys: structure only). Trailing bytes are rejected (section 5 step 8)."""
    return _parse_message(_Cursor(buf), max_encrypted_data_keys)


def _parse_message(cur: _Cursor, max_encrypted_data_keys: int | None) -> Message:
    header, auth = _parse_header(cur, max_encrypted_data_keys)
    body: tuple[Frame, ...] | NonFramedBody
    body = _parse_frames(cur, header.frame_length) if header.framed else _parse_non_framed(cur)
    footer = _parse_footer(cur) if header.suite.signed else None
    if cur.pos != len(cur.buf):
        raise FormatError("end of message", cur.pos, f"{len(cur.buf) - cur.pos} trailing bytes after the message")
    return Message(header, auth, body, footer)


def message_fields(buf: bytes | bytearray | memoryview) -> list[tuple[str, int, int]]:
    """Every field of a well-formed message as (name, start, end), in order: what :func:`parse_message` reads,
    under the names its errors use (the AAD is one field, "encryption context"). For tools that change
    messages at a named field (the hostile vectors); raises as :func:`parse_message` does."""
    cur = _Recorder(buf)
    _parse_message(cur, None)
    return cur.fields


def header_fields(buf: bytes | bytearray | memoryview) -> list[tuple[str, int, int]]:
    """The same for the header alone (header body and header authentication), as :func:`parse_header` reads it."""
    cur = _Recorder(buf)
    _parse_header(cur, None)
    return cur.fields


def serialize_message(message: Message) -> bytes:
    parts = [serialize_header_body(message.header), serialize_header_auth(message.header, message.auth)]
    if isinstance(message.body, NonFramedBody):
        parts.append(serialize_non_framed(message.body))
    else:
        parts += [serialize_frame(f) for f in message.body]
    if message.footer is not None:
        parts.append(serialize_footer(message.footer))
    return b"".join(parts)
