"""The per-message constructors of requests and materials make the same objects as the dataclasses' own."""

from __future__ import annotations

import dataclasses
import os

import pytest

from envelope._format import EncryptedDataKey
from envelope._materials import (
    DecryptionMaterials,
    DecryptionRequest,
    EncryptionMaterials,
    EncryptionRequest,
    new_decryption_materials,
    new_decryption_request,
    new_encryption_materials,
    new_encryption_request,
)
from envelope._suites import SUITES, CommitmentPolicy

SUITE = SUITES[0x0478]
EDKS = (EncryptedDataKey("ns", b"name-info", b"ciphertext"),)


def _same(fast: object, slow: object) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert vars(fast) == vars(slow)
    assert repr(fast) == repr(slow)
    for f in dataclasses.fields(slow):  # type: ignore[arg-type]
        mine, theirs = getattr(fast, f.name), getattr(slow, f.name)
        assert type(mine) is type(theirs)
        assert mine == theirs


def test_encryption_request() -> None:
    context, keys = {"a": "1"}, frozenset({"a"})
    policy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    _same(new_encryption_request(context, policy, SUITE, 1024, keys),
          EncryptionRequest(context, policy, SUITE, 1024, keys))
    _same(new_encryption_request(context, policy, None, None, frozenset()), EncryptionRequest(context, policy))


def test_encryption_materials() -> None:
    key, context = os.urandom(32), {"a": "1"}
    _same(new_encryption_materials(SUITE, key, EDKS, context, None, frozenset()),
          EncryptionMaterials(SUITE, key, EDKS, context))


def test_decryption_request_and_materials() -> None:
    key, context, keys = os.urandom(32), {"a": "1"}, frozenset({"b"})
    _same(new_decryption_request(SUITE, EDKS, context, keys), DecryptionRequest(SUITE, EDKS, context, keys))
    _same(new_decryption_materials(SUITE, key), DecryptionMaterials(SUITE, key))


@pytest.mark.parametrize("make", [
    lambda: new_encryption_request({}, CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, None, 1, frozenset()),
    lambda: new_decryption_materials(SUITE, bytes(32)),
])
def test_still_frozen(make: object) -> None:
    obj = make()  # type: ignore[operator]
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.suite = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.anything = 1


def test_data_key_not_in_repr() -> None:
    key = b"\xab" * 32
    assert key.hex() not in repr(new_decryption_materials(SUITE, key))
    assert repr(key) not in repr(new_encryption_materials(SUITE, key, EDKS, {}, None, frozenset()))
