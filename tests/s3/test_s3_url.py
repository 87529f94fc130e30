"""s3:// URLs: parsing, prefixes, and argument checks that fail before any request (no AWS needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import envelope
import envelope.s3 as s3


@pytest.mark.parametrize(("text", "bucket", "key", "prefix"), [
    ("s3://bucket/key", "bucket", "key", False),
    ("s3://my.bucket-1/a/b/c.txt", "my.bucket-1", "a/b/c.txt", False),
    ("s3://bucket/dir/", "bucket", "dir/", True),
    ("s3://bucket", "bucket", "", True),
    ("s3://bucket/", "bucket", "", True),
    ("S3://Legacy_Bucket/k?x#y", "Legacy_Bucket", "k?x#y", False),  # the key is literal: ? and # belong to it
    ("s3://bucket/a b/ü.txt", "bucket", "a b/ü.txt", False),
    ("s3://bucket//k", "bucket", "/k", False),
])
def test_parse(text: str, bucket: str, key: str, prefix: bool) -> None:
    url = s3.parse_s3_url(text)
    assert (url.bucket, url.key, url.is_prefix) == (bucket, key, prefix)
    assert s3.is_s3_url(text)
    assert s3.parse_s3_url(url) is url


@pytest.mark.parametrize(("text", "why"), [
    ("s3:/bucket/key", "expected s3://BUCKET/KEY"),
    ("https://bucket/key", "expected s3://BUCKET/KEY"),
    ("s3://", "no bucket name"),
    ("s3:///key", "no bucket name"),
    ("s3://ab/key", "not a valid bucket name"),
    ("s3://-bucket/key", "not a valid bucket name"),
    ("s3://bu..cket/key", "not a valid bucket name"),
    ("s3://bucket name/key", "not a valid bucket name"),
    ("s3://bucket/line\nbreak", "control characters"),
    ("s3://bucket/" + "k" * 1025, "longer than 1024 bytes"),
    ("s3://bucket/" + "é" * 513, "longer than 1024 bytes"),
])
def test_malformed_urls_are_usage_errors(text: str, why: str) -> None:
    with pytest.raises(envelope.UsageError, match=why):
        s3.parse_s3_url(text)


def test_not_s3() -> None:
    assert not s3.is_s3_url("bucket/key")
    assert not s3.is_s3_url("./s3://x")
    assert not s3.is_s3_url("-")


def test_prefix_and_child() -> None:
    assert s3.parse_s3_url("s3://bkt/dir").prefix == "dir/"
    assert s3.parse_s3_url("s3://bkt/dir/").prefix == "dir/"
    assert s3.parse_s3_url("s3://bkt").prefix == ""
    assert str(s3.parse_s3_url("s3://bkt/out/").child("a/x.enc")) == "s3://bkt/out/a/x.enc"
    assert str(s3.parse_s3_url("s3://bkt/out").child("x")) == "s3://bkt/out/x"
    assert str(s3.parse_s3_url("s3://bkt").child("x")) == "s3://bkt/x"
    with pytest.raises(envelope.UsageError, match="control"):
        s3.parse_s3_url("s3://bkt/out/").child("bad\x00")


def test_objects_need_a_key() -> None:
    for text in ("s3://bucket", "s3://bucket/dir/"):
        with pytest.raises(envelope.UsageError, match="names a prefix"):
            s3.S3Reader(text, client=object())
        with pytest.raises(envelope.UsageError, match="names a prefix"):
            s3.S3Writer(text, client=object())


@pytest.mark.parametrize("part_size", [0, s3.MIN_PART_SIZE - 1, s3.MAX_PART_SIZE + 1, True, 8.0])
def test_part_size_is_checked_first(part_size: object) -> None:
    with pytest.raises(envelope.UsageError, match="part size"):
        s3.S3Writer("s3://bucket/key", client=object(), part_size=part_size)  # type: ignore[arg-type]


def test_huge_expected_size_raises_the_part_size() -> None:
    """10,000 parts of 8 MiB hold 78 GiB; a larger expected object gets parts that fit it (whole MiB)."""
    class NoHead:
        def head_object(self, **_: object) -> None:
            raise AssertionError("force=True: no HEAD")

    writer = s3.S3Writer("s3://bucket/key", client=NoHead(), force=True, expected_size=200 * 1024**3)
    assert writer.part_size * s3.MAX_PARTS >= 200 * 1024**3
    assert writer.part_size % (1024 * 1024) == 0
    assert writer.part_size < 2 * 200 * 1024**3 // s3.MAX_PARTS
    writer.abort()


def test_import_envelope_loads_no_boto3() -> None:
    code = "import sys, envelope, envelope.s3; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
