"""Hostile headers and bodies in bounded memory and time (issue 7; esdk-format.md section 9).

Each case of testkit/hostile.py declares something huge (65,535 EDKs, 65,535-byte EDK fields, a 64 KiB
context, frame length 2^32 - 1, a non-framed body of 2^36 bytes, a sequence-number gap or wrap) in a stream
generated as it is read. Decrypt must refuse it with the right error, having read no more than the limit
requires, without asking a keyring when the refusal comes from the header alone, and without allocating in
proportion to any declared length: the Python allocations (tracemalloc, deterministic) stay within a few MiB.
No time is asserted; "early" is measured in bytes read. Peak RSS of the same cases is printed by
``python -m benchmarks.hostile`` (figures in SECURITY.md); one test here checks RSS in a fresh interpreter
against a generous bound, since RSS follows allocations.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope
from envelope._api import DEFAULT_MAX_ENCRYPTED_DATA_KEYS, DEFAULT_MAX_FRAME_LENGTH, DEFAULT_MAX_HEADER_LENGTH
from envelope._format import parse_header
from testkit.hostile import CASES, Case, measure, run_case
from testkit.sources import HostileSource
from testkit.vectors import KEYRING

MiB = 1024 * 1024
runner = CliRunner()


def test_documented_defaults() -> None:
    assert (DEFAULT_MAX_ENCRYPTED_DATA_KEYS, DEFAULT_MAX_HEADER_LENGTH, DEFAULT_MAX_FRAME_LENGTH) == \
        (256, MiB, 64 * MiB)
    security = (Path(__file__).resolve().parents[2] / "SECURITY.md").read_text()
    for figure in ("256", "1 MiB", "64 MiB"):
        assert figure in security


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_refused_early_in_bounded_memory(case: Case) -> None:
    peak = 0
    if case.max_python is None:  # 65,535 parsed EDKs: tracing every allocation would take seconds; RSS below
        result = run_case(case)
    else:
        tracemalloc.start()
        try:
            result = run_case(case)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result["error"] == case.error, result
    assert result["read"] <= case.max_read, f"read {result['read']} bytes before refusing"
    if not case.keyring_called:
        assert result["keyring_calls"] == 0  # refused on the header alone, before any key was used
    if case.max_python is not None:
        assert peak <= case.max_python, f"{peak / MiB:.1f} MiB of Python allocations"


def test_the_source_really_declares_what_the_cases_say() -> None:
    """The cases only prove something if the streams hold what they claim: read one to the end of its header."""
    by_name = {c.name: c for c in CASES}
    source = by_name["edk-fields-65535-x65535"].make()
    assert source.declared > 65535 * 3 * 65535
    header = by_name["edk-count-65535-allowed"].make().read(65535 * 6 + 200)
    parsed, _, _ = parse_header(header)
    assert len(parsed.encrypted_data_keys) == 65535
    sized = HostileSource([(b"ab", 3), (b"c", 2)])
    assert sized.declared == 8 and sized.read(100) == b"abababcc" and sized.read_bytes == 8


@pytest.mark.parametrize("name, limit, error", [
    ("edk-count-65535", {"max_encrypted_data_keys": 65534}, envelope.PolicyError),
    ("edk-fields-65535-x256", {"max_header_length": 64 * 1024}, envelope.PolicyError),
    ("frame-length-4294967295", {"max_frame_length": 2**32 - 2}, envelope.PolicyError),
])
def test_limits_are_keyword_arguments(name: str, limit: dict[str, int], error: type[Exception]) -> None:
    case = next(c for c in CASES if c.name == name)
    with pytest.raises(error, match="limit"):
        envelope.decrypt_stream(case.make(), io.BytesIO(), keyring=KEYRING, **limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, code, words", [
    ("edk-count-65535", 1, "65535 encrypted data keys"),
    ("edk-fields-65535-x256", 1, "header is longer than the limit of 1048576 bytes"),
    ("context-64k", 3, "no key could open the data key"),
    ("frame-length-4294967295", 1, "frame length 4294967295 is above the limit"),
    ("non-framed-2-36", 1, "above the limit of 2^36 - 32"),
    ("sequence-wrap", 1, "is 0, expected 1"),
])
def test_cli_refuses_hostile_headers(name: str, code: int, words: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, fast_cli: None) -> None:
    """Through the CLI: the first 2 MiB of the stream in a file (a decrypt that read further than its limit
    would hit the end of the file and report truncation instead)."""
    monkeypatch.chdir(tmp_path)
    Path("k.key").write_text('{"type": "raw-aes", "namespace": "hostile", "name": "vector-key", "key": "'
                             + __import__("base64").b64encode(bytes(range(32))).decode() + '"}')
    Path("k.key").chmod(0o600)  # a key file others can read gets a warning line (issue 12)
    Path("m").write_bytes(next(c for c in CASES if c.name == name).make().read(2 * MiB))
    result = runner.invoke(app, ["decrypt", "m", "-k", "k.key", "-o", "out"])
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1 and words in lines[0] and len(lines[0]) < 1200, lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "m"]


def test_peak_rss_in_a_fresh_interpreter() -> None:
    """Allocation-based, so stable: a 12.9 GB header is refused with a few MiB of growth, and a body that
    stops inside a 64 MiB frame (the limit) costs about twice the bytes that arrived, nothing like the frame."""
    header = measure("edk-fields-65535-x65535")
    assert header["error"] == "PolicyError" and header["growth_kib"] < 32 * 1024, header
    frame = measure("frame-length-64mib-truncated")
    assert frame["error"] == "TruncatedError" and frame["growth_kib"] < 64 * 1024, frame
    edks = measure("edk-count-65535-allowed")  # the limit raised on purpose: 65,535 EDK objects, still bounded
    assert edks["error"] == "KeyringError" and edks["growth_kib"] < 64 * 1024, edks


def test_a_small_header_limit_holds_even_when_the_header_fits_in_the_first_read() -> None:
    """read_header reads 4 KiB first; a limit below that must still be enforced (it once was not)."""
    message = envelope.encrypt(b"x", keyring=KEYRING, context={"c": "v" * 200})
    size = parse_header(message)[2]
    with pytest.raises(envelope.PolicyError, match=f"the header is {size} bytes, longer than the limit"):
        envelope.decrypt(message, keyring=KEYRING, max_header_length=size - 1)
    assert envelope.decrypt(message, keyring=KEYRING, max_header_length=size).plaintext == b"x"


@pytest.mark.parametrize("frame_length", [1, 8, 100, 4096, 1 << 20, 4 << 20, 64 << 20])
def test_batch_buffers_stay_bounded_for_any_frame_length(frame_length: int) -> None:
    """A batch is sized by wire bytes: tiny frames (32 bytes of overhead each) must not multiply the buffers
    (sizing by plaintext once mapped 132 MiB per slot at frame length 1)."""
    from envelope import _stream as stream

    per_batch, slots = stream._slot_count(frame_length, threads=1)
    slot_bytes = per_batch * (frame_length + stream.REGULAR_OVERHEAD)
    assert slot_bytes <= max(stream.BATCH_BYTES, frame_length + stream.REGULAR_OVERHEAD)
    if frame_length > stream.BATCH_BYTES:
        assert (per_batch, slots) == (1, 1)  # one frame at a time, no pipeline copies


def test_frame_length_one_round_trips() -> None:
    import os

    keyring = envelope.RawAesKeyring("hostile", "tiny", bytes(32))
    plaintext = os.urandom(3000)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=1)
    out = io.BytesIO()
    envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, threads=1)
    assert out.getvalue() == plaintext
