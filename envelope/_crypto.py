"""Key derivation, key commitment, header authentication and ECDSA signatures (sections 1.3, 2.3, 2.4, 4).

Knows suites and bytes; knows nothing of keyrings, frames or files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._suites import SUITES, AlgorithmSuite
from .errors import AuthenticationError, FormatError, UsageError

__all__ = [
    "PUBLIC_KEY_CONTEXT_KEY",
    "Signer",
    "Verifier",
    "check_commitment",
    "derive_key",
    "header_tag",
    "verify_header_tag",
]

PUBLIC_KEY_CONTEXT_KEY = "aws-crypto-public-key"
ZERO_IV = bytes(12)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}
_COORDINATE = {"p256": 32, "p384": 48}
_ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "p384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
}


_DIGEST_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}


def _hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with HMAC: T(i) = HMAC(PRK, T(i-1) || info || i). Every ESDK key is at most
    one hash block, so this is one C-level HMAC call (the cryptography HKDF objects cost ~10x more here)."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return out[:length]


#: HMAC-SHA512 (RFC 2104) of the committing suites' key derivation, spelled out over hashlib: three
#: ``hmac.digest`` calls cost ~6 us per message here (each sets up an OpenSSL HMAC context), the same three
#: HMACs as four SHA-512 calls on padded keys ~3.8 us (cryptography's HKDF objects ~13 us); a 1 KiB message
#: has ~15 us in all. tests/suites/test_hkdf.py checks derive_key against cryptography's HKDF, and these HMACs
#: against hmac.digest, on random inputs.
_HMAC_BLOCK = 128
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hmac_sha512_pads(key: bytes) -> tuple[bytes, bytes]:
    """(K xor ipad, K xor opad) for HMAC-SHA512: HMAC(K, m) = SHA512(K^opad || SHA512(K^ipad || m))."""
    if len(key) > _HMAC_BLOCK:
        key = hashlib.sha512(key).digest()
    key = bytes(key).ljust(_HMAC_BLOCK, b"\0")
    return key.translate(_IPAD), key.translate(_OPAD)


def hmac_sha512(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA512 as derive_key computes it (for the tests that hold it against ``hmac.digest``)."""
    inner, outer = _hmac_sha512_pads(key)
    return hashlib.sha512(outer + hashlib.sha512(inner + message).digest()).digest()


#: Section 2.4, per committing suite: the HKDF-Expand inputs of the one block each key takes (info || 0x01).
_COMMIT_INFO = {suite.id: (suite.id.to_bytes(2, "big") + b"DERIVEKEY\x01", b"COMMITKEY\x01")
                for suite in SUITES.values() if suite.committing}


def derive_key(suite: AlgorithmSuite, data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """Return (data-encryption key, commitment key) for a message; the commitment is b"" unless committing.

    Section 2.3 (all three families) and 2.4 (commit key); checked against the KAT vectors' content keys and
    commitments in tests/suites/test_suites_crypto.py, and against cryptography's HKDF on random inputs in
    tests/suites/test_hkdf.py.
    """
    if len(data_key) != suite.key_length:
        raise UsageError(f"suite {suite.hex_id} needs a {suite.key_length}-byte data key, got {len(data_key)}")
    kdf = suite.kdf
    if kdf == "commit":
        # PRK = HKDF-Extract(SHA-512, salt = message ID, IKM = data key); each 32-byte key is the first block
        # of HKDF-Expand: HMAC(PRK, info || 0x01) cut to 32 bytes
        derive_info, commit_info = _COMMIT_INFO[suite.id]
        sha512 = hashlib.sha512
        # the pads of _hmac_sha512_pads written out (~0.15 us less): a message ID and a PRK are within a block
        if len(message_id) <= _HMAC_BLOCK:
            salt = bytes(message_id).ljust(_HMAC_BLOCK, b"\0")
            inner, outer = salt.translate(_IPAD), salt.translate(_OPAD)
        else:  # never for an ESDK message ID (32 bytes); HMAC hashes a longer key first
            inner, outer = _hmac_sha512_pads(message_id)
        prk = sha512(outer + sha512(inner + data_key).digest()).digest()
        # both keys are HMACs under the PRK: its padded blocks are hashed once and the two states copied
        # (~0.3 us less than hashing them twice over)
        padded = prk.ljust(_HMAC_BLOCK, b"\0")
        inner_state, outer_state = sha512(padded.translate(_IPAD)), sha512(padded.translate(_OPAD))
        derive, commit = inner_state.copy(), inner_state
        derive.update(derive_info)
        commit.update(commit_info)
        derive_outer, commit_outer = outer_state.copy(), outer_state
        derive_outer.update(derive.digest())
        commit_outer.update(commit.digest())
        return derive_outer.digest()[:32], commit_outer.digest()[:32]
    if kdf == "identity":
        return bytes(data_key), b""
    hash_name = suite.kdf_hash
    assert hash_name is not None
    # v1: HKDF-Extract with no salt (hashLen zero bytes), info = suite ID || message ID
    prk = hmac.digest(bytes(_DIGEST_SIZE[hash_name]), bytes(data_key), hash_name)
    return _hkdf_expand(hash_name, prk, suite.id.to_bytes(2, "big") + message_id, suite.key_length), b""


def check_commitment(expected: bytes, stored: bytes) -> None:
    """Section 2.4: constant-time comparison, done before the header tag is checked."""
    if not hmac.compare_digest(expected, stored):
        raise AuthenticationError("key commitment does not match: the data key does not belong to this message")


def header_tag(aead: AESGCM, iv: bytes, header_body: bytes) -> bytes:
    """Section 1.3: AES-GCM over an empty plaintext with the header body as AAD (``aead`` holds the content
    key; the body frames reuse it)."""
    return aead.encrypt(iv, b"", header_body)


def verify_header_tag(aead: AESGCM, iv: bytes, header_body: bytes, tag: bytes) -> None:
    try:
        aead.decrypt(iv, tag, header_body)
    except InvalidTag:
        raise AuthenticationError("header authentication failed (tampered header, wrong data key, or a required "
                                  "encryption context pair that was not reproduced)") from None


def _new_hash(suite: AlgorithmSuite) -> Any:
    assert suite.signature_hash is not None
    return hashlib.new(suite.signature_hash)


class Signer:
    """Hashes every byte of a signed message as it is produced, then signs (section 4).

    A fresh key pair is made per message unless one is passed (the data-key cache reuses it).
    """

    def __init__(self, suite: AlgorithmSuite, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        assert suite.curve is not None
        self.suite = suite
        self.private_key = private_key or ec.generate_private_key(_CURVES[suite.curve]())
        self._hash = _new_hash(suite)
        self.update = self._hash.update

    @property
    def public_key_b64(self) -> str:
        return encode_public_key(self.private_key.public_key())

    def finalize(self) -> bytes:
        """Sign, re-signing until the DER length is the one the ESDK for Python always writes."""
        suite = self.suite
        assert suite.curve is not None and suite.signature_hash is not None
        digest = self._hash.digest()
        algorithm = ec.ECDSA(Prehashed(_HASHES[suite.signature_hash]()))
        while True:
            signature = self.private_key.sign(digest, algorithm)
            if len(signature) == suite.signature_length:
                return signature
            r, s = decode_dss_signature(signature)
            signature = encode_dss_signature(r, _ORDERS[suite.curve] - s)
            if len(signature) == suite.signature_length:
                return signature


def encode_public_key(public_key: ec.EllipticCurvePublicKey) -> str:
    """Section 4: the SEC1 compressed point (02 or 03 by the parity of Y, then X), in base64.

    Made from the point's coordinates rather than with ``public_bytes(Encoding.X962, PublicFormat.CompressedPoint)``:
    the import of ``cryptography...serialization`` that needs pulls in every key format (SSH, PKCS#12, ...), 5-50
    ms measured at the start of each signed encrypt (the CLI pays it per run), against 0.05 ms for this. Checked
    against ``public_bytes`` in tests/suites/test_suites_crypto.py."""
    numbers = public_key.public_numbers()
    size = (public_key.curve.key_size + 7) // 8
    return base64.b64encode(bytes((2 | numbers.y & 1,)) + numbers.x.to_bytes(size, "big")).decode()


class Verifier:
    """Checks the footer signature against the ``aws-crypto-public-key`` from the context."""

    def __init__(self, suite: AlgorithmSuite, public_key_b64: str) -> None:
        assert suite.curve is not None
        self.suite = suite
        try:
            point = base64.b64decode(public_key_b64.encode("ascii"), validate=True)
            # section 4: the SEC1 *compressed* point (02|03 || X), as every ESDK writes and requires
            if len(point) != 1 + _COORDINATE[suite.curve] or point[0] not in (2, 3):
                raise ValueError("not a compressed point")
            self.public_key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[suite.curve](), point)
        except (ValueError, UnicodeEncodeError, binascii.Error):
            raise FormatError("encryption context", 0,
                              f"{PUBLIC_KEY_CONTEXT_KEY} is not a valid {suite.curve} public key") from None
        self._hash = _new_hash(suite)
        self.update = self._hash.update

    def verify(self, signature: bytes | bytearray) -> None:
        assert self.suite.signature_hash is not None
        try:
            self.public_key.verify(signature, self._hash.digest(),
                                   ec.ECDSA(Prehashed(_HASHES[self.suite.signature_hash]())))
        except InvalidSignature:
            raise AuthenticationError("signature verification failed (the message was changed)") from None
