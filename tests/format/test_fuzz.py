"""The fuzz targets of fuzz/targets.py under hypothesis: the short run that the normal suite (and .ci/run) does.

atheris runs the same functions for as long as you like (``python -m fuzz run decrypt --seconds 600``, see
SECURITY.md); here hypothesis feeds them mutations of valid messages for every suite (bytes replaced,
inserted, deleted, length fields set to their extremes, messages cut and spliced), random bytes, every hostile
vector, and the atheris entry points are checked to call the same targets. The budget is a few seconds.
Besides what the targets check (parse or round-trip exactly, header.raw, the EDK-limit boundary, the unsorted-
context round trip, the one-shot frame walk, streaming versus one-shot decrypt), nothing but a seed may
decrypt: a changed message never does (FuzzMalleability, as in age).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envelope import _format as fmt
from envelope.errors import FormatError
from fuzz import targets
from testkit import vectors
from testkit.sources import Trickle

SEEDS = targets.seeds()
SEED_SET = set(SEEDS)
#: Random (not derandomized): each run explores new inputs, and a failure prints the input that reproduces it.
SHORT = settings(max_examples=600, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "cut", "cut-garbage", "extreme", "splice"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - (0 if kind == "insert" else 1)))
        if kind == "replace":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif kind == "cut":
            del data[i:]
        elif kind == "cut-garbage":  # a message cut short and followed by something else
            data[i:] = draw(st.binary(max_size=8))
        elif kind == "extreme":  # a length or count field at its boundary: what random flips rarely produce
            width = draw(st.sampled_from([2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 2**(8 * width) - 1, 2**(8 * width - 1)]))
            data[i:i + width] = value.to_bytes(width, "big")
        else:  # splice: the start of this seed, the rest of another
            other = draw(st.sampled_from(SEEDS))
            data[i:] = other[draw(st.integers(0, len(other) - 1)):]
    return bytes(data)


@settings(SHORT, max_examples=1000)
@given(data=mutated())
def test_targets_on_mutated_messages(data: bytes) -> None:
    targets.header(data)
    decrypted = targets.decrypt(data)
    assert data in SEED_SET or not decrypted, "a changed message decrypted"


@settings(SHORT, max_examples=600)
@given(data=st.binary(max_size=300),
       prefix=st.sampled_from([b"", b"\x01\x80", b"\x01\x80\x00\x14", b"\x02\x04\x78", b"\x02\x05\x78"]))
def test_targets_on_random_bytes(data: bytes, prefix: bytes) -> None:
    targets.header(prefix + data)
    assert not targets.decrypt(prefix + data), "random bytes decrypted"


@pytest.mark.parametrize("vector", [v for v in vectors.load_all() if len(v.message) < 8192], ids=lambda v: v.name)
def test_targets_on_every_vector(vector: vectors.Vector) -> None:
    targets.header(vector.message)
    targets.decrypt(vector.message)


def test_targets_pass_the_seeds_and_decrypt_them() -> None:
    """The seeds are real messages under the targets' key, so a fuzzer gets past the header tag: for every suite
    some written by testkit and some by envelope.encrypt."""
    assert len(SEEDS) >= 24
    import envelope
    from envelope._suites import SUITES

    for seed in SEEDS:
        targets.header(seed)
        assert targets.decrypt(seed)
        assert envelope.decrypt(seed, keyring=vectors.KEYRING, commitment_policy=vectors.READ_ANY).plaintext
    written = {fmt.parse_header(s)[0].suite.id for s in SEEDS if fmt.parse_message(s).header.frame_length == 8}
    assert written == set(SUITES)


def test_targets_fail_on_foreign_exceptions_and_broken_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """The targets are only worth running if they would catch a bug: make the library misbehave."""
    seed = SEEDS[0]
    original = fmt.parse_header

    def raises_value_error(*args: object, **kwargs: object) -> object:
        raise ValueError("a bug")

    monkeypatch.setattr(fmt, "parse_header", raises_value_error)
    with pytest.raises(ValueError):
        targets.header(seed)
    monkeypatch.setattr(fmt, "parse_header", original)
    monkeypatch.setattr(fmt, "serialize_header_body", lambda header: header.raw + b"x")
    with pytest.raises(AssertionError):
        targets.header(seed)
    monkeypatch.undo()

    import envelope._api

    monkeypatch.setattr(envelope._api, "read_header", raises_value_error)
    with pytest.raises(ValueError):
        targets.decrypt(seed)
    monkeypatch.undo()

    # a limit that let one EDK too many through would be caught
    real = fmt.parse_header

    def lenient(buf: bytes, *, max_encrypted_data_keys: int | None = None) -> object:
        return real(buf)

    monkeypatch.setattr(fmt, "parse_header", lenient)
    with pytest.raises(AssertionError, match="passed a limit"):
        targets.header(seed)


def test_the_header_target_checks_the_one_shot_frame_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's in-memory walk (framed_layout) is held to the parser's answer on every framed message."""
    seed = SEEDS[0]
    assert fmt.parse_header(seed)[0].framed
    real = fmt.framed_layout
    monkeypatch.setattr(fmt, "framed_layout", lambda body, frame_length: None)
    with pytest.raises(AssertionError, match="framed_layout"):
        targets.header(seed)
    monkeypatch.setattr(fmt, "framed_layout", lambda body, frame_length: real(body[:-1], frame_length))
    with pytest.raises(AssertionError, match="framed_layout"):
        targets.header(seed)


def test_trickle_source_and_a_known_format_error() -> None:
    source = Trickle(b"abcdefghij", 3)
    buf = bytearray(10)
    assert source.readinto(buf) == 3 and buf[:3] == b"abc"
    bad = b"\x03" + SEEDS[0][1:]
    with pytest.raises(FormatError):
        fmt.parse_header(bad)
    targets.header(bad)  # a format error is an allowed outcome
    targets.decrypt(bad)


def test_atheris_entry_point_runs_the_same_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m fuzz run`` without atheris says how to install it (the suite never needs it)."""
    import builtins

    from fuzz import __main__ as entry

    real_import = builtins.__import__

    def no_atheris(name: str, *args: object, **kwargs: object) -> object:
        if name == "atheris":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_atheris)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[fuzz\]'"):
        entry.main(["run", "decrypt", "--runs", "1"])
    assert set(entry.TARGETS) == {"header", "decrypt"} and all(hasattr(targets, t) for t in entry.TARGETS)


def test_a_crash_becomes_a_regression_vector(tmp_path: Path) -> None:
    """``python -m fuzz vectors --add``: the input, the fuzz key, the expected result; loadable as any vector."""
    import envelope

    crash = b"\x02\x04\x78" + bytes(40)
    vector = vectors.regression(crash, expect="format failure", description="found by the fuzzer")
    assert vector.name.startswith("fuzz-") and vector.keyring.name == vectors.KEYRING.name
    (path,) = vectors.write([vector], tmp_path)
    loaded = vectors.load(path)
    assert (loaded.message, loaded.expect, loaded.decrypt_options) == \
        (crash, "format failure", {"commitment_policy": vectors.READ_ANY})
    with pytest.raises(envelope.FormatError):
        envelope.decrypt(loaded.message, keyring=loaded.keyring, **loaded.decrypt_options)  # type: ignore[arg-type]
    ok = vectors.regression(SEEDS[0], expect="success", description="a valid one")
    assert ok.get("plaintext-sha256")
    with pytest.raises(ValueError):
        vectors.regression(crash, expect="crash", description="x")
