"""Shared fixtures. AWS fixtures (moto_server) live in tests/aws_fixtures.py."""

from __future__ import annotations

import os

import pytest

import envelope

pytest_plugins: list[str] = ["aws_fixtures"]


@pytest.fixture
def aes_keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("envelope", "test-key", os.urandom(32))
