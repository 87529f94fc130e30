"""envelope.decrypt_range on seekable files: every range checked against a slice of the plaintext, and every
refusal (tampered frames in the range, signed and non-framed messages, wholly past the end) checked to write
nothing.

By design the range is authenticated, not the whole message: frames outside the range are never read, so
a message damaged outside the range still gives a correct range (tests below say so where they rely on it).
"""

from __future__ import annotations

import io
import os
import random

import pytest
from helpers import READ_ANY, CountingKeyring, StaticKeyring, encrypt_policy
from hypothesis import given, settings
from hypothesis import strategies as st

import envelope
from envelope._suites import SUITES
from testkit.messages import build_message, flip_bit

F = 64  # small frames: many frames in little data
R = F + 32  # a regular frame on the wire
FINAL = 40  # final frame overhead
UNSIGNED = sorted(s for s in SUITES if not SUITES[s].signed)
SIGNED = sorted(s for s in SUITES if SUITES[s].signed)


@pytest.fixture(scope="module")
def keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("ns", "range", os.urandom(32))


class CountingFile(io.BytesIO):
    """A BytesIO that counts the bytes read from it and where reads started."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0
        self.reads: list[int] = []

    def readinto(self, buffer: object) -> int:  # type: ignore[override]
        self.reads.append(self.tell())
        n = super().readinto(buffer)  # type: ignore[arg-type]
        self.bytes_read += n
        return n


def _range(message: bytes, keyring: envelope.Keyring, start: int, end: int | None, **kw: object
           ) -> tuple[bytes, envelope.RangeResult]:
    out = io.BytesIO()
    result = envelope.decrypt_range(io.BytesIO(message), out, start, end, keyring=keyring, **kw)  # type: ignore[arg-type]
    assert result.bytes_written == len(out.getvalue())
    return out.getvalue(), result


def _ranges(size: int, frame: int) -> list[tuple[int, int | None]]:
    """Inside one frame, across frames, the final frame, single bytes, open-ended, and past the end."""
    ranges: list[tuple[int, int | None]] = [
        (0, 0), (0, None), (0, size - 1), (size - 1, size - 1), (size - 1, None), (0, size + 1000),
        (size // 2, None), (size // 2, size // 2 + 3 * frame + 5), (size // 3, size // 3), (1, frame - 2),
    ]
    for k in range(0, size // frame + 1, max(1, size // frame // 6)):
        ranges += [(k * frame, (k + 1) * frame - 1), (k * frame + 1, k * frame + frame // 2),
                   (max(0, k * frame - 1), k * frame), (k * frame, None)]
    return [(a, b) for a, b in ranges if 0 <= a < size and (b is None or b >= a)]


@pytest.mark.parametrize("size", [1, F - 1, F, F + 1, 7 * F, 7 * F + 13, 100 * F + 3])
def test_ranges_match_slices(keyring: envelope.Keyring, size: int) -> None:
    plaintext = os.urandom(size)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    for start, end in _ranges(size, F):
        got, result = _range(message, keyring, start, end)
        assert got == plaintext[start:None if end is None else end + 1], (start, end)
        assert (result.start, result.end) == (start, min(size - 1, size - 1 if end is None else end))
        if end is None or end >= size // F * F:
            assert result.plaintext_length == size  # the final frame was read: the length is authenticated


def test_ranges_across_batches(keyring: envelope.Keyring) -> None:
    """1 MiB frames: a batch of the range reader holds 3 frames, so long ranges take several batches."""
    frame = 1024 * 1024
    plaintext = os.urandom(8 * frame + 5)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=frame)
    for start, end in [(0, None), (frame - 1, 7 * frame + 1), (3 * frame, 3 * frame), (5, 8 * frame + 4)]:
        got, result = _range(message, keyring, start, end)
        assert got == plaintext[start:None if end is None else end + 1]
    assert result.frames == 9


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_ranges_property(data: st.DataObject) -> None:
    keyring = envelope.RawAesKeyring("ns", "prop", bytes(32))
    frame = data.draw(st.sampled_from([1, 7, 64, 100]), label="frame")
    size = data.draw(st.integers(1, 20 * frame + 5), label="size")
    plaintext = random.Random(size).randbytes(size)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=frame)
    start = data.draw(st.integers(0, size - 1), label="start")
    end = data.draw(st.one_of(st.none(), st.integers(start, size + 3 * frame)), label="end")
    got, _ = _range(message, keyring, start, end)
    assert got == plaintext[start:None if end is None else end + 1]


@pytest.mark.parametrize("suite", UNSIGNED, ids=[f"0x{s:04x}" for s in UNSIGNED])
def test_every_unsigned_suite(keyring: envelope.Keyring, suite: int) -> None:
    plaintext = os.urandom(10 * F + 9)
    message = envelope.encrypt(plaintext, keyring=keyring, algorithm=suite, frame_length=F,
                               commitment_policy=encrypt_policy(suite))
    got, result = _range(message, keyring, 3 * F - 2, None, commitment_policy=READ_ANY)
    assert got == plaintext[3 * F - 2:]
    assert result.header.suite.id == suite


def test_full_length_final_frame() -> None:
    """A writer may put the last full frame in the final frame (its length is then the frame length, which
    section 3.1 allows): the layout from the size still finds it, and the plaintext length is right. Random
    frame IVs, too: the reader uses each frame's stored IV."""
    static = StaticKeyring(bytes(32))
    chunks = [os.urandom(F) for _ in range(4)]
    plaintext = b"".join(chunks)
    message = build_message(SUITES[0x0478], bytes(32), chunks, frame_length=F, iv_for=lambda seq: os.urandom(12))
    assert envelope.decrypt(message, keyring=static).plaintext == plaintext
    for start, end in [(0, None), (3 * F, None), (3 * F - 1, 3 * F), (F, 2 * F - 1), (4 * F - 1, 10**6)]:
        got, result = _range(message, static, start, end)
        assert got == plaintext[start:None if end is None else end + 1]
    assert result.plaintext_length == 4 * F
    with pytest.raises(envelope.UsageError, match="past the end of the 256-byte plaintext"):
        envelope.decrypt_range(io.BytesIO(message), io.BytesIO(), 4 * F, None, keyring=static)


def test_past_the_end(keyring: envelope.Keyring) -> None:
    plaintext = os.urandom(5 * F + 3)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    assert _range(message, keyring, 5 * F, 10**12)[0] == plaintext[5 * F:]  # clipped, as HTTP ranges are
    for start in (len(plaintext), len(plaintext) + 1, 10**9):
        out = io.BytesIO()
        with pytest.raises(envelope.UsageError, match=f"at or past the end of the {len(plaintext)}-byte"):
            envelope.decrypt_range(io.BytesIO(message), out, start, None, keyring=keyring)
        assert out.getvalue() == b""
    empty = envelope.encrypt(b"", keyring=keyring, frame_length=F)
    with pytest.raises(envelope.UsageError, match="the 0-byte plaintext"):
        envelope.decrypt_range(io.BytesIO(empty), io.BytesIO(), 0, 0, keyring=keyring)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4), (True, None), (0, 1.5), ("0", None)])
def test_bad_bounds(keyring: envelope.Keyring, start: object, end: object) -> None:
    with pytest.raises(envelope.UsageError, match="range"):
        envelope.decrypt_range(io.BytesIO(b""), io.BytesIO(), start, end, keyring=keyring)  # type: ignore[arg-type]


def test_reads_only_the_frames_of_the_range(keyring: envelope.Keyring) -> None:
    """A range inside frame 50 of 101 reads the header and that frame: not the body before it, not the final
    frame (its length is not needed: the frame is verified at the position and sequence number asked for)."""
    message = envelope.encrypt(os.urandom(100 * F + 3), keyring=keyring, frame_length=F)
    source = CountingFile(message)
    out = io.BytesIO()
    result = envelope.decrypt_range(source, out, 50 * F + 3, 50 * F + 9, keyring=keyring)
    assert result.frames == 1
    assert result.plaintext_length is None
    header_reads = len(message) - 100 * R - 3 - FINAL  # the header's length
    assert source.bytes_read <= max(4096, header_reads) + R


def test_the_message_is_the_whole_source(keyring: envelope.Keyring) -> None:
    """Wherever the source is positioned (e.g. after an earlier range), the message starts at offset 0."""
    plaintext = os.urandom(9 * F)
    source = io.BytesIO(envelope.encrypt(plaintext, keyring=keyring, frame_length=F))
    for start in (2 * F, 5, 8 * F + 1):
        out = io.BytesIO()
        envelope.decrypt_range(source, out, start, None, keyring=keyring)
        assert out.getvalue() == plaintext[start:]


# ---------------------------------------------------------------------------------------------------------
# tampering: the range is authenticated, the rest of the message is not looked at


def _header_length(message: bytes) -> int:
    header, auth, _ = envelope.read_header(io.BytesIO(message))
    return len(header.raw) + len(auth.tag) + (len(auth.iv) if header.version == 1 else 0)


def test_tampered_frame_in_the_range_writes_nothing(keyring: envelope.Keyring) -> None:
    plaintext = os.urandom(20 * F + 5)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    h = _header_length(message)
    bad = flip_bit(message, 8 * (h + 7 * R + 20))  # frame 8's ciphertext (index 7)
    for start, end in [(7 * F, 7 * F), (6 * F, 9 * F), (0, None), (7 * F + 63, 7 * F + 63)]:
        out = io.BytesIO()
        with pytest.raises(envelope.AuthenticationError, match="frame 8 failed to authenticate"):
            envelope.decrypt_range(io.BytesIO(bad), out, start, end, keyring=keyring)
        assert out.getvalue() == b""  # each range fits in one batch: nothing of it was written
    # By design: a range that does not touch frame 8 is read and verified without it, and succeeds.
    for start, end in [(0, 7 * F - 1), (8 * F, None), (10 * F, 11 * F)]:
        got, _ = _range(bad, keyring, start, end)
        assert got == plaintext[start:None if end is None else end + 1]


def test_tampered_final_frame(keyring: envelope.Keyring) -> None:
    plaintext = os.urandom(6 * F + 10)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    bad = flip_bit(message, 8 * len(message) - 1)
    for end in (None, 6 * F, 6 * F + 9, 10**6):  # ranges that reach the final frame, or its length
        out = io.BytesIO()
        with pytest.raises(envelope.AuthenticationError, match="final frame 7"):
            envelope.decrypt_range(io.BytesIO(bad), out, 2 * F, end, keyring=keyring)
        assert out.getvalue() == b""
    assert _range(bad, keyring, 0, 6 * F - 1)[0] == plaintext[:6 * F]  # by design: the final frame is not needed


def test_truncated_or_extended_message(keyring: envelope.Keyring) -> None:
    """The object's size is not trusted: cut or appended bytes make the final frame fail where the size puts
    it, so an open-ended range (which needs the length) is refused."""
    plaintext = os.urandom(8 * F + 20)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    for changed in (message[:-1], message[:-FINAL - 20], message[:-R], message + b"\0",
                    message + message[-FINAL - 20:], message[:_header_length(message) + 3 * R]):
        with pytest.raises(envelope.FormatError):
            envelope.decrypt_range(io.BytesIO(changed), io.BytesIO(), 0, None, keyring=keyring)
    # By design: a range before the damage is still authentic.
    assert _range(message[:-R], keyring, F, 3 * F)[0] == plaintext[F:3 * F + 1]
    # an exactly cut message whose length looks right cannot forge a final frame: its last regular frame
    # fails as a final frame
    cut = message[:_header_length(message) + 5 * R] + message[-FINAL - 20:]
    with pytest.raises((envelope.AuthenticationError, envelope.FormatError)):
        envelope.decrypt_range(io.BytesIO(cut), io.BytesIO(), 0, None, keyring=keyring)


def test_tampered_header(keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(5 * F), keyring=keyring, frame_length=F)
    h = _header_length(message)
    with pytest.raises(envelope.AuthenticationError, match="header"):
        envelope.decrypt_range(io.BytesIO(flip_bit(message, 8 * (h - 1))), io.BytesIO(), 0, 0, keyring=keyring)


# ---------------------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("suite", SIGNED, ids=[f"0x{s:04x}" for s in SIGNED])
def test_signed_suites_are_refused_before_any_key_is_used(keyring: envelope.Keyring, suite: int) -> None:
    message = envelope.encrypt(os.urandom(3 * F), keyring=keyring, algorithm=suite, frame_length=F,
                               commitment_policy=encrypt_policy(suite))
    counting = CountingKeyring(keyring)
    out = io.BytesIO()
    with pytest.raises(envelope.PolicyError, match=f"signed suite 0x{suite:04x}: the signature covers the whole"):
        envelope.decrypt_range(io.BytesIO(message), out, 0, 10, keyring=counting, commitment_policy=READ_ANY)
    assert counting.calls == []
    assert out.getvalue() == b""


def test_non_framed_is_refused() -> None:
    suite = SUITES[0x0178]
    static = StaticKeyring(bytes(32))
    message = build_message(suite, bytes(32), [b"x" * 100], non_framed=True)
    assert envelope.decrypt(message, keyring=static, commitment_policy=READ_ANY).plaintext == b"x" * 100
    with pytest.raises(envelope.PolicyError, match="non-framed"):
        envelope.decrypt_range(io.BytesIO(message), io.BytesIO(), 0, 10, keyring=static, commitment_policy=READ_ANY)
    assert static.calls == ["unwrap"]  # only the whole-message decrypt above used the key


def test_header_checks_of_decrypt_stream_apply(keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(3 * F), keyring=keyring, frame_length=F, context={"app": "a"})
    with pytest.raises(envelope.ContextMismatchError):
        envelope.decrypt_range(io.BytesIO(message), io.BytesIO(), 0, 1, keyring=keyring,
                               required_context={"app": "b"})
    v1 = envelope.encrypt(b"abc", keyring=keyring, algorithm=0x0178, commitment_policy="forbid-encrypt-allow-decrypt")
    with pytest.raises(envelope.PolicyError, match="commit"):
        envelope.decrypt_range(io.BytesIO(v1), io.BytesIO(), 0, 1, keyring=keyring)
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt_range(io.BytesIO(message), io.BytesIO(), 0, 1,
                               keyring=envelope.RawAesKeyring("ns", "range", os.urandom(32)))
    manager = envelope.DefaultMaterialsManager(keyring)
    assert _range(message, None, 0, 1, materials_manager=manager)[0] == envelope.decrypt(  # type: ignore[arg-type]
        message, keyring=keyring).plaintext[:2]


def test_pipe_is_refused(keyring: envelope.Keyring) -> None:
    read, write = os.pipe()
    with os.fdopen(read, "rb") as source, os.fdopen(write, "wb"):
        with pytest.raises(envelope.UsageError, match="seekable"):
            envelope.decrypt_range(source, io.BytesIO(), 0, 1, keyring=keyring)
