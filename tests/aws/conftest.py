"""Fixtures for the tests of envelope.aws (moto_server fixtures: tests/aws_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_aws_cache() -> Iterator[None]:
    """envelope.aws caches values and clients process-wide: every test starts and ends without them."""
    import envelope.aws

    envelope.aws.clear_cache()
    yield
    envelope.aws.clear_cache()
