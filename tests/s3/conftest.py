"""Fixtures of the S3 tests: a bucket on the small-parts moto_server, and the fault proxy in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws_fixtures import SMALL_PART_SIZE, TEST_BUCKET, AwsEnv, FaultProxy

import envelope.s3


@pytest.fixture
def s3_env(s3_small_parts: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> AwsEnv:
    """S3 on the moto_server that accepts parts of SMALL_PART_SIZE, envelope's 5 MiB floor lowered to match (in
    this process), and the bucket TEST_BUCKET. KMS is on the main moto_server."""
    monkeypatch.setattr(envelope.s3, "MIN_PART_SIZE", SMALL_PART_SIZE)
    s3_small_parts.create_bucket(TEST_BUCKET)
    return s3_small_parts


@pytest.fixture
def s3_proxy(s3_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every S3 client made from here on goes through a FaultProxy (counted; faults on demand)."""
    with FaultProxy(s3_env.s3_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy
