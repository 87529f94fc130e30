"""Every hostile vector in tests/vectors/hostile/ (one case per file, age testkit style: see testkit/vectors.py)
through one-shot decrypt, streaming decrypt, re-serialisation and the CLI.

The folder holds the seed set (each tamper class for 0x0478, 0x0578 and 0x0178, and the hostile headers of
issue 7) and every input a fuzzer ever crashed on (``python -m fuzz vectors --add``).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
from pathlib import Path

import pytest
from envelope_cli.app import app
from helpers import esdk_aes_key, esdk_decrypt
from typer.testing import CliRunner

import envelope
from envelope import _format as fmt
from envelope.errors import EnvelopeError
from testkit import vectors
from testkit.sources import Trickle

VECTORS = vectors.load_all()
BY_NAME = {v.name: v for v in VECTORS}
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("fast_cli")


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
        expected = vectors.EXPECT[vector.expect]  # and the fresh message is a case of the same kind
        if expected is None:
            _check_success(vector, envelope.decrypt(vector.message, keyring=vector.keyring,
                                                    **vector.decrypt_options).plaintext)  # type: ignore[arg-type]
        else:
            with pytest.raises(expected):
                envelope.decrypt(vector.message, keyring=vector.keyring, **vector.decrypt_options)  # type: ignore[arg-type]


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


def _check_success(vector: vectors.Vector, plaintext: bytes) -> None:
    assert hashlib.sha256(plaintext).hexdigest() == vector.get("plaintext-sha256"), vector.name


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_library(vector: vectors.Vector) -> None:
    keyring, options = vector.keyring, vector.decrypt_options
    expected = vectors.EXPECT[vector.expect]
    outputs = []
    for source in (io.BytesIO(vector.message), Trickle(vector.message, 1000)):
        out = io.BytesIO()
        if expected is None:
            envelope.decrypt_stream(source, out, keyring=keyring, threads=0, **options)  # type: ignore[arg-type]
            _check_success(vector, out.getvalue())
        else:
            with pytest.raises(EnvelopeError) as info:
                envelope.decrypt_stream(source, out, keyring=keyring, threads=0, **options)  # type: ignore[arg-type]
            assert type(info.value) is expected or isinstance(info.value, expected), (vector.name, info.value)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]  # the same bytes were released however the input arrived
    if expected is None:
        result = envelope.decrypt(vector.message, keyring=keyring, **options)  # type: ignore[arg-type]
        _check_success(vector, result.plaintext)
        parsed = fmt.parse_message(vector.message)  # and re-serialisation: the same bytes or the same structure
        again = fmt.serialize_message(parsed)
        assert again == vector.message or fmt.parse_message(again) == parsed
    else:
        with pytest.raises(expected):
            envelope.decrypt(vector.message, keyring=keyring, **options)  # type: ignore[arg-type]


SUCCESS = [v for v in VECTORS if v.expect == "success" and not v.get("max-encrypted-data-keys")]


@pytest.mark.parametrize("vector", SUCCESS, ids=lambda v: v.name)
def test_success_vectors_decrypt_with_the_esdk(vector: vectors.Vector) -> None:
    """A second implementation agrees that these messages are valid (pyca's custom-vector practice)."""
    _, namespace, name, key_hex = (vector.get("key") or "").split(" ")
    plaintext, _ = esdk_decrypt(vector.message, esdk_aes_key(namespace, name, bytes.fromhex(key_hex)))
    _check_success(vector, plaintext)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_cli(vector: vectors.Vector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("k.key").write_text(json.dumps(vector.key_file))
    Path("k.key").chmod(0o600)
    Path("m").write_bytes(vector.message)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["decrypt", "m", "-k", "k.key", "-o", "out", *vector.cli_options])
    assert result.exit_code == vectors.EXIT_CODES[vector.expect], (vector.name, result.stderr)
    if vector.expect == "success":
        _check_success(vector, Path("out").read_bytes())
        assert stat.S_IMODE(Path("out").stat().st_mode) == 0o600
        assert result.stderr == ""
        return
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    assert len(lines[0]) <= 1200 and lines[0].isprintable(), f"{vector.name}: error line of {len(lines[0])} chars"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary file
