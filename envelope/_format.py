"""Pure parsing and serialising of the ESDK message format: bytes in, frozen dataclasses out.

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
    "CONTENT_FRAMED",
    "CONTENT_NON_FRAMED",
    "FINAL_FRAME_MARKER",
    "EncryptedDataKey",
    "Footer",
    "Frame",
    "Header",
    "HeaderAuth",
    "Message",
    "NonFramedBody",
    "body_aad",
    "parse_context",
    "parse_footer",
    "parse_header",
    "parse_message",
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
FINAL_FRAME_MARKER = 0xFFFFFFFF
MAX_FRAME_LENGTH = 2**32 - 1
MAX_NON_FRAMED_LENGTH = 2**36 - 32
COMMITMENT_LENGTH = 32

# section 3.1 body AAD content strings
FRAME_STRING = b"AWSKMSEncryptionClient Frame"
FINAL_FRAME_STRING = b"AWSKMSEncryptionClient Final Frame"
SINGLE_BLOCK_STRING = b"AWSKMSEncryptionClient Single Block"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SEQ_LEN = struct.Struct(">IQ")


@dataclass(frozen=True)
class EncryptedDataKey:
    """Section 7.1. ``provider_id`` is UTF-8 text; ``provider_info`` and ``ciphertext`` are opaque bytes."""

    provider_id: str
    provider_info: bytes
    ciphertext: bytes

    def serialize(self) -> bytes:
        pid = self.provider_id.encode("utf-8")
        for name, value in (("provider id", pid), ("provider info", self.provider_info),
                            ("ciphertext", self.ciphertext)):
            if len(value) > 0xFFFF:
                raise UsageError(f"encrypted data key {name} is longer than 65,535 bytes")
        return b"".join((_U16.pack(len(pid)), pid, _U16.pack(len(self.provider_info)), self.provider_info,
                         _U16.pack(len(self.ciphertext)), self.ciphertext))


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


class _Cursor:
    """Reads big-endian fields from a buffer, naming the field on every failure."""

    __slots__ = ("bounded", "buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.bounded = end is not None  # reading inside a length-prefixed field (the AAD)
        self.end = len(self.buf) if end is None else end

    def take(self, n: int, name: str) -> bytes:
        start = self.pos
        if start + n > self.end:
            if self.bounded:  # a sub-field overran the length its enclosing field declared
                raise FormatError(name, start, "runs past the end of its enclosing field")
            raise TruncatedError(name, start, start + n)
        self.pos = start + n
        return bytes(self.buf[start:start + n])

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return int(_U16.unpack(self.take(2, name))[0])

    def u32(self, name: str) -> int:
        return int(_U32.unpack(self.take(4, name))[0])

    def u64(self, name: str) -> int:
        return int(_U64.unpack(self.take(8, name))[0])


def _utf8(raw: bytes, name: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(name, offset + exc.start, "is not valid UTF-8") from None


# ---------------------------------------------------------------------------------------------------------
# 6.1 encryption context


def serialize_context(context: Mapping[str, str]) -> bytes:
    """Section 6.1: empty context -> b""; otherwise count and entries sorted by the key's UTF-8 bytes."""
    if not context:
        return b""
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
    entries.sort(key=lambda kv: kv[0])
    if len(entries) > 0xFFFF:
        raise UsageError("the encryption context has more than 65,535 entries")
    out = [_U16.pack(len(entries))]
    for kb, vb in entries:
        out += [_U16.pack(len(kb)), kb, _U16.pack(len(vb)), vb]
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


def serialize_header_body(header: Header) -> bytes:
    """Sections 1.1 (v1) and 1.2 (v2)."""
    suite = header.suite
    if header.version != suite.message_version:
        raise UsageError(f"suite {suite.hex_id} needs header version {suite.message_version}")
    if len(header.message_id) != suite.message_id_length:
        raise UsageError(f"message ID must be {suite.message_id_length} bytes")
    if not header.encrypted_data_keys:
        raise UsageError("a message needs at least one encrypted data key")
    if len(header.encrypted_data_keys) > 0xFFFF:
        raise UsageError("a message holds at most 65,535 encrypted data keys")
    aad = serialize_context(header.encryption_context)
    if len(aad) > 0xFFFF:
        raise UsageError("the serialised encryption context is longer than 65,535 bytes")
    parts: list[bytes] = []
    if header.version == 1:
        parts += [bytes((1, V1_TYPE))]
    else:
        parts += [b"\x02"]
    parts += [_U16.pack(suite.id), header.message_id, _U16.pack(len(aad)), aad,
              _U16.pack(len(header.encrypted_data_keys))]
    parts += [edk.serialize() for edk in header.encrypted_data_keys]
    parts += [bytes((header.content_type,))]
    if header.version == 1:
        parts += [b"\x00\x00\x00\x00", bytes((IV_LENGTH,)), _U32.pack(header.frame_length)]
    else:
        if len(header.commitment) != COMMITMENT_LENGTH:
            raise UsageError("v2 headers carry a 32-byte commitment")
        parts += [_U32.pack(header.frame_length), header.commitment]
    return b"".join(parts)


def parse_header(buf: bytes | bytearray | memoryview, *, max_encrypted_data_keys: int | None = None
                 ) -> tuple[Header, HeaderAuth, int]:
    """Parse the header body and its authentication. Returns (header, auth, bytes consumed).

    ``header.raw`` holds the exact header-body bytes to authenticate (section 1.3: never re-serialise).
    The EDK limit is enforced as soon as the count is read (section 5 step 1).
    """
    cur = _Cursor(buf)
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
    aad_at = cur.pos
    if aad_at + aad_length > len(cur.buf):
        raise TruncatedError("encryption context", aad_at, aad_at + aad_length)
    context = parse_context(cur.buf, aad_at, aad_length)
    cur.pos = aad_at + aad_length
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
    return header, HeaderAuth(iv, tag), cur.pos


def serialize_header_auth(header: Header, auth: HeaderAuth) -> bytes:
    return auth.iv + auth.tag if header.version == 1 else auth.tag


# ---------------------------------------------------------------------------------------------------------
# 3 body


def body_aad(message_id: bytes, content_string: bytes, sequence_number: int, length: int) -> bytes:
    """Section 3.1 body AAD: message ID, content string, UInt32 sequence number, UInt64 content length."""
    return message_id + content_string + _SEQ_LEN.pack(sequence_number, length)


def serialize_frame(frame: Frame) -> bytes:
    if frame.final:
        return b"".join((_U32.pack(FINAL_FRAME_MARKER), _U32.pack(frame.sequence_number), frame.iv,
                         _U32.pack(len(frame.ciphertext)), frame.ciphertext, frame.tag))
    return b"".join((_U32.pack(frame.sequence_number), frame.iv, frame.ciphertext, frame.tag))


def serialize_non_framed(body: NonFramedBody) -> bytes:
    return body.iv + _U64.pack(len(body.ciphertext)) + body.ciphertext + body.tag


def _parse_frames(cur: _Cursor, frame_length: int) -> tuple[Frame, ...]:
    frames = []
    expected = 1
    while True:
        at = cur.pos
        first = cur.u32("sequence number")
        if first == FINAL_FRAME_MARKER:
            seq_at = cur.pos
            seq = cur.u32("final frame sequence number")
            if seq != expected:
                raise FormatError("final frame sequence number", seq_at, f"is {seq}, expected {expected}")
            iv = cur.take(IV_LENGTH, "final frame IV")
            len_at = cur.pos
            length = cur.u32("final frame content length")
            if length > frame_length:
                raise FormatError("final frame content length", len_at,
                                  f"is {length}, longer than the frame length {frame_length}")
            ciphertext = cur.take(length, "final frame content")
            tag = cur.take(TAG_LENGTH, "final frame tag")
            frames.append(Frame(seq, iv, ciphertext, tag, True))
            return tuple(frames)
        if first != expected:
            raise FormatError("sequence number", at, f"is {first}, expected {expected}")
        iv = cur.take(IV_LENGTH, "frame IV")
        ciphertext = cur.take(frame_length, "frame content")
        tag = cur.take(TAG_LENGTH, "frame tag")
        frames.append(Frame(first, iv, ciphertext, tag, False))
        expected += 1


def _parse_non_framed(cur: _Cursor) -> NonFramedBody:
    iv = cur.take(IV_LENGTH, "body IV")
    len_at = cur.pos
    length = cur.u64("body content length")
    if length > MAX_NON_FRAMED_LENGTH:
        raise FormatError("body content length", len_at, f"is {length}, above the limit of 2^36 - 32")
    ciphertext = cur.take(length, "body content")
    tag = cur.take(TAG_LENGTH, "body tag")
    return NonFramedBody(iv, ciphertext, tag)


def serialize_footer(footer: Footer) -> bytes:
    return _U16.pack(len(footer.signature)) + footer.signature


def parse_footer(buf: bytes | memoryview, offset: int = 0) -> tuple[Footer, int]:
    """Section 4: UInt16 length and the DER signature. Returns (footer, end offset)."""
    cur = _Cursor(buf, offset)
    signature = cur.take(cur.u16("signature length"), "signature")
    return Footer(signature), cur.pos


def parse_message(buf: bytes | bytearray | memoryview, *, max_encrypted_data_keys: int | None = None
                  ) -> Message:
    """Parse a whole message (no keys: structure only). Trailing bytes are rejected (section 5 step 8)."""
    header, auth, pos = parse_header(buf, max_encrypted_data_keys=max_encrypted_data_keys)
    cur = _Cursor(buf, pos)
    body: tuple[Frame, ...] | NonFramedBody
    body = _parse_frames(cur, header.frame_length) if header.framed else _parse_non_framed(cur)
    footer = None
    if header.suite.signed:
        footer, cur.pos = parse_footer(cur.buf, cur.pos)
    if cur.pos != len(cur.buf):
        raise FormatError("end of message", cur.pos, f"{len(cur.buf) - cur.pos} trailing bytes after the message")
    return Message(header, auth, body, footer)


def serialize_message(message: Message) -> bytes:
    parts = [serialize_header_body(message.header), serialize_header_auth(message.header, message.auth)]
    if isinstance(message.body, NonFramedBody):
        parts.append(serialize_non_framed(message.body))
    else:
        parts += [serialize_frame(f) for f in message.body]
    if message.footer is not None:
        parts.append(serialize_footer(message.footer))
    return b"".join(parts)
