"""Tampering through the library (esdk-format.md sections 5, 9, 10): the vector runner.

A case is a message and what decrypt must do with it. The cases are

- the hostile vector files in ``tests/vectors/hostile/`` (one case per file, age testkit style: see
  ``testkit/vectors.py``): the seed set (each tamper class for 0x0478, 0x0578 and 0x0178, and the hostile
  headers of issue 7) and every input a fuzzer ever crashed on (``python -m fuzz vectors --add``);
- cases generated from small messages (a few bytes in frames of 4 bytes: every field of the format is still
  present, and the sweeps stay fast): every single-bit flip, for every suite and for ESDK non-framed messages;
  a cut at every offset; trailing bytes; sequence numbers and lengths changed.

Every case goes through one-shot ``decrypt`` and streaming ``decrypt_stream`` (the vector files also through
a source that returns 1,000 bytes per read; the bit-flip sweeps, 32,000 cases, through one-shot only, which
keeps them to a few seconds), with one check (:func:`check`): the outcome is the
expected one, the same both ways; a failure is an envelope error of an allowed class and releases only
authenticated plaintext (never the final frame); where a case says so, the error names the same field and
offset as the parser, or the offset where the input ends. The same cases through the CLI are
tests/cli/test_tamper_cli.py.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import ALL_SUITE_IDS, READ_ANY, encrypt_policy, esdk_aes_key, esdk_decrypt, esdk_encrypt

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
from testkit import vectors
from testkit.messages import field_map, flip_bit, replace_at, u32
from testkit.sources import Trickle

VECTORS = vectors.load_all()
BY_NAME = {v.name: v for v in VECTORS}

KEY = bytes(range(32))
KEYRING = envelope.RawAesKeyring("ns", "k", KEY)
PLAINTEXT = b"tamper"  # one 4-byte regular frame and a 2-byte final frame
FRAME = 4
HEADER_ERRORS = (FormatError, AuthenticationError, KeyringError, PolicyError)
BODY_ERRORS = (FormatError, AuthenticationError)


@dataclass(frozen=True)
class Case:
    """A message and what decrypt must do with it."""

    name: str
    message: bytes
    keyring: envelope.Keyring
    options: Mapping[str, Any]  # decrypt keyword arguments besides the keyring
    allowed: tuple[type[EnvelopeError], ...] | None  # None: it decrypts
    plaintext: bytes | None = None  # the message's plaintext, when known
    released: int | None = None  # the most a failing streaming decrypt may write (the regular frames)
    plaintext_sha256: str | None = None
    error_at: tuple[str, int] | None = None  # (field, offset) every way must name
    cut: int | None = None  # the input ends here: a truncation reported where the input ends
    streaming: bool = True  # also through decrypt_stream (the bit-flip sweeps: one-shot only, for time)
    slow_pipe: bool = False  # also read through a source returning 1,000 bytes per read
    seen: list[str] = field(default_factory=list, compare=False)  # the error class each way raised


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        return "ok", run()
    except EnvelopeError as exc:  # anything else escapes: a failure of the test
        return "error", exc


def check(case: Case) -> None:
    """The one check every case gets (see the module docstring)."""
    ways: list[tuple[str, tuple[str, Any], bytes | None]] = []
    one = _outcome(lambda: envelope.decrypt(case.message, keyring=case.keyring, **case.options).plaintext)
    ways.append(("one-shot", one, None))
    sources = [("stream", io.BytesIO(case.message))] if case.streaming else []
    if case.slow_pipe:
        sources.append(("slow pipe", Trickle(case.message, 1000)))
    for label, source in sources:
        out = io.BytesIO()
        result = _outcome(lambda source=source, out=out: envelope.decrypt_stream(
            source, out, keyring=case.keyring, threads=0, **case.options))
        ways.append((label, result, out.getvalue()))
    where = case.name
    if case.allowed is None:
        for label, (kind, value), out in ways:
            assert kind == "ok", (where, label, value)
            plaintext = value if out is None else out
            if case.plaintext is not None:
                assert plaintext == case.plaintext, (where, label)
            if case.plaintext_sha256 is not None:
                assert hashlib.sha256(plaintext).hexdigest() == case.plaintext_sha256, (where, label)
        parsed = fmt.parse_message(case.message)  # and re-serialisation: the same bytes or the same structure
        again = fmt.serialize_message(parsed)
        assert again == case.message or fmt.parse_message(again) == parsed, where
        return
    released = [out for _, _, out in ways if out is not None]
    assert all(r == released[0] for r in released), (where, "the bytes released depend on how the input arrives")
    for label, (kind, error), out in ways:
        assert kind == "error", f"{where} ({label}): the change was not detected"
        assert isinstance(error, case.allowed), (where, label, type(error).__name__, str(error))
        case.seen.append(type(error).__name__)
        if out is not None:
            if case.plaintext is not None:
                assert case.plaintext.startswith(out), (where, label)
            if case.released is not None:
                assert len(out) <= case.released, (where, label, f"{len(out)} bytes released")
        if case.error_at is not None:
            assert (error.field, error.offset) == case.error_at, (where, label, str(error))
        if case.cut:
            assert isinstance(error, TruncatedError), (where, label, str(error))
            assert error.offset <= case.cut < error.needed, (where, label, f"{error} (needs {error.needed})")
    assert len({type(e).__name__ for _, (_, e), _ in ways}) == 1, (where, [str(e) for _, (_, e), _ in ways])


# ---------------------------------------------------------------------------------------------------------
# the vector files


def _vector_case(vector: vectors.Vector) -> Case:
    expected = vectors.EXPECT[vector.expect]
    return Case(vector.name, vector.message, vector.keyring, vector.decrypt_options,
                None if expected is None else (expected,), plaintext_sha256=vector.get("plaintext-sha256"),
                slow_pipe=True)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector(vector: vectors.Vector) -> None:
    check(_vector_case(vector))


def test_the_folder_holds_the_seed_set() -> None:
    assert {v.expect for v in VECTORS} == set(vectors.EXPECT)
    for suite in ("0478", "0578", "0178"):
        for case in ("ok", "flip-version", "flip-message-id", "flip-context", "flip-edk", "flip-other-edk",
                     "flip-frame-length", "flip-header-tag", "flip-regular-frame", "flip-final-frame",
                     "truncated-at-frame-boundary", "truncated-in-edk", "truncated-in-frame", "trailing-bytes",
                     "sequence-gap", "sequence-wrap", "changed-provider-info"):
            assert f"{suite}-{case}" in BY_NAME
    for name in ("0578-flip-signature", "0578-signature-stripped", "0478-half-signed", "edk-count-65535",
                 "edk-fields-65535", "edk-provider-id-65535", "context-64k", "frame-length-4294967295",
                 "non-framed-length-2-36", "0578-final-frame-sequence-max"):
        assert name in BY_NAME
    assert all(v.description for v in VECTORS)


def test_the_seed_generator_describes_the_committed_files() -> None:
    """``python -m fuzz vectors --write`` would write the same cases (the messages differ: random IDs and IVs)."""
    generated = vectors.seed_vectors()
    assert len({v.name for v in generated}) == len(generated)
    for vector in generated:
        committed = BY_NAME[vector.name]
        assert (vector.expect, vector.description, vector.fields) == \
            (committed.expect, committed.description, committed.fields), vector.name
        check(_vector_case(vector))  # and the fresh message is a case of the same kind


def test_vector_files_round_trip_and_malformed_files_are_refused(tmp_path: Path) -> None:
    vector = BY_NAME["0478-ok"]
    (tmp_path / "v").write_text(vectors.dump(vector))
    again = vectors.load(tmp_path / "v")
    assert (again.expect, again.description, again.message, again.fields) == \
        (vector.expect, vector.description, vector.message, vector.fields)
    for bad in ("expect: maybe\ndescription: x\n\nAAAA\n", "expect: success\n\nAAAA\n",
                "expect: success\ndescription: x\nAAAA\n", "expect: success\ndescription: x\n\nA*AA\n"):
        (tmp_path / "bad").write_text(bad)
        with pytest.raises(ValueError):
            vectors.load(tmp_path / "bad")


SUCCESS = [v for v in VECTORS if v.expect == "success" and not v.get("max-encrypted-data-keys")]


@pytest.mark.parametrize("vector", SUCCESS, ids=lambda v: v.name)
def test_success_vectors_decrypt_with_the_esdk(vector: vectors.Vector) -> None:
    """A second implementation agrees that these messages are valid (pyca's custom-vector practice)."""
    _, namespace, name, key_hex = (vector.get("key") or "").split(" ")
    plaintext, _ = esdk_decrypt(vector.message, esdk_aes_key(namespace, name, bytes.fromhex(key_hex)))
    assert hashlib.sha256(plaintext).hexdigest() == vector.get("plaintext-sha256"), vector.name


def test_the_check_catches_what_it_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner is only worth running if a wrong answer fails it."""
    message = _message(0x0478)
    with pytest.raises(AssertionError, match="not detected"):
        check(_case("unchanged", message, HEADER_ERRORS))
    with pytest.raises(AssertionError):
        check(_case("wrong class", message[:-1], (AuthenticationError,)))
    with pytest.raises(AssertionError):
        check(_case("wrong place", message[:-1], BODY_ERRORS, error_at=("frame tag", 0)))
    with pytest.raises(AssertionError):
        check(Case("wrong plaintext", message, KEYRING, {"commitment_policy": READ_ANY}, None, plaintext=b"x"))
    import envelope._api

    real = envelope._api.open_framed

    def releases_everything(src: Any, write: Any, *args: Any, finish: Any, **kwargs: Any) -> int:
        return real(src, write, *args, finish=lambda: None, **kwargs)  # skips the final checks

    monkeypatch.setattr(envelope._api, "open_framed", releases_everything)
    with pytest.raises(AssertionError):
        check(_case("trailing", message + b"\x00", BODY_ERRORS))


# ---------------------------------------------------------------------------------------------------------
# generated cases


def _message(suite_id: int) -> bytes:
    return envelope.encrypt(PLAINTEXT, keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                            context={"c": "1"}, commitment_policy=encrypt_policy(suite_id))


def _case(name: str, message: bytes, allowed: tuple[type[EnvelopeError], ...], *, plaintext: bytes = PLAINTEXT,
          released: int | None = FRAME, **more: Any) -> Case:
    return Case(name, message, KEYRING, {"commitment_policy": READ_ANY}, allowed, plaintext, released, **more)


def _header_end(message: bytes) -> int:
    return next(end for name, _, end in field_map(message) if name == "header authentication tag")


def _flips(name: str, message: bytes, body_errors: tuple[type[EnvelopeError], ...]) -> Iterator[Case]:
    """Every single-bit flip; in the header any refusal, in the body a format or authentication error."""
    header_end = _header_end(message)
    for bit in range(8 * len(message)):
        allowed = HEADER_ERRORS if bit // 8 < header_end else body_errors
        yield _case(f"{name} bit {bit} (byte {bit // 8})", flip_bit(message, bit), allowed, streaming=False)


def _run(cases: Iterator[Case]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for case in cases:
        check(case)
        for name in case.seen:
            seen[name] = seen.get(name, 0) + 1
    return seen


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_every_bit_flip_fails(suite_id: int) -> None:
    message = _message(suite_id)
    check(Case("untouched", message, KEYRING, {"commitment_policy": READ_ANY}, None, PLAINTEXT))
    seen = _run(_flips(f"0x{suite_id:04x}", message, BODY_ERRORS))
    assert seen.get("AuthenticationError", 0) > 0 and seen.get("FormatError", 0) > 0


@pytest.mark.parametrize("suite_id", [0x0378, 0x0578])
def test_every_bit_flip_of_an_esdk_non_framed_message_fails(suite_id: int) -> None:
    message = esdk_encrypt(PLAINTEXT, esdk_aes_key("ns", "k", KEY), suite_id, context={}, frame_length=0)
    check(Case("untouched", message, KEYRING, {"commitment_policy": READ_ANY}, None, PLAINTEXT))
    # a flipped high bit of the 8-byte body length asks for a block above the max_frame_length limit; a
    # non-framed body is released only whole, after it verified
    _run(_flips(f"0x{suite_id:04x} non-framed", message, (*BODY_ERRORS, PolicyError)))


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_truncation_at_every_offset_fails(suite_id: int) -> None:
    message = _message(suite_id)
    _run(_case(f"cut at {cut}", message[:cut], (TruncatedError,) if cut else (FormatError,), cut=cut)
         for cut in range(len(message)))


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_trailing_bytes_fail(suite_id: int) -> None:
    message = _message(suite_id)
    _run(_case(f"{len(extra)} trailing bytes", message + extra, (FormatError,),
               error_at=("end of message", len(message)))
         for extra in (b"\x00", b"\xff" * 3, message))


def _parser_error(message: bytes) -> tuple[str, int]:
    with pytest.raises(FormatError) as parsed:
        fmt.parse_message(message)
    return parsed.value.field, parsed.value.offset


@pytest.mark.parametrize("suite_id", [0x0114, 0x0578])
@pytest.mark.parametrize("frames", [1, 3])
def test_decrypt_names_the_field_where_the_input_ends(suite_id: int, frames: int) -> None:
    """The streaming reader may name a group of fields ("final frame header"), but its offset is where that
    group starts and the input ends inside it. In the header it reports exactly what the parser does."""
    plaintext = bytes(FRAME * frames + 1)
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                               commitment_policy=encrypt_policy(suite_id))
    header_end = _header_end(message)
    _run(_case(f"cut at {cut}", message[:cut], (TruncatedError,), plaintext=plaintext, released=FRAME * frames,
               cut=cut, error_at=_parser_error(message[:cut]) if cut < header_end else None)
         for cut in range(1, len(message)))


@pytest.mark.parametrize("suite_id", [0x0114, 0x0578])
def test_decrypt_reports_body_format_errors_like_the_parser(suite_id: int) -> None:
    plaintext = bytes(FRAME * 3 + 1)
    message = envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id, frame_length=FRAME,
                               commitment_policy=encrypt_policy(suite_id))
    fields = field_map(message)
    seq = [s for n, s, _ in fields if n == "sequence number"]
    final_seq = next(s for n, s, _ in fields if n == "final frame sequence number")
    final_len = next(s for n, s, _ in fields if n == "final frame content length")
    changes = [(seq[0], u32(2)), (seq[1], u32(1)), (seq[2], u32(7)), (final_seq, u32(3)), (final_seq, u32(5)),
               (final_len, u32(FRAME + 1))]
    _run(_case(f"{value.hex()} at {at}", replace_at(message, at, value), (FormatError,), plaintext=plaintext,
               released=3 * FRAME, error_at=_parser_error(replace_at(message, at, value)))
         for at, value in changes)
