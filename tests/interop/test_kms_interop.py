"""Interop with aws-encryption-sdk's KMS master key providers against the same moto_server, both directions."""

from __future__ import annotations

import io

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_fixtures import ACCOUNT, REGION, AwsEnv

import envelope

OTHER_REGION = "eu-west-1"
PLAINTEXT = b"interop across implementations\n" * 300
CONTEXT = {"app": "billing", "purpose": "interop"}


def esdk_client() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def esdk_strict(*key_ids: str) -> aws_encryption_sdk.StrictAwsKmsMasterKeyProvider:
    # made inside the test, after aws_env has pointed AWS_ENDPOINT_URL_KMS at moto
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=list(key_ids))


@pytest.mark.parametrize("algorithm", [None, aws_encryption_sdk.Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY])
def test_esdk_encrypts_envelope_decrypts(aws_env: AwsEnv, algorithm: object) -> None:
    arn = aws_env.create_key(alias="alias/interop")
    kwargs = {"algorithm": algorithm} if algorithm is not None else {}
    message, _ = esdk_client().encrypt(source=PLAINTEXT, key_provider=esdk_strict(arn), encryption_context=CONTEXT,
                                       **kwargs)
    for keyring in (envelope.KmsKeyring(arn), envelope.KmsKeyring("alias/interop"),
                    envelope.KmsKeyring(arn.rsplit("/", 1)[1]), envelope.KmsDiscoveryKeyring(),
                    envelope.KmsDiscoveryKeyring(discovery_filter=envelope.DiscoveryFilter("aws", [ACCOUNT]))):
        result = envelope.decrypt(message, keyring=keyring, required_context=CONTEXT)
        assert result.plaintext == PLAINTEXT


def test_envelope_encrypts_esdk_decrypts(aws_env: AwsEnv) -> None:
    arn = aws_env.create_key(alias="alias/interop")
    for algorithm in (None, 0x0478):
        message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring("alias/interop"), context=CONTEXT,
                                   algorithm=algorithm)
        plaintext, header = esdk_client().decrypt(source=message, key_provider=esdk_strict(arn))
        assert plaintext == PLAINTEXT
        assert {k: header.encryption_context[k] for k in CONTEXT} == CONTEXT
        discovery = aws_encryption_sdk.DiscoveryAwsKmsMasterKeyProvider()
        assert esdk_client().decrypt(source=message, key_provider=discovery)[0] == PLAINTEXT


def test_two_key_messages_both_ways(aws_env: AwsEnv) -> None:
    east, west = aws_env.create_key(REGION), aws_env.create_key(OTHER_REGION)

    # ESDK writes under two keys in two regions; envelope opens it with either key alone
    esdk_message, _ = esdk_client().encrypt(source=PLAINTEXT, key_provider=esdk_strict(east, west),
                                            encryption_context=CONTEXT)
    for arn in (east, west):
        assert envelope.decrypt(esdk_message, keyring=envelope.KmsKeyring(arn)).plaintext == PLAINTEXT

    # envelope writes under two keys; the ESDK opens it with either key alone
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring([east, west]), context=CONTEXT)
    header, _, _ = envelope.read_header(io.BytesIO(message))
    assert [e.provider_info.decode() for e in header.encrypted_data_keys] == [east, west]
    for arn in (east, west):
        assert esdk_client().decrypt(source=message, key_provider=esdk_strict(arn))[0] == PLAINTEXT


def test_esdk_refuses_what_envelope_refuses(aws_env: AwsEnv) -> None:
    arn, other = aws_env.create_key(), aws_env.create_key()
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn), context=CONTEXT)
    with pytest.raises(aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError):
        esdk_client().decrypt(source=message, key_provider=esdk_strict(other))
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt(message, keyring=envelope.KmsKeyring(other))
