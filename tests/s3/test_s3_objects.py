"""envelope.s3 over real HTTP against moto_server: round trips, the reader, the lister, conditional writes, errors.

Most tests use ``s3_small_parts`` (a moto_server that accepts parts of SMALL_PART_SIZE), with the library's
5 MiB floor lowered to match, so that part boundaries cost kilobytes; ``test_real_minimum_part_size`` runs on
the default server, which enforces S3's 5 MiB minimum (EntityTooSmall at CompleteMultipartUpload).
"""

from __future__ import annotations

import io
import os

import pytest
from aws_fixtures import SMALL_PART_SIZE, AwsEnv, FaultProxy, refused_endpoint
from aws_fixtures import TEST_BUCKET as BUCKET

import envelope
import envelope.s3 as s3

PART = SMALL_PART_SIZE
FRAME = 4096


@pytest.fixture
def small(s3_env: AwsEnv) -> AwsEnv:
    return s3_env


@pytest.fixture
def client(small: AwsEnv) -> object:
    return s3.new_client()


def _get(env: AwsEnv, key: str) -> bytes:
    return bytes(env.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _parts_of(env: AwsEnv, key: str) -> int:
    """Parts of the object from its ETag: "<md5>-N" after a multipart upload, a plain MD5 after PutObject."""
    etag = env.s3().head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    return int(etag.rpartition("-")[2]) if "-" in etag else 0


def _expected_parts(size: int) -> int:
    return 0 if size <= PART else -(-size // PART)


SIZES = [0, 1, PART - 1, PART, PART + 1, 3 * PART + 17]


@pytest.mark.parametrize("key_kind", ["local", "kms"])
@pytest.mark.parametrize("plain_size", SIZES)
def test_round_trip_around_part_boundaries(small: AwsEnv, client: object, key_kind: str, plain_size: int) -> None:
    """Encrypt a file to S3, decrypt S3 to a file and S3 to S3; the message sizes put the ciphertext and the
    plaintext objects on both sides of every part boundary."""
    keyring: envelope.Keyring = (envelope.RawAesKeyring("ns", "k", os.urandom(32)) if key_kind == "local"
                                 else envelope.KmsKeyring([small.create_key(alias="alias/s3-test")]))
    plaintext = os.urandom(plain_size)
    result = s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/data.enc", keyring=keyring,
                               context={"purpose": "test"}, frame_length=FRAME, part_size=PART, client=client)
    stored = _get(small, "data.enc")
    assert result.bytes_written == len(stored)
    assert _parts_of(small, "data.enc") == _expected_parts(len(stored))
    assert envelope.decrypt(stored, keyring=keyring).plaintext == plaintext  # the object is one whole message

    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/data.enc", out, keyring=keyring, required_context={"purpose": "test"},
                      client=client)
    assert out.getvalue() == plaintext

    s3.decrypt_object(f"s3://{BUCKET}/data.enc", f"s3://{BUCKET}/plain/data", keyring=keyring, part_size=PART,
                      client=client)
    assert _get(small, "plain/data") == plaintext
    assert _parts_of(small, "plain/data") == _expected_parts(plain_size)
    assert small.pending_uploads(BUCKET) == []


def test_required_context_keys_to_and_from_s3(small: AwsEnv, client: object) -> None:
    """encrypt_object's required_context_keys keeps those pairs out of the stored header; decrypt_object needs
    them back through reproduced_context, and a wrong value leaves no object and no pending upload."""
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    plaintext = os.urandom(3 * PART + 5)
    s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/req.enc", keyring=keyring,
                      context={"app": "web", "tenant": "acme"}, required_context_keys=["tenant"],
                      frame_length=FRAME, part_size=PART, client=client)
    stored = _get(small, "req.enc")
    assert dict(envelope.read_header(io.BytesIO(stored))[0].encryption_context) == {"app": "web"}
    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/req.enc", out, keyring=keyring, reproduced_context={"tenant": "acme"},
                      client=client)
    assert out.getvalue() == plaintext
    # a wrong value: the message does not authenticate with it; none: no key opens (the hint names the option)
    for reproduced, error in (({"tenant": "other"}, envelope.AuthenticationError), (None, envelope.KeyringError)):
        with pytest.raises(error, match="reproduced"):
            s3.decrypt_object(f"s3://{BUCKET}/req.enc", f"s3://{BUCKET}/req.plain", keyring=keyring,
                              reproduced_context=reproduced, part_size=PART, client=client)
        assert "Contents" not in small.s3().list_objects_v2(Bucket=BUCKET, Prefix="req.plain")
        assert small.pending_uploads(BUCKET) == []


def test_writer_sends_full_parts_and_a_short_last_one(small: AwsEnv, client: object) -> None:
    """Writes of every size are regrouped into parts of exactly part_size (the last one shorter)."""
    data = os.urandom(4 * PART + 123)
    with s3.S3Writer(f"s3://{BUCKET}/odd-writes", client=client, part_size=PART) as writer:
        pos = 0
        for step in [1, 7, PART - 8, PART, 3, 2 * PART + 100, 10**6]:
            writer.write(data[pos:pos + step])
            pos += step
        written = writer.commit()
    assert written.parts == 5
    assert written.size == len(data)
    assert _get(small, "odd-writes") == data
    assert writer.closed


def test_real_minimum_part_size(aws_env: AwsEnv) -> None:
    """On a server with S3's real 5 MiB minimum: moto refuses a non-last part below it (proving it checks), and
    the writer's parts of exactly 5 MiB complete."""
    aws_env.create_bucket(BUCKET)
    setup = aws_env.s3()
    upload = setup.create_multipart_upload(Bucket=BUCKET, Key="too-small")["UploadId"]
    parts = [{"PartNumber": n, "ETag": setup.upload_part(Bucket=BUCKET, Key="too-small", UploadId=upload,
                                                          PartNumber=n, Body=b"x" * (1024 * 1024))["ETag"]}
             for n in (1, 2)]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="EntityTooSmall"):
        setup.complete_multipart_upload(Bucket=BUCKET, Key="too-small", UploadId=upload,
                                        MultipartUpload={"Parts": parts})
    setup.abort_multipart_upload(Bucket=BUCKET, Key="too-small", UploadId=upload)

    with pytest.raises(envelope.UsageError, match="part size"):
        s3.S3Writer(f"s3://{BUCKET}/x", part_size=s3.MIN_PART_SIZE - 1)
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    plaintext = os.urandom(2 * s3.MIN_PART_SIZE + 1000)
    s3.encrypt_object(io.BytesIO(plaintext), f"s3://{BUCKET}/real.enc", keyring=keyring,
                      part_size=s3.MIN_PART_SIZE)
    etag = setup.head_object(Bucket=BUCKET, Key="real.enc")["ETag"]
    assert etag.strip('"').endswith("-3")
    out = io.BytesIO()
    s3.decrypt_object(f"s3://{BUCKET}/real.enc", out, keyring=keyring)
    assert out.getvalue() == plaintext
    assert aws_env.pending_uploads(BUCKET) == []


# ---------------------------------------------------------------------------------------------------------
# conditional writes


def test_existing_object_is_not_replaced_without_force(small: AwsEnv, client: object) -> None:
    small.s3().put_object(Bucket=BUCKET, Key="exists", Body=b"original")
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    with pytest.raises(envelope.StorageError, match=f"s3://{BUCKET}/exists: the object exists already") as info:
        s3.encrypt_object(io.BytesIO(b"new"), f"s3://{BUCKET}/exists", keyring=keyring, client=client)
    assert info.value.code == "PreconditionFailed"
    assert info.value.location == f"s3://{BUCKET}/exists"
    assert _get(small, "exists") == b"original"
    s3.encrypt_object(io.BytesIO(b"new"), f"s3://{BUCKET}/exists", keyring=keyring, client=client, force=True)
    assert envelope.decrypt(_get(small, "exists"), keyring=keyring).plaintext == b"new"


@pytest.mark.parametrize("size", [10, 3 * PART], ids=["put-object", "multipart"])
def test_object_created_meanwhile_is_not_replaced(small: AwsEnv, client: object, size: int) -> None:
    """The early HEAD passed; someone else creates the key before commit: the conditional write
    (If-None-Match: *) refuses, and the upload is aborted. moto answers 412 PreconditionFailed on PutObject and
    on CompleteMultipartUpload (as S3 does), and keeps the multipart upload pending until it is aborted."""
    writer = s3.S3Writer(f"s3://{BUCKET}/race", client=client, part_size=PART)
    writer.write(os.urandom(size))
    small.s3().put_object(Bucket=BUCKET, Key="race", Body=b"theirs")
    with pytest.raises(envelope.StorageError, match="exists already") as info:
        writer.commit()
    assert info.value.code == "PreconditionFailed"
    assert _get(small, "race") == b"theirs"
    assert small.pending_uploads(BUCKET) == []
    assert writer.closed


def test_writer_needs_commit(small: AwsEnv, client: object) -> None:
    with pytest.raises(envelope.UsageError, match="without commit"):
        with s3.S3Writer(f"s3://{BUCKET}/uncommitted", client=client, part_size=PART) as writer:
            writer.write(os.urandom(3 * PART))
    assert small.object_keys(BUCKET) == []
    assert small.pending_uploads(BUCKET) == []
    with pytest.raises(envelope.StorageError, match="aborted"):
        writer.write(b"more")


def test_extra_args_reach_s3(small: AwsEnv, client: object) -> None:
    for size, key in ((10, "small"), (2 * PART + 1, "large")):
        with s3.S3Writer(f"s3://{BUCKET}/{key}", client=client, part_size=PART,
                         extra_args={"ContentType": "application/x-esdk", "Metadata": {"origin": "test"}}) as w:
            w.write(os.urandom(size))
            w.commit()
        head = small.s3().head_object(Bucket=BUCKET, Key=key)
        assert head["ContentType"] == "application/x-esdk"
        assert head["Metadata"] == {"origin": "test"}
    with pytest.raises(envelope.UsageError, match="SSECustomerKey"):
        s3.S3Writer(f"s3://{BUCKET}/k", client=client, extra_args={"SSECustomerKey": "x"})


# ---------------------------------------------------------------------------------------------------------
# the reader


def test_reader_is_a_seekable_file(small: AwsEnv, client: object) -> None:
    data = os.urandom(300_000)
    small.s3().put_object(Bucket=BUCKET, Key="blob", Body=data)
    with s3.S3Reader(f"s3://{BUCKET}/blob", client=client) as reader:
        assert reader.readable() and reader.seekable() and not reader.writable()
        assert reader.read(10) == data[:10]
        assert reader.tell() == 10
        assert reader.size == len(data)
        assert reader.seek(-5, io.SEEK_END) == len(data) - 5
        assert reader.read() == data[-5:]
        assert reader.read(1) == b""
        reader.seek(1000)
        buf = bytearray(5000)
        assert reader.readinto(buf) == 5000 and bytes(buf) == data[1000:6000]
        # read-ahead: the second of two sequential reads opens a GET twice as large, so a short forward seek
        # lands inside it and is read through without a new request
        reader.seek(0)
        assert reader.read(1000) == data[:1000]
        assert reader.read(1000) == data[1000:2000]
        before = reader.requests
        reader.seek(2500)
        assert reader.read(300) == data[2500:2800]
        assert reader.requests == before
        reader.seek(len(data) + 10)
        assert reader.read(10) == b""
        reader.seek(0)
        assert reader.read() == data
    assert reader.closed
    with pytest.raises(ValueError):
        reader.read(1)


def test_reader_fetches_only_what_is_read(small: AwsEnv, client: object) -> None:
    """read_header on a large object fetches only the header's first read (no full download), and a
    sequential read grows its GETs (read-ahead) instead of one request per buffer."""
    keyring = envelope.RawAesKeyring("ns", "k", os.urandom(32))
    message = envelope.encrypt(os.urandom(2_000_000), keyring=keyring, frame_length=FRAME)
    small.s3().put_object(Bucket=BUCKET, Key="big.enc", Body=message)
    with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader:
        header, _, _ = envelope.read_header(reader)
        assert header.frame_length == FRAME
        assert reader.requests == 1
        assert reader.bytes_fetched <= 4096
        assert reader.size == len(message)
    with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader:
        assert reader.size == len(message)  # the size first: the GET it opens serves the header's read
        envelope.read_header(reader)
        assert (reader.requests, reader.bytes_fetched) == (1, 4096)
    with s3.S3Reader(f"s3://{BUCKET}/big.enc", client=client) as reader:
        out = io.BytesIO()
        envelope.decrypt_stream(reader, out, keyring=keyring)
        assert len(out.getvalue()) == 2_000_000
        assert reader.bytes_fetched == len(message)
        assert reader.requests <= 4


def test_reader_refuses_an_object_replaced_while_reading(small: AwsEnv, client: object) -> None:
    small.s3().put_object(Bucket=BUCKET, Key="moving", Body=os.urandom(100_000))
    with s3.S3Reader(f"s3://{BUCKET}/moving", client=client) as reader:
        reader.read(1000)
        small.s3().put_object(Bucket=BUCKET, Key="moving", Body=os.urandom(100_000))
        reader.seek(50_000)
        with pytest.raises(envelope.StorageError, match="changed while it was being read"):
            reader.read(1000)


def test_reader_of_an_empty_object(small: AwsEnv, client: object) -> None:
    small.s3().put_object(Bucket=BUCKET, Key="empty", Body=b"")
    with s3.S3Reader(f"s3://{BUCKET}/empty", client=client) as reader:
        assert reader.read(100) == b""
        assert reader.size == 0
        with pytest.raises(envelope.FormatError, match="empty"):
            envelope.decrypt_stream(reader, io.BytesIO(), keyring=envelope.RawAesKeyring("n", "k", bytes(32)))


# ---------------------------------------------------------------------------------------------------------
# listing


def test_list_objects_pages_and_relative_keys(small: AwsEnv, client: object) -> None:
    setup = small.s3()
    keys = ["in/a", "in/b/c", "in/b/d", "in/e/", "in/f", "inner", "other/x"]
    for i, key in enumerate(keys):
        setup.put_object(Bucket=BUCKET, Key=key, Body=b"x" * i)
    for prefix in (f"s3://{BUCKET}/in/", f"s3://{BUCKET}/in"):
        found = list(s3.list_objects(prefix, client=client, page_size=2))
        assert [(o.relative, o.size) for o in found] == [("a", 0), ("b/c", 1), ("b/d", 2), ("f", 4)]
        assert str(found[0].url) == f"s3://{BUCKET}/in/a"
        assert found[1].relative_parts == ("b", "c")
    assert len(list(s3.list_objects(f"s3://{BUCKET}", client=client))) == len(keys) - 1
    assert list(s3.list_objects(f"s3://{BUCKET}/nothing/", client=client)) == []


def test_relative_parts_refuses_unsafe_keys() -> None:
    for relative in ("../x", "a/../../b", "a//b", "./a", "a\\b"):
        obj = s3.S3Object(s3.S3Url("b", "p/" + relative), 1, relative)
        with pytest.raises(envelope.UsageError, match="local path"):
            obj.relative_parts


# ---------------------------------------------------------------------------------------------------------
# errors: one line naming the s3:// URL


def test_missing_bucket_and_key(small: AwsEnv, client: object) -> None:
    with pytest.raises(envelope.StorageError, match=f"cannot read s3://{BUCKET}/nope: no such object") as info:
        s3.S3Reader(f"s3://{BUCKET}/nope", client=client).read(10)
    assert info.value.code == "NoSuchKey"
    with pytest.raises(envelope.StorageError, match="no such object") as info:
        s3.S3Reader(f"s3://{BUCKET}/nope", client=client).size
    assert info.value.code == "NoSuchKey"  # a GET, not a HEAD: its answer tells a key from a bucket
    with pytest.raises(envelope.StorageError, match="s3://no-such-bucket/k: the bucket does not exist"):
        s3.S3Reader("s3://no-such-bucket/k", client=client).read(10)
    with pytest.raises(envelope.StorageError, match="s3://no-such-bucket/k: the bucket does not exist"):
        s3.encrypt_object(io.BytesIO(b"x"), "s3://no-such-bucket/k", client=client,
                          keyring=envelope.RawAesKeyring("n", "k", bytes(32)))
    with pytest.raises(envelope.StorageError, match="cannot list s3://no-such-bucket/p/"):
        list(s3.list_objects("s3://no-such-bucket/p/", client=client))


def test_unreachable_endpoint(small: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", refused_endpoint())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(envelope.StorageError, match=rf"cannot read s3://{BUCKET}/k: could not reach S3 at "
                                                    r"http://127\.0\.0\.1:\d+") as info:
        s3.S3Reader(f"s3://{BUCKET}/k").read(1)
    assert info.value.code == "EndpointUnreachable"


def test_access_denied_and_throttling(small: AwsEnv, s3_proxy: FaultProxy, fast_throttle_backoff: None) -> None:
    proxy = s3_proxy
    small.s3().put_object(Bucket=BUCKET, Key="k", Body=b"data")
    proxy.fail("GetObject", None, status=403, code="AccessDenied")
    with pytest.raises(envelope.StorageError, match=f"cannot read s3://{BUCKET}/k: access denied") as info:
        s3.S3Reader(f"s3://{BUCKET}/k").read(4)
    assert info.value.code == "AccessDenied"
    proxy.fail("GetObject", 0)
    proxy.throttle_share = 1.0
    with pytest.raises(envelope.StorageError, match=f"s3://{BUCKET}/k: S3 throttled GetObject after 5 attempts"):
        s3.S3Reader(f"s3://{BUCKET}/k").read(4)
    assert proxy.throttled["GetObject"] == 5
    proxy.throttle_share = 0.5  # every second request: retried and read
    assert s3.S3Reader(f"s3://{BUCKET}/k").read(4) == b"data"
