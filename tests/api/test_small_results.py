"""The one-shot decrypt's result, made without the frozen ``__init__``, is the object the constructor makes."""

from __future__ import annotations

import dataclasses
import os

import pytest

import envelope
from envelope._api import DecryptResult


def test_one_frame_result_equals_the_constructors() -> None:
    keyring = envelope.RawAesKeyring("ns", "name", os.urandom(32))
    plain = os.urandom(1024)
    result = envelope.decrypt(envelope.encrypt(plain, keyring=keyring, context={"a": "b"}), keyring=keyring)
    slow = DecryptResult(result.plaintext, result.header)
    assert type(result) is DecryptResult and result == slow and result.__dict__ == slow.__dict__
    assert result.plaintext == plain and result.context == {"a": "b"} and result.suite.id == 0x0478
    assert repr(plain) not in repr(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.plaintext = b""  # type: ignore[misc]
