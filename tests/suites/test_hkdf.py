"""derive_key computes HKDF with stdlib HMAC (see envelope._crypto): the same keys as cryptography's own HKDF."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from envelope import _crypto as crypto
from envelope._suites import SUITES, AlgorithmSuite

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _reference(suite: AlgorithmSuite, data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Sections 2.3 and 2.4, with cryptography's HKDF."""
    alg = suite.id.to_bytes(2, "big")
    if suite.kdf == "identity":
        return data_key, b""
    if suite.kdf == "hkdf":
        assert suite.kdf_hash is not None
        return HKDF(_HASHES[suite.kdf_hash](), suite.key_length, None, alg + message_id).derive(data_key), b""
    key = HKDF(hashes.SHA512(), 32, message_id, alg + b"DERIVEKEY").derive(data_key)
    commit = HKDF(hashes.SHA512(), 32, message_id, b"COMMITKEY").derive(data_key)
    return key, commit


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=lambda s: s.hex_id)
def test_derive_key_matches_cryptography_hkdf_on_random_inputs(suite: AlgorithmSuite) -> None:
    rng = random.Random(suite.id)
    seen = set()
    for _ in range(200):
        data_key = rng.randbytes(suite.key_length)
        message_id = rng.randbytes(suite.message_id_length)
        got = crypto.derive_key(suite, data_key, message_id)
        assert got == _reference(suite, data_key, message_id)
        assert len(got[0]) == suite.key_length
        assert len(got[1]) == (32 if suite.committing else 0)
        seen.add(got)
    assert len(seen) == 200  # different inputs, different keys (nothing cached across calls)


def test_derive_key_bytes_like_inputs_match() -> None:
    suite = SUITES[0x0478]
    data_key, message_id = os.urandom(32), os.urandom(32)
    assert crypto.derive_key(suite, bytearray(data_key), message_id) == _reference(suite, data_key, message_id)
    assert crypto.derive_key(suite, memoryview(data_key), message_id) == _reference(suite, data_key, message_id)


def test_hmac_sha512_matches_hmac_digest_on_random_inputs() -> None:
    import hmac

    rng = random.Random(512)
    for key_length in (0, 1, 31, 32, 64, 127, 128, 129, 200, 300):
        for message_length in (0, 1, 11, 32, 128, 1000):
            key, message = rng.randbytes(key_length), rng.randbytes(message_length)
            assert crypto.hmac_sha512(key, message) == hmac.digest(key, message, "sha512")
