"""Required encryption context against the real thing: aws-encryption-sdk 4.x with the MPL's required-EC CMM
(aws-cryptographic-material-providers, from the test extra), over a raw AES keyring and over AWS KMS on the
tests' own moto_server, both directions (esdk-format.md section 6.4; issue 15).

Also: an ESDK + MPL message rewrapped by envelope decrypts with the ESDK + MPL under the new key, the required
pairs still required.
"""

from __future__ import annotations

import io
import os
from typing import Any

import aws_encryption_sdk
import boto3
import pytest
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import (
    AesWrappingAlg,
    CreateAwsKmsKeyringInput,
    CreateDefaultCryptographicMaterialsManagerInput,
    CreateRawAesKeyringInput,
    CreateRequiredEncryptionContextCMMInput,
)
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy
from aws_fixtures import REGION, AwsEnv
from cryptography.exceptions import InvalidTag
from helpers import esdk_aes_key

import envelope

CONTEXT = {"app": "billing", "tenant": "acme", "stage": "prod"}
REQUIRED = ["tenant"]
PLAINTEXT = os.urandom(20_000)
KEY = bytes(range(32))
MPL = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
ESDK = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def required_cmm(keyring: Any, keys: list[str] = REQUIRED) -> Any:
    """The MPL's required-EC CMM over a default CMM over ``keyring``."""
    default = MPL.create_default_cryptographic_materials_manager(
        CreateDefaultCryptographicMaterialsManagerInput(keyring=keyring))
    return MPL.create_required_encryption_context_cmm(
        CreateRequiredEncryptionContextCMMInput(underlying_cmm=default, required_encryption_context_keys=keys))


def mpl_aes(name: str = "k1", key: bytes = KEY) -> Any:
    return MPL.create_raw_aes_keyring(CreateRawAesKeyringInput(
        key_namespace="interop", key_name=name, wrapping_key=key,
        wrapping_alg=AesWrappingAlg.ALG_AES256_GCM_IV12_TAG16))


def aes(name: str = "k1", key: bytes = KEY) -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("interop", name, key)


def stored(message: bytes) -> dict[str, str]:
    return {k: v for k, v in envelope.read_header(io.BytesIO(message))[0].encryption_context.items()
            if not k.startswith("aws-crypto-")}


@pytest.mark.parametrize("algorithm", [Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                                       Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384])
def test_esdk_required_context_decrypts_with_envelope(algorithm: Algorithm) -> None:
    message, _ = ESDK.encrypt(source=PLAINTEXT, materials_manager=required_cmm(mpl_aes()), encryption_context=CONTEXT,
                              algorithm=algorithm, frame_length=4096)
    assert stored(message) == {"app": "billing", "stage": "prod"}  # the ESDK left the required pair out
    result = envelope.decrypt(message, keyring=aes(), reproduced_context={"tenant": "acme"})
    assert result.plaintext == PLAINTEXT
    with pytest.raises(envelope.AuthenticationError, match="'tenant'"):
        envelope.decrypt(message, keyring=aes(), reproduced_context={"tenant": "other"})
    with pytest.raises(envelope.KeyringError, match="must be reproduced"):
        envelope.decrypt(message, keyring=aes())


@pytest.mark.parametrize("algorithm", [0x0478, 0x0578])
def test_envelope_required_context_decrypts_with_esdk(algorithm: int) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=aes(), context=CONTEXT, required_context_keys=REQUIRED,
                               algorithm=algorithm)
    plaintext, header = ESDK.decrypt(source=message, materials_manager=required_cmm(mpl_aes()),
                                     encryption_context={"tenant": "acme"})
    assert plaintext == PLAINTEXT
    assert "tenant" not in header.encryption_context
    for wrong in ({"tenant": "other"}, {}):
        with pytest.raises(aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError):
            ESDK.decrypt(source=message, materials_manager=required_cmm(mpl_aes()), encryption_context=wrong)
    # without the MPL's CMM the ESDK cannot reproduce the pair, and the message does not open
    legacy = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    with pytest.raises((aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError, InvalidTag)):
        legacy.decrypt(source=message, key_provider=esdk_aes_key("interop", "k1", KEY))  # its raw key: InvalidTag


def test_two_required_keys_both_ways() -> None:
    keys = ["tenant", "stage"]
    ours = envelope.encrypt(PLAINTEXT, keyring=aes(), context=CONTEXT, required_context_keys=keys)
    theirs, _ = ESDK.encrypt(source=PLAINTEXT, materials_manager=required_cmm(mpl_aes(), keys),
                             encryption_context=CONTEXT)
    assert stored(ours) == stored(theirs) == {"app": "billing"}
    reproduced = {"tenant": "acme", "stage": "prod"}
    assert ESDK.decrypt(source=ours, materials_manager=required_cmm(mpl_aes(), keys),
                        encryption_context=reproduced)[0] == PLAINTEXT
    assert envelope.decrypt(theirs, keyring=aes(), reproduced_context=reproduced).plaintext == PLAINTEXT


def test_esdk_message_rewrapped_by_envelope_keeps_its_required_context() -> None:
    message, _ = ESDK.encrypt(source=PLAINTEXT, materials_manager=required_cmm(mpl_aes()), encryption_context=CONTEXT)
    out = io.BytesIO()
    envelope.rewrap_stream(io.BytesIO(message), out, old=aes(), new=aes("k2", bytes(32)),
                           reproduced_context={"tenant": "acme"})
    rewrapped = out.getvalue()
    assert stored(rewrapped) == stored(message)
    plaintext, _ = ESDK.decrypt(source=rewrapped, materials_manager=required_cmm(mpl_aes("k2", bytes(32))),
                                encryption_context={"tenant": "acme"})
    assert plaintext == PLAINTEXT
    with pytest.raises(aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError):
        ESDK.decrypt(source=rewrapped, materials_manager=required_cmm(mpl_aes()), encryption_context={"tenant": "acme"})


# ---------------------------------------------------------------------------------------------------------
# AWS KMS on moto: the KMS keyrings on both sides see the whole context (required pairs included)


def mpl_kms(arn: str, aws_env: AwsEnv) -> Any:
    client = boto3.client("kms", region_name=REGION, endpoint_url=aws_env.url)
    return MPL.create_aws_kms_keyring(CreateAwsKmsKeyringInput(kms_key_id=arn, kms_client=client))


def test_kms_required_context_both_ways(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key()
    theirs, _ = ESDK.encrypt(source=PLAINTEXT, materials_manager=required_cmm(mpl_kms(arn, aws_env)),
                             encryption_context=CONTEXT)
    keyring = envelope.KmsKeyring(arn)
    assert envelope.decrypt(theirs, keyring=keyring, reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT
    with pytest.raises(envelope.AuthenticationError, match="'tenant'") as info:  # KMS: InvalidCiphertextException
        envelope.decrypt(theirs, keyring=keyring, reproduced_context={"tenant": "other"})
    assert arn in str(info.value)

    ours = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT, required_context_keys=REQUIRED)
    assert "tenant" not in stored(ours)
    plaintext, _ = ESDK.decrypt(source=ours, materials_manager=required_cmm(mpl_kms(arn, aws_env)),
                                encryption_context={"tenant": "acme"})
    assert plaintext == PLAINTEXT
    with pytest.raises(aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError):
        ESDK.decrypt(source=ours, materials_manager=required_cmm(mpl_kms(arn, aws_env)),
                     encryption_context={"tenant": "other"})


def test_kms_rewrap_uses_encrypt_for_the_existing_data_key(aws_env: AwsEnv) -> None:
    old_arn, new_arn = aws_env.create_key(), aws_env.create_key()
    message, _ = ESDK.encrypt(source=PLAINTEXT, materials_manager=required_cmm(mpl_kms(old_arn, aws_env)),
                              encryption_context=CONTEXT)
    out = io.BytesIO()
    envelope.rewrap_stream(io.BytesIO(message), out, old=envelope.KmsKeyring(old_arn),
                           new=envelope.KmsKeyring(new_arn), reproduced_context={"tenant": "acme"})
    header = envelope.read_header(io.BytesIO(out.getvalue()))[0]
    assert [e.provider_info.decode() for e in header.encrypted_data_keys] == [new_arn]
    plaintext, _ = ESDK.decrypt(source=out.getvalue(), materials_manager=required_cmm(mpl_kms(new_arn, aws_env)),
                                encryption_context={"tenant": "acme"})
    assert plaintext == PLAINTEXT
