"""envelope._format: pure parsing and serialising (esdk-format.md sections 1, 3, 4, 6.1, 7.1, 9).

Every rejection must be a FormatError that names the field and its byte offset from the start of the
message; offsets are checked against ``helpers.field_map``, a layout walker written independently of the
parser.
"""

from __future__ import annotations

import os
import struct

import pytest
from aws_encryption_sdk.internal.formatting.encryption_context import serialize_encryption_context
from helpers import esdk_aes_key, esdk_encrypt

import envelope
from envelope import _format as fmt
from envelope._suites import SUITES
from envelope.errors import FormatError, PolicyError, TruncatedError, UsageError
from testkit.messages import field_at, field_map, replace_at, u16, u32

KEY = bytes(range(32))
KEYRING = envelope.RawAesKeyring("ns", "key", KEY)
CONTEXT = {"purpose": "format tests", "b": "2"}
FRAME = 16


def _message(suite_id: int, size: int = 3 * FRAME + 7, context: dict[str, str] | None = None) -> bytes:
    policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else "forbid-encrypt-allow-decrypt"
    return envelope.encrypt(os.urandom(size), keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                            context=CONTEXT if context is None else context, commitment_policy=policy)


@pytest.fixture(scope="module")
def messages() -> dict[str, bytes]:
    """One message of each layout: v1/v2, signed/unsigned, framed (several frames)/non-framed (by the ESDK)."""
    esdk_key = esdk_aes_key("ns", "key", KEY)
    return {
        "v1": _message(0x0114),
        "v1-signed": _message(0x0378),
        "v2": _message(0x0478),
        "v2-signed": _message(0x0578),
        "v1-empty-context": _message(0x0146, size=0, context={}),
        "v1-non-framed": esdk_encrypt(b"non-framed body", esdk_key, 0x0214, context=CONTEXT, frame_length=0),
        "v2-non-framed": esdk_encrypt(b"non-framed body", esdk_key, 0x0578, context={}, frame_length=0),
    }


def expect_error(data: bytes, field: str, offset: int, parse=fmt.parse_message) -> FormatError:
    with pytest.raises(FormatError) as info:
        parse(data)
    assert (info.value.field, info.value.offset) == (field, offset), str(info.value)
    assert field in str(info.value) and str(offset) in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("name", ["v1", "v1-signed", "v2", "v2-signed", "v1-empty-context", "v1-non-framed",
                                  "v2-non-framed"])
def test_parse_then_serialise_returns_the_same_bytes(messages: dict[str, bytes], name: str) -> None:
    data = messages[name]
    message = fmt.parse_message(data)
    assert fmt.serialize_message(message) == data
    # the pieces agree with the independent layout walker
    fields = field_map(data)
    start, end = field_at(fields, "header authentication tag")
    assert message.auth.tag == data[start:end]
    body_end = field_at(fields, "header IV")[0] if data[0] == 1 else start  # v2: the tag follows the body
    assert message.header.raw == data[:body_end]
    if name.endswith("non-framed"):
        assert isinstance(message.body, fmt.NonFramedBody)
        assert message.header.content_type == fmt.CONTENT_NON_FRAMED and message.header.frame_length == 0
    else:
        assert isinstance(message.body, tuple)
        assert [f.sequence_number for f in message.body] == list(range(1, len(message.body) + 1))
        assert [f.final for f in message.body] == [False] * (len(message.body) - 1) + [True]
    assert (message.footer is not None) == message.header.suite.signed


def test_framed_body_layout(messages: dict[str, bytes]) -> None:
    """3 full frames and 7 bytes: three regular frames, then a final frame of 7 (section 3.1)."""
    message = fmt.parse_message(messages["v2"])
    assert isinstance(message.body, tuple)
    assert [(f.sequence_number, len(f.ciphertext), f.final) for f in message.body] == [
        (1, 16, False), (2, 16, False), (3, 16, False), (4, 7, True)]
    assert [f.iv for f in message.body] == [bytes(8) + u32(n) for n in (1, 2, 3, 4)]
    empty = fmt.parse_message(messages["v1-empty-context"])
    assert isinstance(empty.body, tuple) and len(empty.body) == 1 and empty.body[0].final
    assert empty.body[0].ciphertext == b"" and empty.header.encryption_context == {}


@pytest.mark.parametrize("suite_id", [0x0078, 0x0214, 0x0478, 0x0578])
@pytest.mark.parametrize("content_type", [fmt.CONTENT_FRAMED, fmt.CONTENT_NON_FRAMED])
def test_header_serialise_then_parse(suite_id: int, content_type: int) -> None:
    suite = SUITES[suite_id]
    header = fmt.Header(
        version=suite.message_version, suite=suite, message_id=os.urandom(suite.message_id_length),
        encryption_context={"k\u00e9y": "v\u00e4lue", "\x00first": ""},
        encrypted_data_keys=(fmt.EncryptedDataKey("p\u00e9", b"\x00info", b"ct"), fmt.EncryptedDataKey("q", b"", b"")),
        content_type=content_type, frame_length=4096 if content_type == fmt.CONTENT_FRAMED else 0,
        commitment=os.urandom(32) if suite.committing else b"")
    body = fmt.serialize_header_body(header)
    auth = fmt.HeaderAuth(bytes(12) if suite.message_version == 2 else os.urandom(12), os.urandom(16))
    data = body + fmt.serialize_header_auth(header, auth) + b"rest of message"
    parsed, parsed_auth, used = fmt.parse_header(data)
    assert parsed == header and parsed.raw == body
    assert parsed_auth == auth
    assert used == len(data) - len(b"rest of message")
    # fixed overheads of sections 1.1 and 1.2
    aad = fmt.serialize_context(header.encryption_context)
    edks = sum(len(e.serialize()) for e in header.encrypted_data_keys)
    assert len(body) == (34 if suite.message_version == 1 else 76) + len(aad) + edks


def test_serialise_header_refuses_impossible_headers() -> None:
    suite = SUITES[0x0478]
    good = fmt.Header(2, suite, bytes(32), {}, (fmt.EncryptedDataKey("p", b"", b""),), 2, 16, bytes(32))
    fmt.serialize_header_body(good)
    for bad in (
        fmt.Header(1, suite, bytes(32), {}, good.encrypted_data_keys, 2, 16, bytes(32)),  # version mismatch
        fmt.Header(2, suite, bytes(16), {}, good.encrypted_data_keys, 2, 16, bytes(32)),  # v1-sized message ID
        fmt.Header(2, suite, bytes(32), {}, (), 2, 16, bytes(32)),  # no EDK
        fmt.Header(2, suite, bytes(32), {}, good.encrypted_data_keys, 2, 16, bytes(31)),  # short commitment
        fmt.Header(2, suite, bytes(32), {"k": "v" * 70000}, good.encrypted_data_keys, 2, 16, bytes(32)),
    ):
        with pytest.raises(UsageError):
            fmt.serialize_header_body(bad)


def test_footer_round_trip_any_length() -> None:
    for n in (0, 1, 71, 102, 103, 104, 300):
        signature = os.urandom(n)
        data = fmt.serialize_footer(fmt.Footer(signature))
        assert data == u16(n) + signature
        assert fmt.parse_footer(b"xx" + data, 2) == (fmt.Footer(signature), n + 4)
    with pytest.raises(TruncatedError) as info:
        fmt.parse_footer(u16(10) + bytes(9))
    assert (info.value.field, info.value.offset) == ("signature", 2)


def test_body_aad_layout() -> None:
    """Section 3.1: message ID, content string, UInt32 sequence number, UInt64 length."""
    mid = bytes(range(32))
    assert fmt.body_aad(mid, fmt.FRAME_STRING, 3, 4096) == (
        mid + b"AWSKMSEncryptionClient Frame" + b"\x00\x00\x00\x03" + b"\x00" * 6 + b"\x10\x00")
    assert len(fmt.FINAL_FRAME_STRING) == 34 and len(fmt.SINGLE_BLOCK_STRING) == 35


# ---------------------------------------------------------------------------------------------------------
# 6.1 encryption context


def test_context_serialisation_sorts_by_utf8_bytes() -> None:
    # UTF-16 order would put U+1F511 (a surrogate pair, 0xD83D...) before U+FFFF; UTF-8 order puts it after.
    context = {"\U0001f511": "key", "\uffff": "max", "b": "", "\x00a": "null"}
    expected = u16(4) + b"".join(
        u16(len(k.encode())) + k.encode() + u16(len(v.encode())) + v.encode()
        for k, v in [("\x00a", "null"), ("b", ""), ("\uffff", "max"), ("\U0001f511", "key")])
    assert fmt.serialize_context(context) == expected
    assert fmt.serialize_context(context) == serialize_encryption_context(context)  # the ESDK agrees
    assert fmt.parse_context(expected) == context
    assert fmt.serialize_context({}) == b"" and fmt.parse_context(b"") == {}


def test_context_in_any_order_is_read() -> None:
    """Writers sort, but valid messages exist with unsorted keys (KAT vectors 15, 17, 19); the ESDK reads them."""
    raw = u16(2) + u16(1) + b"b" + u16(1) + b"1" + u16(1) + b"a" + u16(1) + b"2"
    assert fmt.parse_context(raw) == {"b": "1", "a": "2"}


def test_context_serialisation_refuses_bad_input() -> None:
    for bad in ({"k": 1}, {1: "v"}, {"k": "\ud800"}, {"k" * 70000: "v"}):
        with pytest.raises(UsageError):
            fmt.serialize_context(bad)  # type: ignore[arg-type]


def _with_aad(message: bytes, aad: bytes) -> tuple[bytes, int]:
    """Replace the AAD field of ``message``; returns the new message and the AAD's offset."""
    fields = field_map(message)
    length_at, _ = field_at(fields, "AAD length")
    old_end = length_at + 2 + int.from_bytes(message[length_at:length_at + 2], "big")
    return message[:length_at] + u16(len(aad)) + aad + message[old_end:], length_at + 2


def _entry(key: bytes, value: bytes) -> bytes:
    return u16(len(key)) + key + u16(len(value)) + value


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_context_rejections_name_field_and_offset(messages: dict[str, bytes], name: str) -> None:
    message = messages[name]
    # duplicate key, even when the duplicates are not next to each other
    entries = [_entry(b"a", b"1"), _entry(b"b", b"2"), _entry(b"a", b"3")]
    data, at = _with_aad(message, u16(3) + b"".join(entries))
    expect_error(data, "encryption context key", at + 2 + len(entries[0]) + len(entries[1]) + 2)
    # count 0 inside a non-empty AAD (section 6.1 and 12.8: a strict reader refuses it)
    data, at = _with_aad(message, u16(0))
    expect_error(data, "encryption context count", at)
    # invalid UTF-8: the offset is the first bad byte
    data, at = _with_aad(message, u16(1) + _entry(b"ok\xffkey", b"v"))
    expect_error(data, "encryption context key", at + 2 + 2 + 2)
    data, at = _with_aad(message, u16(1) + _entry(b"k", b"\xc3"))
    expect_error(data, "encryption context value", at + 2 + 3 + 2)
    # bytes left over after the last entry
    data, at = _with_aad(message, u16(1) + _entry(b"k", b"v") + b"\x00")
    expect_error(data, "encryption context", at + 2 + 6)
    # an entry that runs past the AAD length it sits in is a format error, not a truncation
    data, at = _with_aad(message, u16(1) + u16(1) + b"k" + u16(5) + b"v")
    error = expect_error(data, "encryption context value", at + 7)
    assert not isinstance(error, TruncatedError)


# ---------------------------------------------------------------------------------------------------------
# header rejections (section 5 step 1, section 9)


def test_unknown_version_and_type(messages: dict[str, bytes]) -> None:
    for version in (0x00, 0x03, 0x80, 0xFF):
        expect_error(replace_at(messages["v2"], 0, bytes([version])), "version", 0)
    error = expect_error(b"AYAAFKVk" + bytes(100), "version", 0)  # base64 text of a v1 message
    assert "base64" in str(error)
    for msg_type in (0x00, 0x81, 0xFF):
        expect_error(replace_at(messages["v1"], 1, bytes([msg_type])), "type", 1)


@pytest.mark.parametrize("suite_id", [0x0000, 0x0070, 0x0074, 0x6700, 0x6701, 0x0115, 0xFFFF])
def test_unknown_suite(messages: dict[str, bytes], suite_id: int) -> None:
    expect_error(replace_at(messages["v1"], 2, u16(suite_id)), "algorithm suite ID", 2)
    expect_error(replace_at(messages["v2"], 1, u16(suite_id)), "algorithm suite ID", 1)


def test_suite_and_version_must_match(messages: dict[str, bytes]) -> None:
    expect_error(replace_at(messages["v1"], 2, u16(0x0478)), "algorithm suite ID", 2)
    expect_error(replace_at(messages["v2"], 1, u16(0x0178)), "algorithm suite ID", 1)


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_header_field_rejections(messages: dict[str, bytes], name: str) -> None:
    message = messages[name]
    fields = field_map(message)
    ct_at, _ = field_at(fields, "content type")
    fl_at, _ = field_at(fields, "frame length")
    for content_type in (0x00, 0x03, 0x80):
        expect_error(replace_at(message, ct_at, bytes([content_type])), "content type", ct_at)
    # non-framed content with a non-zero frame length
    expect_error(replace_at(message, ct_at, b"\x01"), "frame length", fl_at)
    # framed content with frame length 0 (2^32 empty frames would otherwise be possible)
    expect_error(replace_at(message, fl_at, u32(0)), "frame length", fl_at)
    count_at, _ = field_at(fields, "encrypted data key count")
    expect_error(replace_at(message, count_at, u16(0)), "encrypted data key count", count_at)
    pid_at, _ = field_at(fields, "key provider ID")
    expect_error(replace_at(message, pid_at + 1, b"\xff"), "key provider ID", pid_at + 1)
    if name == "v1":
        reserved_at, _ = field_at(fields, "reserved")
        for i in range(4):
            expect_error(replace_at(message, reserved_at + i, b"\x01"), "reserved", reserved_at)
        iv_at, _ = field_at(fields, "IV length")
        for iv_length in (0, 11, 16):
            expect_error(replace_at(message, iv_at, bytes([iv_length])), "IV length", iv_at)


def test_non_framed_v2_must_have_frame_length_zero(messages: dict[str, bytes]) -> None:
    message = messages["v2-non-framed"]
    fl_at, _ = field_at(field_map(message), "frame length")
    expect_error(replace_at(message, fl_at, u32(4096)), "frame length", fl_at)


def test_edk_limit_is_enforced_as_soon_as_the_count_is_read() -> None:
    two = envelope.MultiKeyring(KEYRING, [envelope.RawAesKeyring("ns", "other", os.urandom(16))])
    message = envelope.encrypt(b"x", keyring=two)
    count_at, end = field_at(field_map(message), "encrypted data key count")
    assert message[count_at:end] == u16(2)
    # the input stops right after the count: a parser that read the EDKs first would report truncation
    with pytest.raises(PolicyError) as info:
        fmt.parse_header(message[:end], max_encrypted_data_keys=1)
    assert "2 encrypted data keys" in str(info.value) and "limit is 1" in str(info.value)
    fmt.parse_header(message, max_encrypted_data_keys=2)
    with pytest.raises(TruncatedError):
        fmt.parse_header(message[:end], max_encrypted_data_keys=2)


# ---------------------------------------------------------------------------------------------------------
# body and footer rejections


def _frame_starts(message: bytes) -> list[int]:
    fields = field_map(message)
    return [s for n, s, _ in fields if n == "sequence number"]


@pytest.mark.parametrize("name", ["v1-signed", "v2"])
def test_bad_sequence_numbers(messages: dict[str, bytes], name: str) -> None:
    message = messages[name]
    starts = _frame_starts(message)  # three regular frames, then the final frame's end marker
    assert len(starts) == 4
    for wrong in (0, 2, 3, 0xFFFFFFFE):
        expect_error(replace_at(message, starts[0], u32(wrong)), "sequence number", starts[0])
    expect_error(replace_at(message, starts[1], u32(1)), "sequence number", starts[1])  # repeated
    expect_error(replace_at(message, starts[2], u32(4)), "sequence number", starts[2])  # skipped
    final_seq_at, _ = field_at(field_map(message), "final frame sequence number")
    for wrong in (0, 3, 5, 0xFFFFFFFF):
        expect_error(replace_at(message, final_seq_at, u32(wrong)), "final frame sequence number", final_seq_at)


def test_final_frame_longer_than_frame_length(messages: dict[str, bytes]) -> None:
    message = messages["v2"]
    at, _ = field_at(field_map(message), "final frame content length")
    expect_error(replace_at(message, at, u32(FRAME + 1)), "final frame content length", at)
    expect_error(replace_at(message, at, u32(0xFFFFFFFF)), "final frame content length", at)
    # equal to the frame length is allowed (the bytes then no longer line up, so it is truncated later)
    with pytest.raises(TruncatedError):
        fmt.parse_message(replace_at(message, at, u32(FRAME)))


def test_non_framed_length_limit(messages: dict[str, bytes]) -> None:
    message = messages["v2-non-framed"]
    at, _ = field_at(field_map(message), "body content length")
    expect_error(replace_at(message, at, struct.pack(">Q", 2**36 - 31)), "body content length", at)
    with pytest.raises(TruncatedError) as info:  # at the limit it is only short of bytes
        fmt.parse_message(replace_at(message, at, struct.pack(">Q", 2**36 - 32)))
    assert info.value.field == "body content"


@pytest.mark.parametrize("name", ["v1", "v1-signed", "v2-signed", "v1-empty-context", "v1-non-framed",
                                  "v2-non-framed"])
def test_truncation_anywhere_names_the_field_being_read(messages: dict[str, bytes], name: str) -> None:
    """Cut the message before every byte: the error names the field holding that byte, at its offset."""
    message = messages[name]
    fields = field_map(message)
    owner = {}
    for field, start, end in fields:
        for i in range(start, end):
            owner[i] = (field, start)
    for cut in range(len(message)):
        with pytest.raises(TruncatedError) as info:
            fmt.parse_message(message[:cut])
        assert (info.value.field, info.value.offset) == owner[cut], f"cut at {cut}: {info.value}"
        assert info.value.needed > cut


@pytest.mark.parametrize("name", ["v1", "v2-signed", "v1-non-framed"])
def test_trailing_bytes(messages: dict[str, bytes], name: str) -> None:
    message = messages[name]
    for extra in (b"\x00", b"garbage", message):
        expect_error(message + extra, "end of message", len(message))
