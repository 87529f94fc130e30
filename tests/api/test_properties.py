"""Property-based tests (hypothesis): round trips at sizes near frame boundaries with small frames, one-shot
and streaming, and the ESDK reading them. Mutated messages (which must fail with an envelope error or
round-trip exactly, and never decrypt) are fuzzed in tests/format/test_fuzz.py.
"""

from __future__ import annotations

import io

from helpers import ALL_SUITE_IDS, READ_ANY, encrypt_policy, esdk_aes_key, esdk_decrypt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envelope
from envelope import _format as fmt

KEY = bytes(range(32))
KEYRING = envelope.RawAesKeyring("ns", "prop", KEY)
ESDK_KEY = esdk_aes_key("ns", "prop", KEY)
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def boundary_cases(draw: st.DrawFn) -> tuple[int, int, int, bytes]:
    """(suite, frame length, size, plaintext) with size = k * F + delta, delta in -2..2."""
    suite_id = draw(st.sampled_from(ALL_SUITE_IDS))
    frame_length = draw(st.integers(1, 48))
    k = draw(st.integers(0, 4))
    delta = draw(st.integers(-2, 2))
    size = max(0, k * frame_length + delta)
    seed = draw(st.integers(0, 255))
    return suite_id, frame_length, size, bytes((seed + 31 * i) % 256 for i in range(size))


class _Chunks:
    """A non-seekable source returning reads of the given sizes in turn."""

    def __init__(self, data: bytes, steps: list[int]) -> None:
        self._data, self._pos, self._steps, self._i = data, 0, steps, 0

    def readinto(self, buf: memoryview) -> int:
        step = self._steps[self._i % len(self._steps)]
        self._i += 1
        n = min(len(buf), step, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@SETTINGS
@given(case=boundary_cases(), steps=st.lists(st.integers(1, 64), min_size=1, max_size=4),
       context=st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: not k.startswith("aws-crypto-")),
                               st.text(max_size=5), max_size=3))
def test_round_trip_near_frame_boundaries(case: tuple[int, int, int, bytes], steps: list[int],
                                          context: dict[str, str]) -> None:
    suite_id, frame_length, size, plaintext = case
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=frame_length,
                               context=context, commitment_policy=encrypt_policy(suite_id))
    # layout: size // F regular frames, then a final frame holding the rest (possibly nothing)
    parsed = fmt.parse_message(message)
    assert isinstance(parsed.body, tuple)
    assert len(parsed.body) == size // frame_length + 1
    assert len(parsed.body[-1].ciphertext) == size % frame_length
    assert fmt.serialize_message(parsed) == message
    result = envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY)
    assert result.plaintext == plaintext
    assert {k: v for k, v in result.context.items() if k != "aws-crypto-public-key"} == context
    out = io.BytesIO()
    envelope.decrypt_stream(_Chunks(message, steps), out, keyring=KEYRING, commitment_policy=READ_ANY,  # type: ignore[arg-type]
                            threads=len(steps) % 3)
    assert out.getvalue() == plaintext
    # streaming encryption from short reads writes a message of the same layout
    out = io.BytesIO()
    envelope.encrypt_stream(_Chunks(plaintext, steps), out, keyring=KEYRING, algorithm=suite_id,  # type: ignore[arg-type]
                            frame_length=frame_length, context=context, commitment_policy=encrypt_policy(suite_id))
    assert len(out.getvalue()) == len(message)
    assert envelope.decrypt(out.getvalue(), keyring=KEYRING, commitment_policy=READ_ANY).plaintext == plaintext


@settings(SETTINGS, max_examples=40)
@given(case=boundary_cases())
def test_the_esdk_reads_boundary_sizes(case: tuple[int, int, int, bytes]) -> None:
    suite_id, frame_length, _, plaintext = case
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=frame_length,
                               commitment_policy=encrypt_policy(suite_id))
    assert esdk_decrypt(message, ESDK_KEY)[0] == plaintext
