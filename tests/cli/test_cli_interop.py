"""Files written by the CLI decrypt with the real aws-encryption-sdk, and files it writes decrypt with the CLI.

The ESDK side uses its legacy RawMasterKey (the MPL keyrings are not installed), built from the same key file
the CLI uses: same namespace (provider id), name (key id) and key bytes.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey
from envelope_cli.app import app
from typer.testing import CliRunner

runner = CliRunner()
CONTEXT = {"app": "interop", "stage": "test", "ünïcode": "välue"}


def ok(*args: str | Path, input: bytes | None = None) -> Any:
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return result


def context_options() -> list[str]:
    return [part for key, value in CONTEXT.items() for part in ("-c", f"{key}={value}")]


def esdk_master_key(key_file: Path) -> RawMasterKey:
    doc = json.loads(key_file.read_text())
    if doc["type"] == "raw-aes":
        key = base64.b64decode(doc["key"])
        wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                               wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC)
    else:
        assert doc["padding"] == "oaep-sha256"
        wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
                               wrapping_key=doc["private_key"].encode(), wrapping_key_type=EncryptionKeyType.PRIVATE)
    return RawMasterKey(provider_id=doc["namespace"], key_id=doc["name"].encode(), wrapping_key=wrapping)


ESDK = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


@pytest.fixture(params=["aes", "rsa"])
def key_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "k.key"
    ok("keygen", "-o", path, "--name", "interop", *(["--rsa", "2048"] if request.param == "rsa" else []))
    return path


@pytest.mark.parametrize("algorithm", ["0x0478", "0x0578"])
def test_cli_writes_esdk_reads(tmp_path: Path, key_file: Path, algorithm: str) -> None:
    plaintext = os.urandom(200_000)
    (tmp_path / "p").write_bytes(plaintext)
    ok("encrypt", tmp_path / "p", "-o", tmp_path / "m", "-k", key_file, "--algorithm", algorithm,
       "--frame-size", "65536", *context_options())
    decrypted, header = ESDK.decrypt(source=(tmp_path / "m").read_bytes(), key_provider=esdk_master_key(key_file))
    assert decrypted == plaintext
    assert header.algorithm.algorithm_id == int(algorithm, 16)
    assert {k: v for k, v in header.encryption_context.items() if not k.startswith("aws-crypto-")} == CONTEXT
    encoded = ok("encrypt", "-k", key_file, "--encode", *context_options(), input=plaintext).stdout_bytes
    decrypted, _ = ESDK.decrypt(source=base64.b64decode(encoded), key_provider=esdk_master_key(key_file))
    assert decrypted == plaintext


@pytest.mark.parametrize("algorithm", [Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                                       Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384])
def test_esdk_writes_cli_reads(tmp_path: Path, key_file: Path, algorithm: Algorithm) -> None:
    plaintext = os.urandom(150_001)
    message, _ = ESDK.encrypt(source=plaintext, key_provider=esdk_master_key(key_file), algorithm=algorithm,
                              encryption_context=CONTEXT, frame_length=4096)
    (tmp_path / "m.encrypted").write_bytes(message)
    ok("decrypt", tmp_path / "m.encrypted", "-k", key_file, "-c", "app=interop", "-c", "ünïcode=välue")
    assert (tmp_path / "m").read_bytes() == plaintext
    assert ok("decrypt", "--decode", "-k", key_file, input=base64.encodebytes(message)).stdout_bytes == plaintext
    header = json.loads(ok("inspect", tmp_path / "m.encrypted").stdout)
    assert header["suite"]["id"] == f"0x{algorithm.algorithm_id:04x}" and header["frame_length"] == 4096
    assert header["encrypted_data_keys"][0]["provider_id"] == "envelope"
