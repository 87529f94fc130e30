"""envelope.decrypt_range with an S3 object as the source (ranged GETs over real HTTP against moto_server), and
with an S3 object as the destination.

By design the range is authenticated, not the whole message: frames outside it are not fetched at all.
"""

from __future__ import annotations

import io
import os

import pytest
from aws_fixtures import SMALL_PART_SIZE, AwsEnv
from aws_fixtures import TEST_BUCKET as BUCKET

import envelope
import envelope.s3 as s3
from testkit.messages import flip_bit

F = 4096
R = F + 32


@pytest.fixture
def env(s3_env: AwsEnv) -> AwsEnv:
    return s3_env


@pytest.fixture
def keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("ns", "s3-range", os.urandom(32))


@pytest.fixture
def stored(env: AwsEnv, keyring: envelope.Keyring) -> tuple[bytes, bytes]:
    plaintext = os.urandom(200 * F + 77)
    message = envelope.encrypt(plaintext, keyring=keyring, frame_length=F)
    env.s3().put_object(Bucket=BUCKET, Key="big.enc", Body=message)
    return plaintext, message


def _header_length(message: bytes) -> int:
    header, auth, _ = envelope.read_header(io.BytesIO(message))
    return len(header.raw) + len(auth.tag)


def test_ranges_from_s3_match_slices(env: AwsEnv, keyring: envelope.Keyring, stored: tuple[bytes, bytes]) -> None:
    plaintext, _ = stored
    size = len(plaintext)
    client = s3.new_client()
    for start, end in [(0, 0), (5, 4000), (F - 1, F), (99 * F + 5, 120 * F), (200 * F, None), (200 * F + 76, None),
                       (size // 2, None), (0, None), (3, size + 10**6), (size - 1, size - 1)]:
        with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader:
            out = io.BytesIO()
            envelope.decrypt_range(reader, out, start, end, keyring=keyring)
        assert out.getvalue() == plaintext[start:None if end is None else end + 1], (start, end)
    with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader:
        with pytest.raises(envelope.UsageError, match="past the end"):
            envelope.decrypt_range(reader, io.BytesIO(), size, None, keyring=keyring)


def test_a_range_fetches_only_its_frames(env: AwsEnv, keyring: envelope.Keyring,
                                         stored: tuple[bytes, bytes]) -> None:
    """A 1,000-byte range across two frames in the middle: the header's first GET and one GET of exactly
    those two frames; an open-ended range adds one GET for the final frame (its length)."""
    plaintext, message = stored
    h = _header_length(message)
    with s3.S3Reader(f"s3://{BUCKET}/big.enc") as reader:
        out = io.BytesIO()
        envelope.decrypt_range(reader, out, 100 * F - 500, 100 * F + 499, keyring=keyring)
        assert out.getvalue() == plaintext[100 * F - 500:100 * F + 500]
        assert reader.requests == 2
        assert reader.bytes_fetched == 4096 + 2 * R
    assert h < 4096
    with s3.S3Reader(f"s3://{BUCKET}/big.enc") as reader:
        out = io.BytesIO()
        envelope.decrypt_range(reader, out, 150 * F, None, keyring=keyring)
        assert out.getvalue() == plaintext[150 * F:]
        assert reader.requests == 3
        assert reader.bytes_fetched == 4096 + 50 * R + (40 + 77)
    assert reader.bytes_fetched < len(message) / 3


def test_tampered_frame_on_s3(env: AwsEnv, keyring: envelope.Keyring, stored: tuple[bytes, bytes]) -> None:
    plaintext, message = stored
    h = _header_length(message)
    env.s3().put_object(Bucket=BUCKET, Key="bad.enc", Body=flip_bit(message, 8 * (h + 50 * R + 100)))
    with s3.S3Reader(f"s3://{BUCKET}/bad.enc") as reader:
        out = io.BytesIO()
        with pytest.raises(envelope.AuthenticationError, match="frame 51"):
            envelope.decrypt_range(reader, out, 50 * F, 50 * F + 10, keyring=keyring)
        assert out.getvalue() == b""
        # by design: a range without frame 51 is authenticated on its own and succeeds
        out = io.BytesIO()
        envelope.decrypt_range(reader, out, 52 * F, 53 * F, keyring=keyring)
        assert out.getvalue() == plaintext[52 * F:53 * F + 1]


def test_range_into_an_s3_object(env: AwsEnv, keyring: envelope.Keyring, stored: tuple[bytes, bytes]) -> None:
    """The range as a new object, committed after the range verified; a tampered range leaves nothing."""
    plaintext, message = stored
    client = s3.new_client()
    with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader, \
            s3.S3Writer(f"s3://{BUCKET}/slice", client=client, part_size=SMALL_PART_SIZE) as writer:
        envelope.decrypt_range(reader, writer, 10, 100 * F, keyring=keyring)
        writer.commit()
    assert env.s3().get_object(Bucket=BUCKET, Key="slice")["Body"].read() == plaintext[10:100 * F + 1]

    h = _header_length(message)
    env.s3().put_object(Bucket=BUCKET, Key="bad.enc", Body=flip_bit(message, 8 * (h + 90 * R + 100)))
    with pytest.raises(envelope.AuthenticationError):
        with s3.S3Reader(f"s3://{BUCKET}/bad.enc", client=client) as reader, \
                s3.S3Writer(f"s3://{BUCKET}/bad-slice", client=client, part_size=SMALL_PART_SIZE) as writer:
            envelope.decrypt_range(reader, writer, 10, 100 * F, keyring=keyring)
            writer.commit()
    assert "bad-slice" not in env.object_keys(BUCKET)
    assert env.pending_uploads(BUCKET) == []


def test_signed_object_range_is_refused(env: AwsEnv, keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(os.urandom(3 * F), keyring=keyring, algorithm=0x0578, frame_length=F)
    env.s3().put_object(Bucket=BUCKET, Key="signed.enc", Body=message)
    with s3.S3Reader(f"s3://{BUCKET}/signed.enc") as reader:
        with pytest.raises(envelope.PolicyError, match="signed suite 0x0578"):
            envelope.decrypt_range(reader, io.BytesIO(), 0, 10, keyring=keyring)
        assert reader.requests == 1  # the header, nothing more
