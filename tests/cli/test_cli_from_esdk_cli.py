"""For ESDK CLI users (issue 15, docs/from-esdk-cli.md): its spellings work, and its messages decrypt.

- ``-i/--input``, ``--encryption-context`` and ``--frame-length`` are aliases of INPUT, ``-c`` and
  ``--frame-size``; ``decrypt -c KEY`` (no value) requires KEY with any value, as the ESDK CLI allows.
- Messages as ``aws-encryption-cli`` writes them with its default settings: its encrypt path is the ESDK's
  ``stream(mode="e")`` with a KMS master key provider, no suite or frame length given (so 0x0578 and 4096-byte
  frames), and ``--encode`` wraps the output in ``base64io.Base64IO`` (base64 without line breaks). The tests
  write them the same way, with the same libraries (the ESDK CLI itself pins aws-encryption-sdk < 4 and needs a
  venv of its own; the benchmarks run it, see benchmarks/tools.py).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_fixtures import AwsEnv
from base64io import Base64IO
from runner_support import ok, run

import envelope

PLAIN = os.urandom(50_000)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    ok("keygen", "-o", "k.key", "--name", "k")
    (tmp_path / "a.txt").write_bytes(PLAIN)
    (tmp_path / "b.txt").write_bytes(PLAIN[::-1])
    return tmp_path


def test_the_esdk_cli_spellings(work: Path) -> None:
    ok("encrypt", "-i", "a.txt", "--input", "b.txt", "-o", "enc/", "-k", "k.key", "--encryption-context",
       "purpose=backup", "--encryption-context", "team=data", "--frame-length", "65536")
    for name in ("a.txt", "b.txt"):
        header = json.loads(ok("inspect", f"enc/{name}.encrypted").stdout)
        assert header["frame_length"] == 65536
        assert header["encryption_context"] == {"purpose": "backup", "team": "data"}
    ok("decrypt", "-i", "enc/a.txt.encrypted", "-o", "a.out", "-k", "k.key", "--encryption-context", "purpose=backup")
    assert (work / "a.out").read_bytes() == PLAIN


def test_decrypt_c_key_alone_requires_the_key_with_any_value(work: Path) -> None:
    ok("encrypt", "a.txt", "-o", "m", "-k", "k.key", "-c", "purpose=backup")
    assert ok("decrypt", "m", "-o", "-", "-k", "k.key", "-c", "purpose").stdout_bytes == PLAIN
    result = run("decrypt", "m", "-o", "out", "-k", "k.key", "-c", "team")
    assert result.exit_code == 1 and "'team' is missing from the message" in result.stderr
    assert not (work / "out").exists()
    result = run("decrypt", "m", "-o", "out", "-k", "k.key", "-c", "purpose=other")
    assert result.exit_code == 1 and "'purpose' has a different value" in result.stderr
    result = run("encrypt", "a.txt", "-o", "n", "-k", "k.key", "-c", "novalue")  # encrypt needs values
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.stderr


def esdk_cli_encrypt(plaintext: bytes, arn: str, *, encode: bool, context: dict[str, str] | None = None) -> bytes:
    """What ``aws-encryption-cli --encrypt --wrapping-keys key=ARN [--encode]`` writes: its defaults."""
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn])
    out = io.BytesIO()
    sink: Any = Base64IO(out) if encode else out
    with client.stream(mode="e", source=io.BytesIO(plaintext), key_provider=provider,
                       encryption_context=context or {}) as handler:
        for chunk in handler:
            sink.write(chunk)
    if encode:
        sink.close()
    return out.getvalue()


def test_esdk_cli_default_output_and_its_encode_output_decrypt(aws_env: AwsEnv, work: Path) -> None:
    arn = aws_env.create_key()
    binary = esdk_cli_encrypt(PLAIN, arn, encode=False, context={"purpose": "backup"})
    header = envelope.read_header(io.BytesIO(binary))[0]
    assert header.suite.hex_id == "0x0578" and header.frame_length == 4096  # the ESDK CLI's defaults
    encoded = esdk_cli_encrypt(PLAIN, arn, encode=True, context={"purpose": "backup"})
    assert b"\n" not in encoded and encoded.startswith(b"AgV4")
    (work / "m.encrypted").write_bytes(binary)
    (work / "m.b64").write_bytes(encoded)
    ok("decrypt", "m.encrypted", "-k", f"kms:{arn}", "-c", "purpose=backup")
    assert (work / "m").read_bytes() == PLAIN
    assert ok("decrypt", "m.b64", "--decode", "-o", "-", "-k", f"kms:{arn}", "-c", "purpose").stdout_bytes == PLAIN
    assert ok("decrypt", "--decode", "-o", "-", "--discovery", input=encoded).stdout_bytes == PLAIN
    # without --decode the base64 is recognised and the hint names the option
    result = run("decrypt", "m.b64", "-o", "out", "-k", f"kms:{arn}")
    assert result.exit_code == 1 and "--decode" in result.stderr
