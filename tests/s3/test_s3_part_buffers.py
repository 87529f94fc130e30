"""S3Writer reuses its part buffers (at most PART_BUFFERS of them): a buffer is refilled only after its UploadPart
returned, botocore's retries included, so a part sent again after a fault carries the bytes it was first sent
with. Round trips at part boundaries through the fault proxy, whose answers make botocore send parts again."""

from __future__ import annotations

import base64
import io
import os
import zlib

import pytest
from aws_fixtures import SMALL_PART_SIZE, AwsEnv, FaultProxy
from aws_fixtures import TEST_BUCKET as BUCKET

import envelope
import envelope.s3 as s3

PART = SMALL_PART_SIZE


def _stored(env: AwsEnv, key: str) -> bytes:
    return bytes(env.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.mark.parametrize("size", [3 * PART - 1, 3 * PART, 3 * PART + 1, 7 * PART + 5])
@pytest.mark.parametrize("chunk", [1000, PART + 3, None], ids=["1000", "part+3", "one-write"])
def test_retried_parts_carry_their_own_bytes(s3_env: AwsEnv, s3_proxy: FaultProxy, fast_throttle_backoff: None,
                                             size: int, chunk: int | None) -> None:
    """Throttled UploadParts are sent again while later parts are written: the object is exactly what was
    written, in ceil(size / PART) parts, from no more than PART_BUFFERS part buffers."""
    data = os.urandom(size)
    s3_proxy.fail("UploadPart", 4, status=503, code="SlowDown")
    writer = s3.S3Writer(f"s3://{BUCKET}/reuse.bin", part_size=PART)
    step = chunk or size
    for at in range(0, size, step):
        writer.write(data[at:at + step])
    written = writer.commit()
    assert s3_proxy.failed["UploadPart"] == 4  # every fault was answered, and its part sent again
    assert written.parts == -(-size // PART)
    assert writer._buffers <= s3.PART_BUFFERS  # the memory bound: buffers are reused, not made per part
    assert _stored(s3_env, "reuse.bin") == data
    assert s3_env.pending_uploads(BUCKET) == []


def test_encrypt_object_with_retried_parts_decrypts(s3_env: AwsEnv, s3_proxy: FaultProxy,
                                                    fast_throttle_backoff: None) -> None:
    """The whole path: the engine's 4 MiB batches land across many reused part buffers while parts are retried."""
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    plaintext = os.urandom(20 * PART + 123)
    s3_proxy.fail("UploadPart", 6, status=503, code="SlowDown")
    s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/reuse.enc", keyring=keyring, part_size=PART)
    assert s3_proxy.failed["UploadPart"] == 6
    assert envelope.decrypt(_stored(s3_env, "reuse.enc"), keyring=keyring).plaintext == plaintext
    assert s3_env.pending_uploads(BUCKET) == []


def test_parts_declare_their_checksum(s3_env: AwsEnv) -> None:
    """CreateMultipartUpload declares CRC32, the checksum botocore sends with every part, so S3 keeps a composite
    of the parts' checksums (not a full-object checksum it computes itself)."""
    data = os.urandom(2 * PART + 1)
    with s3.S3Writer(f"s3://{BUCKET}/sum.bin", part_size=PART) as writer:
        writer.write(data)
        writer.commit()
    head = s3_env.s3().head_object(Bucket=BUCKET, Key="sum.bin", ChecksumMode="ENABLED")
    parts = [data[at:at + PART] for at in range(0, len(data), PART)]
    composite = zlib.crc32(b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)).to_bytes(4, "big")
    assert head.get("ChecksumCRC32") == base64.b64encode(composite).decode()  # S3 adds "-3"; moto does not
    assert "ChecksumCRC64NVME" not in head
    assert _stored(s3_env, "sum.bin") == data
