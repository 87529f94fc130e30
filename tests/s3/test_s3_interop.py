"""Interop through S3: messages written by aws-encryption-sdk, uploaded with plain boto3, decrypt from S3 with
envelope (whole and by range); messages envelope writes to S3 decrypt with aws-encryption-sdk."""

from __future__ import annotations

import io
import os

import aws_encryption_sdk
import pytest
from aws_fixtures import SMALL_PART_SIZE, AwsEnv
from aws_fixtures import TEST_BUCKET as BUCKET
from helpers import esdk_aes_key, esdk_client, esdk_encrypt

import envelope
import envelope.s3 as s3

CONTEXT = {"app": "interop", "store": "s3"}


@pytest.fixture
def env(s3_env: AwsEnv) -> AwsEnv:
    return s3_env


@pytest.mark.parametrize("frame", [4096, 1024])
def test_esdk_message_from_s3_whole_and_by_range(env: AwsEnv, frame: int) -> None:
    key = os.urandom(32)
    plaintext = os.urandom(60 * frame + 123)
    message = esdk_encrypt(plaintext, esdk_aes_key("interop", "k1", key), 0x0478, context=CONTEXT,
                           frame_length=frame)
    env.s3().upload_fileobj(io.BytesIO(message), BUCKET, "esdk.enc")  # boto3's own transfer
    keyring = envelope.RawAesKeyring("interop", "k1", key)

    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/esdk.enc", out, keyring=keyring, required_context=CONTEXT)
    assert out.getvalue() == plaintext
    s3.decrypt_object(f"s3://{BUCKET}/esdk.enc", f"s3://{BUCKET}/esdk.plain", keyring=keyring,
                      part_size=SMALL_PART_SIZE)
    assert env.s3().get_object(Bucket=BUCKET, Key="esdk.plain")["Body"].read() == plaintext

    for start, end in [(0, 10), (frame - 3, 2 * frame + 3), (30 * frame, None), (60 * frame + 100, 10**9)]:
        with s3.S3Reader(f"s3://{BUCKET}/esdk.enc") as reader:
            out = io.BytesIO()
            envelope.decrypt_range(reader, out, start, end, keyring=keyring, required_context=CONTEXT)
        assert out.getvalue() == plaintext[start:None if end is None else end + 1]


def test_esdk_signed_message_from_s3(env: AwsEnv) -> None:
    """Signed (the ESDK's default suite 0x0578): whole-message decrypt from S3 works; a range is refused."""
    key = os.urandom(32)
    plaintext = os.urandom(50_000)
    message = esdk_encrypt(plaintext, esdk_aes_key("interop", "k1", key), 0x0578, context=CONTEXT,
                           frame_length=4096)
    env.s3().put_object(Bucket=BUCKET, Key="signed.enc", Body=message)
    keyring = envelope.RawAesKeyring("interop", "k1", key)
    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/signed.enc", out, keyring=keyring)
    assert out.getvalue() == plaintext
    with s3.S3Reader(f"s3://{BUCKET}/signed.enc") as reader, pytest.raises(envelope.PolicyError, match="signed"):
        envelope.decrypt_range(reader, io.BytesIO(), 0, 10, keyring=keyring)


def test_esdk_kms_message_from_s3(env: AwsEnv) -> None:
    arn = env.create_key(alias="alias/s3-interop")
    plaintext = os.urandom(3 * SMALL_PART_SIZE)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn])
    message, _ = esdk_client("require-encrypt-require-decrypt").encrypt(
        source=plaintext, key_provider=provider, encryption_context=CONTEXT,
        algorithm=aws_encryption_sdk.Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, frame_length=4096)
    env.s3().put_object(Bucket=BUCKET, Key="kms.enc", Body=message)
    keyring = envelope.KmsKeyring(arn)
    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/kms.enc", out, keyring=keyring)
    assert out.getvalue() == plaintext
    with s3.S3Reader(f"s3://{BUCKET}/kms.enc") as reader:
        out = io.BytesIO()
        envelope.decrypt_range(reader, out, 5000, 9000, keyring=keyring)
    assert out.getvalue() == plaintext[5000:9001]


def test_envelope_writes_to_s3_esdk_reads(env: AwsEnv) -> None:
    key = os.urandom(32)
    plaintext = os.urandom(4 * SMALL_PART_SIZE + 1)
    keyring = envelope.RawAesKeyring("interop", "k1", key)
    for suite in (0x0478, 0x0578):
        s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/env-{suite:x}.enc", keyring=keyring,
                          context=CONTEXT, algorithm=suite, frame_length=4096, part_size=SMALL_PART_SIZE)
        stored = env.s3().get_object(Bucket=BUCKET, Key=f"env-{suite:x}.enc")["Body"].read()
        decrypted, header = esdk_client().decrypt(source=stored, key_provider=esdk_aes_key("interop", "k1", key))
        assert decrypted == plaintext
        assert {k: header.encryption_context[k] for k in CONTEXT} == CONTEXT
