"""envelope._format as the owner of the body layout (esdk-format.md sections 3 and 4): the offsets and structs
the engine uses, the frame walk every reader shares, and the field listing the vector tools use.

The offsets are checked against ``field_map``, a layout walker written independently of ``envelope._format``.
"""

from __future__ import annotations

import itertools
import os

import pytest
from helpers import esdk_aes_key, esdk_encrypt

import envelope
from envelope import _format as fmt
from envelope._suites import SUITES
from envelope.errors import FormatError, TruncatedError, UsageError
from testkit.messages import field_at, field_map, replace_at, u32

KEYRING = envelope.RawAesKeyring("ns", "layout", bytes(range(32)))
FRAME = 16


def _message(suite_id: int, size: int, frame_length: int = FRAME) -> bytes:
    policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else "forbid-encrypt-allow-decrypt"
    return envelope.encrypt(os.urandom(size), keyring=KEYRING, algorithm=suite_id, frame_length=frame_length,
                            context={"a": "1"}, commitment_policy=policy)


def _body(message: bytes) -> memoryview:
    return memoryview(message)[fmt.parse_header(message)[2]:]


@pytest.mark.parametrize("suite_id", sorted(SUITES))
@pytest.mark.parametrize("size", [0, FRAME - 1, FRAME, 3 * FRAME + 5])
def test_message_fields_match_the_independent_walker(suite_id: int, size: int) -> None:
    message = _message(suite_id, size)
    listed = fmt.message_fields(message)
    assert [f for f in listed if f[2] > f[1]] == field_map(message)
    assert listed[0][1] == 0 and listed[-1][2] == len(message)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(listed))  # contiguous, nothing skipped


@pytest.mark.parametrize("suite_id", [0x0214, 0x0478])
def test_message_fields_of_non_framed_messages(suite_id: int) -> None:
    message = esdk_encrypt(b"non-framed", esdk_aes_key("ns", "layout", bytes(range(32))), suite_id, context={},
                           frame_length=0)
    assert [f for f in fmt.message_fields(message) if f[2] > f[1]] == field_map(message)
    start = field_at(field_map(message), "body IV")[0]
    assert field_at(field_map(message), "body content length")[0] - start == fmt.NON_FRAMED_LENGTH
    assert field_at(field_map(message), "body content")[0] - start == fmt.NON_FRAMED_CONTENT


def test_body_offsets_are_the_fields_of_a_frame() -> None:
    """The named offsets are exactly where the independent walker finds each field."""
    message = _message(0x0478, 2 * FRAME + 3)
    fields = field_map(message)
    first = field_at(fields, "sequence number")[0]
    assert field_at(fields, "frame IV")[0] - first == fmt.REGULAR_IV
    assert field_at(fields, "frame content")[0] - first == fmt.REGULAR_CONTENT
    assert field_at(fields, "sequence number", 1)[0] - first == FRAME + fmt.REGULAR_OVERHEAD
    final = field_at(fields, "sequence number", 2)[0]
    assert field_at(fields, "final frame sequence number")[0] - final == fmt.FINAL_SEQUENCE
    assert field_at(fields, "final frame IV")[0] - final == fmt.FINAL_IV
    assert field_at(fields, "final frame content length")[0] - final == fmt.FINAL_LENGTH
    assert field_at(fields, "final frame content")[0] - final == fmt.FINAL_CONTENT
    assert field_at(fields, "final frame tag")[1] - final == 3 + fmt.FINAL_OVERHEAD
    # the writer's IV: 8 zero bytes and the sequence number
    start, end = field_at(fields, "frame IV", 1)
    assert message[start:end] == fmt.WRITER_IV.pack(2) == bytes(8) + u32(2)


def test_regular_frames_counts_whole_frames_and_stops_at_the_final_one() -> None:
    message = _message(0x0478, 3 * FRAME + 5)
    body = _body(message)
    r = FRAME + fmt.REGULAR_OVERHEAD
    assert fmt.regular_frames(body, FRAME, 1) == 3
    assert fmt.regular_frames(body[:2 * r + r - 1], FRAME, 1) == 2  # a cut third frame is not counted
    assert fmt.regular_frames(body[r:], FRAME, 2) == 2  # a batch that starts at frame 2
    assert fmt.regular_frames(body[3 * r:], FRAME, 4) == 0  # the final frame
    with pytest.raises(FormatError) as info:
        fmt.regular_frames(body[r:], FRAME, 1, at=1000 + r)
    assert (info.value.field, info.value.offset, info.value.reason) == ("sequence number", 1000 + r,
                                                                       "is 2, expected 1")


def test_framed_layout_accepts_regular_bodies_only() -> None:
    message = _message(0x0478, 3 * FRAME + 5)
    header_end = fmt.parse_header(message)[2]
    body = _body(message)
    assert fmt.framed_layout(body, FRAME) == (3, 5, len(body))
    assert fmt.framed_layout(memoryview(message + b"tail")[header_end:], FRAME) == (3, 5, len(body))
    fields = field_map(message)
    irregular = [
        replace_at(message, field_at(fields, "sequence number", 1)[0], u32(3)),
        replace_at(message, field_at(fields, "final frame sequence number")[0], u32(5)),
        replace_at(message, field_at(fields, "final frame content length")[0], u32(FRAME + 1)),
        message[:-1],
        message[:field_at(fields, "final frame content")[0]],
    ]
    for data in irregular:
        assert fmt.framed_layout(memoryview(data)[header_end:], FRAME) is None


def test_the_final_frame_and_non_framed_checks() -> None:
    fmt.check_final_sequence(4, 4, 100)
    with pytest.raises(FormatError) as info:
        fmt.check_final_sequence(5, 4, 100)
    assert (info.value.field, info.value.offset) == ("final frame sequence number", 100 + fmt.FINAL_SEQUENCE)
    fmt.check_final_length(FRAME, FRAME, 100)
    with pytest.raises(FormatError) as info:
        fmt.check_final_length(FRAME + 1, FRAME, 100)
    assert (info.value.field, info.value.offset) == ("final frame content length", 100 + fmt.FINAL_LENGTH)
    fmt.check_non_framed_length(fmt.MAX_NON_FRAMED_LENGTH, 7)
    with pytest.raises(FormatError, match="2\\^36 - 32") as info:
        fmt.check_non_framed_length(fmt.MAX_NON_FRAMED_LENGTH + 1, 7)
    assert (info.value.field, info.value.offset) == ("body content length", 7)


@pytest.mark.parametrize(("have", "field", "start"), [
    (4, "frame IV", 4), (15, "frame IV", 4), (16, "frame content", 16), (16 + FRAME - 1, "frame content", 16),
    (16 + FRAME, "frame tag", 16 + FRAME), (31 + FRAME, "frame tag", 16 + FRAME)])
def test_cut_frame_error_names_the_field_the_input_ends_in(have: int, field: str, start: int) -> None:
    error = fmt.cut_frame_error(50, have, FRAME)
    assert isinstance(error, TruncatedError)
    assert (error.field, error.offset, error.needed) == (field, 50 + start, 50 + FRAME + fmt.REGULAR_OVERHEAD)


def test_writer_limits() -> None:
    for good in (1, fmt.MAX_WRITE_FRAME_LENGTH):
        fmt.check_frame_length(good)
    for bad in (0, -1, 2**31, 2**32):
        with pytest.raises(UsageError, match="frame length"):
            fmt.check_frame_length(bad)
    fmt.check_frame_count(fmt.MAX_REGULAR_FRAMES, False, 1)
    fmt.check_frame_count(fmt.FINAL_FRAME_MARKER, True, 1)
    for last, final in ((fmt.MAX_REGULAR_FRAMES + 1, False), (fmt.FINAL_FRAME_MARKER + 1, True)):
        with pytest.raises(UsageError, match="2\\^32 - 1 frames of 1 bytes"):
            fmt.check_frame_count(last, final, 1)


def test_footer_layout() -> None:
    message = _message(0x0578, 10)
    fields = field_map(message)
    start, end = field_at(fields, "signature")
    footer, used = fmt.parse_footer(message, start - fmt.SIGNATURE_LENGTH.size)
    assert used == len(message) == end and footer.signature == message[start:end]
    assert fmt.footer_length(len(footer.signature)) == len(fmt.serialize_footer(footer)) == end - start + 2


def test_unsorted_context_is_written_only_on_request() -> None:
    context = {"b": "2", "a": "1"}
    assert fmt.serialize_context(context) == fmt.serialize_context({"a": "1", "b": "2"})
    unsorted = fmt.serialize_context(context, sort=False)
    assert unsorted != fmt.serialize_context(context) and fmt.parse_context(unsorted) == context


@pytest.mark.parametrize("suite_id", [0x0178, 0x0478])
def test_new_header_carries_the_bytes_it_is_written_as(suite_id: int) -> None:
    suite = SUITES[suite_id]
    edks = (fmt.EncryptedDataKey("p", b"info", b"ct"),)
    commitment = bytes(range(32)) if suite.committing else b""
    header = fmt.new_header(suite, os.urandom(suite.message_id_length), {"b": "2", "a": "1"}, edks, FRAME,
                            commitment)
    assert header.raw == fmt.serialize_header_body(header) and header.framed
    tag = bytes(16)
    auth = fmt.header_auth_bytes(header.version, bytes(12), tag)
    assert auth == (bytes(12) + tag if suite_id == 0x0178 else tag)
    parsed, _, used = fmt.parse_header(header.raw + auth)
    assert parsed == header and parsed.raw == header.raw and used == len(header.raw) + len(auth)
