"""Known-answer vectors in tests/vectors/esdk/ (docs/esdk-format.md section 11).

Usable, and all run here:

* ``commitment-test-vectors.json``: all 46 v2 vectors. A static test keyring returns each vector's
  ``decrypted-dek`` (44 carry AWS KMS EDKs); vectors 1 and 2 also run with a real raw AES keyring
  (namespace ``ProviderName``, name ``KeyId``, 32 zero bytes) and through the ESDK itself. Vectors 2, 12, 13,
  20 and 21 must fail, with AuthenticationError from the key-commitment check.
* ``decrypt-oracle-vectors.json``: the 18 vectors whose EDK provider is ``null`` (all-zero data key) or
  ``test_counting`` (bytes 01 02 .. N). They use v1 suites, which only a reader with commitment policy
  require-encrypt-allow-decrypt (or forbid-encrypt-allow-decrypt) accepts.

Not usable: the 9 decrypt-oracle vectors with key type ``aws-kms``. Their data keys are encrypted under a KMS
key in an AWS account we cannot call, and the file does not give the plaintext data key, so neither moto nor
a static keyring can open them. Their headers are still parsed and re-serialised below.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import READ_ANY, StaticKeyring, esdk_aes_key, esdk_decrypt

import envelope
from envelope import _crypto as crypto
from envelope import _format as fmt
from envelope._suites import SUITES
from envelope.errors import AuthenticationError, PolicyError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "esdk"
COMMITMENT = json.loads((VECTORS / "commitment-test-vectors.json").read_text())["tests"]
ORACLE = json.loads((VECTORS / "decrypt-oracle-vectors.json").read_text())
MUST_FAIL = {2, 12, 13, 20, 21}  # section 2.4: "KAT vectors 2, 12, 13, 20 and 21 must fail here"
UNSORTED_CONTEXT = {15, 17, 19, 21}  # aws-crypto-public-key written after test-key-2


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def _plaintext(vector: dict[str, Any]) -> bytes:
    return "".join(vector.get("plaintext-frames", [])).encode()


def _number(vector: dict[str, Any]) -> int:
    return int(vector["comment"].split(".")[0])


KAT = [pytest.param(v, id=f"kat{_number(v)}") for v in COMMITMENT]
USABLE_ORACLE = [pytest.param(v, id=f"{v['key-type']}-{v['algorithm-suite']}") for v in ORACLE
                 if v["key-type"] in ("null", "test_counting")]


def test_the_vector_files_hold_what_section_11_says() -> None:
    assert len(COMMITMENT) == 46 and [_number(v) for v in COMMITMENT] == list(range(1, 47))
    assert {_number(v) for v in COMMITMENT if not v["status"]} == MUST_FAIL
    assert len(ORACLE) == 27 and len(USABLE_ORACLE) == 18
    assert {v["algorithm-suite"] for v in ORACLE} == {f"{s:04x}" for s in SUITES if SUITES[s].message_version == 1}


@pytest.mark.parametrize("vector", KAT)
def test_commitment_vector(vector: dict[str, Any]) -> None:
    number = _number(vector)
    message = b64(vector["ciphertext"])
    data_key = b64(vector["decrypted-dek"])
    header, _, _ = fmt.parse_header(message)
    assert header.message_id == b64(vector["message-id"])
    assert header.encryption_context == vector["encryption-context"]
    assert message.startswith(b64(vector["header"]))
    # section 2.3 / 2.4 key derivation against the vector's own answers
    key, commitment = crypto.derive_key(header.suite, data_key, header.message_id)
    keyring = StaticKeyring(data_key, provider_id=header.encrypted_data_keys[0].provider_id)
    if number in MUST_FAIL:
        assert commitment != header.commitment
        for threads in (0, 1):
            out = io.BytesIO()
            with pytest.raises(AuthenticationError, match="commitment"):
                envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, threads=threads)
            assert out.getvalue() == b""
        return
    assert commitment == header.commitment == b64(vector["commitment"])
    if "content-encryption-key" in vector:
        assert key == b64(vector["content-encryption-key"])
    result = envelope.decrypt(message, keyring=keyring)
    assert result.plaintext == _plaintext(vector)
    assert dict(result.context) == vector["encryption-context"]
    out = io.BytesIO()
    streamed = envelope.decrypt_stream(io.BytesIO(message), out, keyring=keyring, threads=1)
    assert out.getvalue() == _plaintext(vector) and streamed.bytes_read == len(message)
    # the body frames listed in the vector are the message's frames, byte for byte
    parsed = fmt.parse_message(message)
    if "frames" in vector and isinstance(parsed.body, tuple):
        assert [fmt.serialize_frame(f) for f in parsed.body] == [b64(f) for f in vector["frames"]]
    if number not in UNSORTED_CONTEXT:
        assert fmt.serialize_message(parsed) == message
    else:  # read in any order, written sorted: only the AAD differs, and header.raw keeps the original
        assert parsed.header.raw == message[:len(parsed.header.raw)]
        assert fmt.serialize_header_body(parsed.header) != parsed.header.raw


@pytest.mark.parametrize("number", [1, 2])
def test_raw_aes_vectors_with_a_real_keyring_and_the_esdk(number: int) -> None:
    vector = COMMITMENT[number - 1]
    message = b64(vector["ciphertext"])
    keyring = envelope.RawAesKeyring("ProviderName", "KeyId", bytes(32))
    # the raw AES keyring unwraps the vector's data key (section 7.2 wire format)
    header, _, _ = fmt.parse_header(message)
    assert keyring.unwrap(header.suite, header.encryption_context, header.encrypted_data_keys) == b64(
        vector["decrypted-dek"])
    esdk_key = esdk_aes_key("ProviderName", "KeyId", bytes(32))
    if number in MUST_FAIL:
        with pytest.raises(AuthenticationError, match="commitment"):
            envelope.decrypt(message, keyring=keyring)
        with pytest.raises(Exception, match=r"(?i)commitment"):
            esdk_decrypt(message, esdk_key)
    else:
        assert envelope.decrypt(message, keyring=keyring).plaintext == b"GoodCommitment"
        assert esdk_decrypt(message, esdk_key)[0] == b"GoodCommitment"


@pytest.mark.parametrize("vector", USABLE_ORACLE)
def test_decrypt_oracle_vector(vector: dict[str, Any]) -> None:
    suite = SUITES[int(vector["algorithm-suite"], 16)]
    data_key = bytes(suite.key_length) if vector["key-type"] == "null" else bytes(range(1, suite.key_length + 1))
    message = b64(vector["ciphertext"])
    keyring = StaticKeyring(data_key, provider_id=vector["key-type"])
    expected = b64(vector["plaintext"])
    assert len(expected) == 64
    result = envelope.decrypt(message, keyring=keyring, commitment_policy=READ_ANY)
    assert result.plaintext == expected and result.suite is suite
    assert {k: v for k, v in result.context.items() if k != crypto.PUBLIC_KEY_CONTEXT_KEY} == {
        "key1": "val1", "key2": "val2"}
    assert envelope.decrypt(message, keyring=keyring, commitment_policy="forbid-encrypt-allow-decrypt"
                            ).plaintext == expected
    assert fmt.serialize_message(fmt.parse_message(message)) == message
    # the default policy (require-encrypt-require-decrypt) refuses a v1 suite before using any key
    keyring.calls.clear()
    with pytest.raises(PolicyError, match="commit"):
        envelope.decrypt(message, keyring=keyring)
    assert keyring.calls == []
    # and a wrong data key fails authentication
    with pytest.raises(AuthenticationError):
        envelope.decrypt(message, keyring=StaticKeyring(bytes([7]) * suite.key_length), commitment_policy=READ_ANY)


def test_unusable_kms_oracle_vectors_still_parse() -> None:
    kms = [v for v in ORACLE if v["key-type"] == "aws-kms"]
    assert len(kms) == 9
    for vector in kms:
        message = b64(vector["ciphertext"])
        parsed = fmt.parse_message(message)
        assert parsed.header.suite.id == int(vector["algorithm-suite"], 16)
        assert [e.provider_id for e in parsed.header.encrypted_data_keys] == ["aws-kms"]
        assert fmt.serialize_message(parsed) == message
