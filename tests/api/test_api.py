"""The public API (esdk-format.md sections 5 and 10): one-shot and streaming, release rules, options."""

from __future__ import annotations

import io
import os
import threading
import types
from typing import Any

import pytest
from helpers import (
    READ_ANY,
    CountingKeyring,
    StaticKeyring,
    encrypt_policy,
    esdk_aes_key,
    esdk_encrypt,
)

import envelope
from envelope import _format as fmt
from envelope.errors import (
    AuthenticationError,
    ContextMismatchError,
    EnvelopeError,
    FormatError,
    PolicyError,
    TruncatedError,
    UsageError,
)
from testkit.messages import field_map, flip_bit, replace_at, u32

KEYRING = envelope.RawAesKeyring("ns", "api", bytes(range(32)))


def _frames(count: int, frame_length: int, tail: int) -> bytes:
    """Plaintext whose every frame is recognisable: frame i is filled with a pattern unique to i."""
    parts = [(i.to_bytes(2, "big") * (frame_length // 2 + 1))[:frame_length] for i in range(1, count + 1)]
    return b"".join(parts) + b"\xee" * tail


class ShortReader:
    """A non-seekable source whose readinto returns at most a few bytes per call."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self.calls = 0

    def readinto(self, buf: Any) -> int:
        self.calls += 1
        n = min(len(buf), self._step, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n

    def seekable(self) -> bool:
        return False


class ReadOnly:
    """A source with only ``read`` (no readinto)."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(min(n, 5) if n > 0 else n)


class ShortWriter:
    """A destination that accepts at most ``step`` bytes per write, like a raw pipe."""

    def __init__(self, step: int = 1000) -> None:
        self.data = bytearray()
        self._step = step

    def write(self, data: Any) -> int:
        chunk = bytes(memoryview(data)[:self._step])
        self.data += chunk
        return len(chunk)


# ---------------------------------------------------------------------------------------------------------
# one-shot and streaming


@pytest.mark.parametrize("suite_id", [0x0078, 0x0378, 0x0478, 0x0578])
def test_one_shot_and_streaming_agree(suite_id: int) -> None:
    plaintext = os.urandom(5 * 256 + 3)
    policy = encrypt_policy(suite_id)
    one_shot = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=256,
                                context={"k": "v"}, commitment_policy=policy)
    out = io.BytesIO()
    result = envelope.encrypt_stream(io.BytesIO(plaintext), out, keyring=KEYRING, algorithm=suite_id,
                                     frame_length=256, context={"k": "v"}, commitment_policy=policy)
    streamed = out.getvalue()
    assert result.bytes_read == len(plaintext) and result.bytes_written == len(streamed)
    assert len(streamed) == len(one_shot)  # same layout; contents differ by message ID and data key
    for message in (one_shot, streamed):
        decrypted = envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY)
        assert decrypted.plaintext == plaintext
        sink = io.BytesIO()
        info = envelope.decrypt_stream(io.BytesIO(message), sink, keyring=KEYRING, commitment_policy=READ_ANY)
        assert sink.getvalue() == plaintext
        assert info.bytes_read == len(message) and info.bytes_written == len(plaintext)
        assert info.header == decrypted.header


def test_decrypt_result_exposes_the_header() -> None:
    multi = envelope.MultiKeyring(KEYRING, [envelope.RawAesKeyring("ns", "second", os.urandom(16))])
    message = envelope.encrypt(b"x" * 10, keyring=multi, context={"app": "demo"}, frame_length=4096)
    result = envelope.decrypt(message, keyring=KEYRING)
    assert result.plaintext == b"x" * 10
    header = result.header
    assert header.suite.id == 0x0478 and result.suite is header.suite
    assert dict(header.encryption_context) == {"app": "demo"} == dict(result.context)
    assert [e.provider_id for e in header.encrypted_data_keys] == ["ns", "ns"]
    assert header.frame_length == 4096 and header.framed
    # read_header needs no key
    parsed, _, _ = envelope.read_header(io.BytesIO(message))
    assert parsed == header


def test_default_frame_length() -> None:
    assert envelope.DEFAULT_FRAME_LENGTH >= 64 * 1024
    message = envelope.encrypt(b"x", keyring=KEYRING)
    assert fmt.parse_header(message)[0].frame_length == envelope.DEFAULT_FRAME_LENGTH


@pytest.mark.parametrize("frame_length", [0, -1, 2**31, 2**32])
def test_invalid_frame_length(frame_length: int) -> None:
    with pytest.raises(UsageError):
        envelope.encrypt(b"x", keyring=KEYRING, frame_length=frame_length)


def test_any_readable_frame_length_is_accepted() -> None:
    for frame_length in (1, 3, 100, 2**31 - 1):  # no multiple-of-16 rule (the ESDK reads these)
        message = envelope.encrypt(b"abcdef", keyring=KEYRING, frame_length=frame_length)
        assert envelope.decrypt(message, keyring=KEYRING, max_frame_length=2**31 - 1).plaintext == b"abcdef"


def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        envelope.encrypt(b"x")  # no keyring
    with pytest.raises(UsageError):
        envelope.encrypt(b"x", keyring=KEYRING, materials_manager=envelope.DefaultMaterialsManager(KEYRING))
    with pytest.raises(UsageError):
        envelope.decrypt_stream(io.BytesIO(b""), io.BytesIO(), keyring=KEYRING, threads=-1)
    assert issubclass(UsageError, ValueError) and issubclass(UsageError, EnvelopeError)


@pytest.mark.parametrize("data", [b"", b"\x01", b"hello world", b"AgR4" + b"A" * 100, bytes(200)])
def test_garbage_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        envelope.decrypt(data, keyring=KEYRING)


# ---------------------------------------------------------------------------------------------------------
# release rules (section 10)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batches of a few small frames, so small messages cross many batches and really use the threads.

    Returns a list that grows by one each time a pipeline starts its threads."""
    import envelope._stream

    monkeypatch.setattr(envelope._stream, "BATCH_BYTES", 256)
    started: list[int] = []
    original = envelope._stream._Pipeline._start

    def start(self: Any) -> None:
        started.append(self.threads)
        original(self)

    monkeypatch.setattr(envelope._stream._Pipeline, "_start", start)
    return started


def test_threaded_pipeline_starts_and_agrees_with_inline(small_batches: list[int]) -> None:
    plaintext = os.urandom(100 * 64 + 17)
    src, out = io.BytesIO(plaintext), io.BytesIO()
    envelope.encrypt_stream(src, out, keyring=KEYRING, frame_length=64, threads=2)
    assert small_batches == [2]  # the seal pipeline ran on threads
    message = out.getvalue()
    inline, threaded = io.BytesIO(), io.BytesIO()
    envelope.decrypt_stream(io.BytesIO(message), inline, keyring=KEYRING, threads=0)
    envelope.decrypt_stream(io.BytesIO(message), threaded, keyring=KEYRING, threads=2)
    assert small_batches == [2, 2]  # the open pipeline too (threads=0 never starts one)
    assert inline.getvalue() == threaded.getvalue() == plaintext


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("suite_id", [0x0378, 0x0578])
def test_bad_signature_releases_no_final_frame(suite_id: int, threads: int, small_batches: list[int]) -> None:
    frame_length = 64
    plaintext = _frames(6, frame_length, tail=40)
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=frame_length,
                               commitment_policy=encrypt_policy(suite_id))
    footer = fmt.parse_message(message).footer
    assert footer is not None
    for tampered in (flip_bit(message, 8 * len(message) - 1),  # last byte of the signature
                     message[:-len(footer.signature)] + bytes(len(footer.signature))):
        out = io.BytesIO()
        with pytest.raises(AuthenticationError, match="signature"):
            envelope.decrypt_stream(io.BytesIO(tampered), out, keyring=KEYRING, commitment_policy=READ_ANY,
                                    threads=threads)
        released = out.getvalue()
        assert plaintext.startswith(released)
        assert len(released) <= 6 * frame_length  # nothing of the final frame
        assert b"\xee" not in released
    assert bool(small_batches) == bool(threads)


def test_bad_signature_on_a_large_body_releases_no_final_frame() -> None:
    """With frames big enough to fill several batches, regular frames may go out, the final one not."""
    frame_length = 256 * 1024
    plaintext = _frames(20, frame_length, tail=1000)
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=0x0578, frame_length=frame_length)
    out = io.BytesIO()
    with pytest.raises(AuthenticationError):
        envelope.decrypt_stream(io.BytesIO(flip_bit(message, 8 * len(message) - 3)), out, keyring=KEYRING,
                                threads=1)
    released = out.getvalue()
    assert plaintext.startswith(released) and len(released) <= 20 * frame_length


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("frame_length,count", [(64, 12), (256 * 1024, 24)])
def test_tampered_frame_releases_nothing_from_that_frame_on(frame_length: int, count: int, threads: int,
                                                              small_batches: list[int],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import envelope._stream

    monkeypatch.setattr(envelope._stream, "BATCH_BYTES", 4 * (frame_length + 32))  # 4 frames per batch
    plaintext = _frames(count, frame_length, tail=5)
    message = envelope.encrypt(plaintext, keyring=KEYRING, frame_length=frame_length)
    contents = [(s, e) for n, s, e in field_map(message) if n == "frame content"]
    assert len(contents) == count
    for k in (1, count // 2, count - 1, count):  # 1-based frame number
        start, _ = contents[k - 1]
        out = io.BytesIO()
        with pytest.raises(AuthenticationError, match=f"frame {k}"):
            envelope.decrypt_stream(io.BytesIO(flip_bit(message, 8 * start + 5)), out, keyring=KEYRING,
                                    threads=threads)
        released = out.getvalue()
        assert plaintext.startswith(released)
        assert len(released) <= (k - 1) * frame_length, f"frame {k}: {len(released)} bytes released"
    assert bool(small_batches) == bool(threads)  # the threaded variant really ran on threads


def test_one_shot_decrypt_returns_nothing_for_a_bad_message() -> None:
    message = envelope.encrypt(b"p" * 1000, keyring=KEYRING, frame_length=100)
    with pytest.raises(AuthenticationError):
        envelope.decrypt(flip_bit(message, 8 * (len(message) - 5)), keyring=KEYRING)  # final tag


def test_truncated_stream_releases_no_final_frame() -> None:
    plaintext = _frames(4, 64, tail=30)
    message = envelope.encrypt(plaintext, keyring=KEYRING, frame_length=64)
    for cut in (len(message) - 1, len(message) - 16, len(message) - 50):
        out = io.BytesIO()
        with pytest.raises(TruncatedError):
            envelope.decrypt_stream(io.BytesIO(message[:cut]), out, keyring=KEYRING)
        assert plaintext.startswith(out.getvalue()) and len(out.getvalue()) <= 4 * 64


def test_trailing_bytes_release_no_final_frame() -> None:
    plaintext = _frames(2, 64, tail=30)
    message = envelope.encrypt(plaintext, keyring=KEYRING, frame_length=64)
    out = io.BytesIO()
    with pytest.raises(FormatError, match="trailing"):
        envelope.decrypt_stream(io.BytesIO(message + b"\x00"), out, keyring=KEYRING)
    assert b"\xee" not in out.getvalue()


@pytest.mark.parametrize("suite_id", [0x0214, 0x0346, 0x0378, 0x0578])
def test_unsigned_only_refuses_signed_messages_before_writing(suite_id: int) -> None:
    message = envelope.encrypt(b"signed", keyring=KEYRING, algorithm=suite_id,
                               commitment_policy=encrypt_policy(suite_id))
    keyring = CountingKeyring(KEYRING)
    out = io.BytesIO()
    with pytest.raises(PolicyError, match="signed"):
        envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, unsigned_only=True,
                                commitment_policy=READ_ANY)
    assert out.getvalue() == b"" and keyring.calls == []
    with pytest.raises(PolicyError):
        envelope.decrypt(message, keyring=keyring, unsigned_only=True, commitment_policy=READ_ANY)
    unsigned = envelope.encrypt(b"unsigned", keyring=KEYRING)
    assert envelope.decrypt(unsigned, keyring=keyring, unsigned_only=True).plaintext == b"unsigned"


# ---------------------------------------------------------------------------------------------------------
# required context


def test_required_context() -> None:
    secret_value = "value-that-must-not-leak"
    message = envelope.encrypt(b"ctx", keyring=KEYRING, context={"tenant": secret_value, "stage": "prod"})
    ok = envelope.decrypt(message, keyring=KEYRING, required_context={"tenant": secret_value})
    assert ok.plaintext == b"ctx"
    assert envelope.decrypt(message, keyring=KEYRING, required_context={}).plaintext == b"ctx"
    cases = [({"missing-key": "x"}, "missing-key", "missing"),
             ({"tenant": "other-tenant"}, "tenant", "different"),
             ({"stage": "prod", "tenant": "Value-That-Must-Not-Leak"}, "tenant", "different")]
    for required, key, problem in cases:
        keyring = CountingKeyring(KEYRING)
        out = io.BytesIO()
        with pytest.raises(ContextMismatchError) as info:
            envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, required_context=required)
        assert info.value.key == key and key in str(info.value) and problem in str(info.value)
        for value in (secret_value, "other-tenant", "Value-That-Must-Not-Leak", "prod"):
            assert value not in str(info.value)
        assert out.getvalue() == b"" and keyring.calls == []
    assert issubclass(ContextMismatchError, PolicyError)


# ---------------------------------------------------------------------------------------------------------
# threads and sources


class _FixedOs(types.SimpleNamespace):
    pass


def test_threads_give_identical_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fixed message ID and data key, encryption is deterministic: every thread count writes the same."""
    fixed = _FixedOs(urandom=lambda n: bytes([0x5A]) * n)
    monkeypatch.setattr(envelope._api, "os", fixed)
    keyring = StaticKeyring(bytes(range(32)))
    frame_length = 64 * 1024
    plaintext = os.urandom(9 * 1024 * 1024 + 12345)  # several 4 MiB batches and a partial final frame
    outputs = []
    for threads in (0, 1, 2, 3):
        out = io.BytesIO()
        envelope.encrypt_stream(io.BytesIO(plaintext), out, keyring=keyring, frame_length=frame_length,
                                threads=threads)
        outputs.append(out.getvalue())
    assert all(o == outputs[0] for o in outputs[1:])
    message = outputs[0]
    assert envelope.encrypt(plaintext, keyring=keyring, frame_length=frame_length) == message
    for threads in (0, 1, 2, 3):
        out = io.BytesIO()
        envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, threads=threads)
        assert out.getvalue() == plaintext


@pytest.mark.parametrize("suite_id", [0x0478, 0x0578])
def test_non_seekable_sources(suite_id: int) -> None:
    plaintext = os.urandom(3 * 1000 + 17)
    # encrypt from a reader that returns 7 bytes at a time, into a writer that takes 1000 at a time
    sink = ShortWriter()
    reader = ShortReader(plaintext)
    envelope.encrypt_stream(reader, sink, keyring=KEYRING, algorithm=suite_id, frame_length=1000,  # type: ignore[arg-type]
                            threads=1)
    assert reader.calls > len(plaintext) // 7
    message = bytes(sink.data)
    assert envelope.decrypt(message, keyring=KEYRING).plaintext == plaintext
    # decrypt from short reads, and from an object with only read()
    for source in (ShortReader(message, 3), ShortReader(message, 1), ReadOnly(message)):
        out = ShortWriter(999)
        envelope.decrypt_stream(source, out, keyring=KEYRING, threads=1)  # type: ignore[arg-type]
        assert bytes(out.data) == plaintext


def test_pipes() -> None:
    plaintext = os.urandom(200_000)
    message = envelope.encrypt(plaintext, keyring=KEYRING, frame_length=4096, algorithm=0x0578)

    def feed(fd: int, data: bytes) -> None:
        with open(fd, "wb", buffering=0) as pipe:
            view = memoryview(data)
            while view:  # small writes: the reader sees many short reads
                n = pipe.write(view[:3000])
                view = view[n:]

    for data, operation in ((message, "decrypt"), (plaintext, "encrypt")):
        read_fd, write_fd = os.pipe()
        writer = threading.Thread(target=feed, args=(write_fd, data))
        writer.start()
        out = io.BytesIO()
        with open(read_fd, "rb", buffering=0) as source:
            if operation == "decrypt":
                envelope.decrypt_stream(source, out, keyring=KEYRING)
            else:
                envelope.encrypt_stream(source, out, keyring=KEYRING, frame_length=4096)
        writer.join()
        if operation == "decrypt":
            assert out.getvalue() == plaintext
        else:
            assert envelope.decrypt(out.getvalue(), keyring=KEYRING).plaintext == plaintext


def test_decrypt_stream_reads_one_message_and_refuses_more() -> None:
    first = envelope.encrypt(b"first", keyring=KEYRING)
    second = envelope.encrypt(b"second", keyring=KEYRING)
    with pytest.raises(FormatError, match="trailing"):
        envelope.decrypt_stream(io.BytesIO(first + second), io.BytesIO(), keyring=KEYRING)


# ---------------------------------------------------------------------------------------------------------
# limits (section 9)


def test_edk_limit_on_decrypt_and_encrypt() -> None:
    children = [envelope.RawAesKeyring("ns", f"c{i}", os.urandom(16)) for i in range(3)]
    multi = envelope.MultiKeyring(KEYRING, children)
    message = envelope.encrypt(b"x", keyring=multi)
    keyring = CountingKeyring(KEYRING)
    with pytest.raises(PolicyError, match="encrypted data keys"):
        envelope.decrypt(message, keyring=keyring, max_encrypted_data_keys=3)
    assert keyring.calls == []
    assert envelope.decrypt(message, keyring=keyring, max_encrypted_data_keys=4).plaintext == b"x"
    with pytest.raises(envelope.UsageError, match="more than the limit of 3"):  # the caller's keys: a usage error
        envelope.encrypt(b"x", keyring=multi, max_encrypted_data_keys=3)


def test_frame_and_header_limits() -> None:
    message = envelope.encrypt(b"x", keyring=KEYRING, frame_length=1 << 20)
    keyring = CountingKeyring(KEYRING)
    with pytest.raises(PolicyError, match="frame length"):
        envelope.decrypt(message, keyring=keyring, max_frame_length=(1 << 20) - 1)
    assert keyring.calls == []
    big_context = {f"key{i:04d}": "v" * 100 for i in range(100)}
    message = envelope.encrypt(b"x", keyring=KEYRING, context=big_context)
    with pytest.raises(PolicyError, match="header"):
        envelope.decrypt(message, keyring=KEYRING, max_header_length=5000)
    assert envelope.decrypt(message, keyring=KEYRING).context == big_context


@pytest.mark.parametrize("suite_id", [0x0378, 0x0578, 0x0478])
def test_non_framed_body_is_held_until_it_verifies(suite_id: int) -> None:
    """Section 3.2 / 10: a non-framed body is one block; nothing of it is released before its tag and, for
    signed suites, the signature verify."""
    plaintext = os.urandom(3000)
    message = esdk_encrypt(plaintext, esdk_aes_key("ns", "api", bytes(range(32))), suite_id, context={},
                           frame_length=0)
    out = io.BytesIO()
    envelope.decrypt_stream(io.BytesIO(message), out, keyring=KEYRING, commitment_policy=READ_ANY)
    assert out.getvalue() == plaintext
    fields = field_map(message)
    last_field = "signature" if suite_id != 0x0478 else "body tag"
    start, end = next((s, e) for n, s, e in fields if n == last_field)
    for bit in (8 * start, 8 * end - 1):
        out = io.BytesIO()
        with pytest.raises(AuthenticationError):
            envelope.decrypt_stream(io.BytesIO(flip_bit(message, bit)), out, keyring=KEYRING,
                                    commitment_policy=READ_ANY)
        assert out.getvalue() == b""


@pytest.mark.parametrize("threads", [0, 2])
def test_multi_batch_truncation_and_sequence_errors(threads: int) -> None:
    """The threaded, multi-batch reader reports the same field and offset as the parser."""
    frame_length = 64 * 1024
    plaintext = _frames(70, frame_length, tail=9)  # more than one 4 MiB batch
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=0x0578, frame_length=frame_length)
    fields = field_map(message)
    seq_starts = [s for n, s, _ in fields if n == "sequence number"]
    for cut in (seq_starts[3] + 2, seq_starts[3] + 20, seq_starts[66] + 100, seq_starts[-1] + 10,
                len(message) - 50, len(message) - 1):
        out = io.BytesIO()
        with pytest.raises(TruncatedError) as info:
            envelope.decrypt_stream(io.BytesIO(message[:cut]), out, keyring=KEYRING, threads=threads)
        assert info.value.offset <= cut < info.value.needed, f"cut at {cut}: {info.value}"
        assert plaintext.startswith(out.getvalue()) and b"\xee" not in out.getvalue()
    for frame in (2, 65, 66, 70):  # 1-based; 64 frames fill the first batch
        tampered = replace_at(message, seq_starts[frame - 1], u32(frame + 1))
        with pytest.raises(FormatError) as parsed:
            fmt.parse_message(tampered)
        out = io.BytesIO()
        with pytest.raises(FormatError) as decrypted:
            envelope.decrypt_stream(io.BytesIO(tampered), out, keyring=KEYRING, threads=threads)
        assert (decrypted.value.field, decrypted.value.offset) == (parsed.value.field, parsed.value.offset)
        assert len(out.getvalue()) <= (frame - 1) * frame_length


# ---------------------------------------------------------------------------------------------------------
# the one-shot path: whole messages in memory, frames split across threads


@pytest.fixture
def parallel_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches, so that a message of a few KiB is split into many runs of frames on several threads."""
    import envelope._api
    import envelope._stream

    monkeypatch.setattr(envelope._stream, "BATCH_BYTES", 3 * (64 + 32))
    monkeypatch.setattr(envelope._api, "BATCH_BYTES", 3 * (64 + 32))
    monkeypatch.setattr(envelope._api, "default_threads", lambda: 2)


@pytest.mark.parametrize("suite_id", [0x0478, 0x0578, 0x0178])
def test_one_shot_in_parallel_matches_the_stream(parallel_one_shot: None, suite_id: int) -> None:
    policy = encrypt_policy(suite_id)
    for size in (0, 63, 64, 65, 64 * 40, 64 * 40 + 7):
        plaintext = os.urandom(size)
        message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=64,
                                   commitment_policy=policy)
        streamed = io.BytesIO()
        envelope.decrypt_stream(io.BytesIO(message), streamed, keyring=KEYRING, commitment_policy=READ_ANY)
        assert envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY).plaintext \
            == streamed.getvalue() == plaintext
        # the same layout as the streaming writer: same frame count and lengths
        sealed = io.BytesIO()
        envelope.encrypt_stream(io.BytesIO(plaintext), sealed, keyring=KEYRING, algorithm=suite_id, frame_length=64,
                                commitment_policy=policy, threads=2)
        assert len(sealed.getvalue()) == len(message)


def test_one_shot_in_parallel_names_the_earliest_bad_frame(parallel_one_shot: None) -> None:
    plaintext = _frames(40, 64, tail=9)
    message = envelope.encrypt(plaintext, keyring=KEYRING, frame_length=64)
    contents = [(s, e) for n, s, e in field_map(message) if n == "frame content"]
    tampered = flip_bit(flip_bit(message, 8 * contents[29][0]), 8 * contents[17][0])  # frames 18 and 30
    with pytest.raises(AuthenticationError, match="frame 18 failed"):
        envelope.decrypt(tampered, keyring=KEYRING)


def test_one_shot_signed_bad_signature_returns_nothing(parallel_one_shot: None) -> None:
    plaintext = _frames(40, 64, tail=9)
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=0x0578, frame_length=64)
    with pytest.raises(AuthenticationError, match="signature"):
        envelope.decrypt(flip_bit(message, 8 * len(message) - 1), keyring=KEYRING)


def test_one_shot_irregular_bodies_get_the_streaming_errors(parallel_one_shot: None) -> None:
    message = envelope.encrypt(_frames(10, 64, tail=9), keyring=KEYRING, frame_length=64)
    for bad in (message + b"x", message[:-1], message[:-100]):
        with pytest.raises(FormatError) as one_shot:
            envelope.decrypt(bad, keyring=KEYRING)
        with pytest.raises(FormatError) as streamed:
            envelope.decrypt_stream(io.BytesIO(bad), io.BytesIO(), keyring=KEYRING)
        assert (one_shot.value.field, one_shot.value.offset) == (streamed.value.field, streamed.value.offset)


def test_one_shot_accepts_any_buffer() -> None:
    plaintext = os.urandom(1000)
    message = envelope.encrypt(bytearray(plaintext), keyring=KEYRING, frame_length=64)
    assert envelope.decrypt(memoryview(bytearray(message)), keyring=KEYRING).plaintext == plaintext
