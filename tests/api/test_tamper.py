"""Tampering (esdk-format.md sections 5, 9, 10): every bit flip, every truncation and trailing bytes fail.

Messages are kept small (a few bytes of plaintext in frames of 4 bytes: one regular frame and the final
frame) so that the exhaustive sweeps stay fast; every field of the format is still present.
"""

from __future__ import annotations

import io

import pytest
from helpers import (
    ALL_SUITE_IDS,
    READ_ANY,
    encrypt_policy,
    esdk_aes_key,
    esdk_encrypt,
)

import envelope
from envelope import _format as fmt
from envelope.errors import (
    AuthenticationError,
    EnvelopeError,
    FormatError,
    KeyringError,
    PolicyError,
    TruncatedError,
)
from testkit.messages import field_map, flip_bit, replace_at, u32

KEY = bytes(range(32))
KEYRING = envelope.RawAesKeyring("ns", "k", KEY)
PLAINTEXT = b"tamper"  # one 4-byte regular frame and a 2-byte final frame
FRAME = 4
HEADER_ERRORS = (FormatError, AuthenticationError, KeyringError, PolicyError)
BODY_ERRORS = (FormatError, AuthenticationError)


def _message(suite_id: int) -> bytes:
    return envelope.encrypt(PLAINTEXT, keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                            context={"c": "1"}, commitment_policy=encrypt_policy(suite_id))


def _header_end(message: bytes) -> int:
    return next(end for name, _, end in field_map(message) if name == "header authentication tag")


def _sweep(message: bytes, body_errors: tuple[type[EnvelopeError], ...] = BODY_ERRORS) -> dict[str, int]:
    """Flip every bit; every flip must fail with an envelope error of the class its region allows."""
    header_end = _header_end(message)
    seen: dict[str, int] = {}
    for bit in range(8 * len(message)):
        tampered = flip_bit(message, bit)
        try:
            envelope.decrypt(tampered, keyring=KEYRING, commitment_policy=READ_ANY)
        except EnvelopeError as exc:
            allowed = HEADER_ERRORS if bit // 8 < header_end else body_errors
            assert isinstance(exc, allowed), f"bit {bit} (byte {bit // 8}): {type(exc).__name__}: {exc}"
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
        else:
            raise AssertionError(f"flipping bit {bit} (byte {bit // 8}) was not detected")
    return seen


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_every_bit_flip_fails(suite_id: int) -> None:
    message = _message(suite_id)
    assert envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY).plaintext == PLAINTEXT
    seen = _sweep(message)
    assert seen.get("AuthenticationError", 0) > 0 and seen.get("FormatError", 0) > 0


@pytest.mark.parametrize("suite_id", [0x0378, 0x0578])
def test_every_bit_flip_of_an_esdk_non_framed_message_fails(suite_id: int) -> None:
    message = esdk_encrypt(PLAINTEXT, esdk_aes_key("ns", "k", KEY), suite_id, context={}, frame_length=0)
    assert envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY).plaintext == PLAINTEXT
    # a flipped high bit of the 8-byte body length asks for a block above the max_frame_length limit
    _sweep(message, (*BODY_ERRORS, PolicyError))


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_truncation_at_every_offset_fails(suite_id: int) -> None:
    message = _message(suite_id)
    for cut in range(len(message)):
        out = io.BytesIO()
        with pytest.raises(FormatError) as info:
            envelope.decrypt_stream(io.BytesIO(message[:cut]), out, keyring=KEYRING, commitment_policy=READ_ANY,
                                    threads=0)
        if cut:
            assert isinstance(info.value, TruncatedError), f"cut at {cut}: {info.value}"
        assert PLAINTEXT.startswith(out.getvalue())
        assert len(out.getvalue()) <= FRAME  # at most the regular frame, never the final one


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_trailing_bytes_fail(suite_id: int) -> None:
    message = _message(suite_id)
    for extra in (b"\x00", b"\xff" * 3, message):
        out = io.BytesIO()
        with pytest.raises(FormatError, match="trailing") as info:
            envelope.decrypt_stream(io.BytesIO(message + extra), out, keyring=KEYRING, commitment_policy=READ_ANY)
        assert info.value.offset == len(message) and info.value.field == "end of message"
        assert len(out.getvalue()) <= FRAME


@pytest.mark.parametrize("suite_id", [0x0114, 0x0578])
@pytest.mark.parametrize("frames", [1, 3])
def test_decrypt_names_the_field_where_the_input_ends(suite_id: int, frames: int) -> None:
    """The streaming reader may name a group of fields ("final frame header"), but its offset is where that
    group starts and the input ends inside it. In the header it reports exactly what the parser does."""
    message = envelope.encrypt(bytes(FRAME * frames + 1), keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                               commitment_policy=encrypt_policy(suite_id))
    header_end = _header_end(message)
    for cut in range(1, len(message)):
        with pytest.raises(TruncatedError) as info:
            envelope.decrypt(message[:cut], keyring=KEYRING, commitment_policy=READ_ANY)
        error = info.value
        assert error.offset <= cut < error.needed, f"cut at {cut}: {error} (needs {error.needed})"
        if cut < header_end:
            with pytest.raises(TruncatedError) as parsed:
                fmt.parse_message(message[:cut])
            assert (error.field, error.offset) == (parsed.value.field, parsed.value.offset)


@pytest.mark.parametrize("suite_id", [0x0114, 0x0578])
def test_decrypt_reports_body_format_errors_like_the_parser(suite_id: int) -> None:
    message = envelope.encrypt(bytes(FRAME * 3 + 1), keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                               commitment_policy=encrypt_policy(suite_id))
    fields = field_map(message)
    seq = [s for n, s, _ in fields if n == "sequence number"]
    final_seq = next(s for n, s, _ in fields if n == "final frame sequence number")
    final_len = next(s for n, s, _ in fields if n == "final frame content length")
    cases = [(seq[0], u32(2)), (seq[1], u32(1)), (seq[2], u32(7)), (final_seq, u32(3)), (final_seq, u32(5)),
             (final_len, u32(FRAME + 1))]
    for at, value in cases:
        tampered = replace_at(message, at, value)
        with pytest.raises(FormatError) as parsed:
            fmt.parse_message(tampered)
        with pytest.raises(FormatError) as decrypted:
            envelope.decrypt(tampered, keyring=KEYRING, commitment_policy=READ_ANY)
        assert (decrypted.value.field, decrypted.value.offset) == (parsed.value.field, parsed.value.offset)
