"""Algorithm suites, commitment policies, key derivation and signatures (esdk-format.md sections 2, 4, 6.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from helpers import (
    ALL_SUITE_IDS,
    READ_ANY,
    SIGNED_IDS,
    CountingKeyring,
    StaticKeyring,
    encrypt_policy,
    esdk_aes_key,
    esdk_decrypt,
)

import envelope
from envelope import _crypto as crypto
from envelope import _format as fmt
from envelope._materials import (
    DecryptionMaterials,
    DecryptionRequest,
    DefaultMaterialsManager,
    EncryptionMaterials,
    EncryptionRequest,
)
from envelope._suites import SUITES, AlgorithmSuite, CommitmentPolicy, resolve_policy, resolve_suite
from envelope.errors import AuthenticationError, FormatError, PolicyError, UsageError
from testkit.messages import build_message

KEYRING = envelope.RawAesKeyring("ns", "suites", bytes(range(32)))
P384_ORDER = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _encrypt(plaintext: bytes, suite_id: int, **kwargs: object) -> bytes:
    return envelope.encrypt(plaintext, keyring=KEYRING, algorithm=suite_id,
                            commitment_policy=encrypt_policy(suite_id), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# suites


def test_the_suite_table() -> None:
    assert ALL_SUITE_IDS == [0x0014, 0x0046, 0x0078, 0x0114, 0x0146, 0x0178, 0x0214, 0x0346, 0x0378, 0x0478,
                             0x0578]
    for suite in SUITES.values():
        assert suite.committing == (suite.id >> 8 in (4, 5))
        assert suite.signed == (suite.id >> 8 in (2, 3, 5))
        assert suite.key_length * 8 == {0x14: 128, 0x46: 192, 0x78: 256}[suite.id & 0xFF]
        assert suite.message_version == (2 if suite.committing else 1)
        assert suite.curve == {2: "p256", 3: "p384", 5: "p384"}.get(suite.id >> 8)


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_every_suite_encrypts_and_decrypts(suite_id: int) -> None:
    plaintext = os.urandom(1000)
    message = _encrypt(plaintext, suite_id, frame_length=256, context={"suite": hex(suite_id)})
    version = SUITES[suite_id].message_version
    prefix = (b"\x01\x80" if version == 1 else b"\x02") + suite_id.to_bytes(2, "big")
    assert message.startswith(prefix)
    result = envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY)
    assert result.plaintext == plaintext and result.suite.id == suite_id
    assert result.header.frame_length == 256
    assert (crypto.PUBLIC_KEY_CONTEXT_KEY in result.context) == SUITES[suite_id].signed
    assert result.context["suite"] == hex(suite_id)


def test_default_suite_is_0478() -> None:
    message = envelope.encrypt(b"x", keyring=KEYRING)
    assert message[:3] == b"\x02\x04\x78"
    assert envelope.decrypt(message, keyring=KEYRING).suite.id == 0x0478
    # commitment forbidden: the ESDK for Python's choice, 0x0378 (section 2.2 / 12.4)
    message = envelope.encrypt(b"x", keyring=KEYRING, commitment_policy="forbid-encrypt-allow-decrypt")
    assert message[:4] == b"\x01\x80\x03\x78"


@pytest.mark.parametrize("value,expected", [
    (0x0478, 0x0478), ("0x0578", 0x0578), ("0146", 0x0146), ("AES_256_GCM_HKDF_SHA512_COMMIT_KEY", 0x0478),
    ("AES_128_GCM_IV12_TAG16", 0x0014), ("AES_128_GCM_IV12_TAG16_NO_KDF", 0x0014),
    ("aes-192-gcm-iv12-tag16-hkdf-sha384-ecdsa-p384", 0x0346), (SUITES[0x0214], 0x0214),
])
def test_algorithm_by_id_or_esdk_name(value: object, expected: int) -> None:
    suite = resolve_suite(value)  # type: ignore[arg-type]
    assert suite is not None and suite.id == expected
    message = envelope.encrypt(b"x", keyring=KEYRING, algorithm=value,  # type: ignore[arg-type]
                               commitment_policy=encrypt_policy(expected))
    assert fmt.parse_header(message)[0].suite.id == expected


@pytest.mark.parametrize("value", [0x0000, 0x0070, 0x6700, 0x10478, "0x6701", "AES_512", "", True])
def test_unknown_algorithm(value: object) -> None:
    with pytest.raises(UsageError):
        envelope.encrypt(b"x", keyring=KEYRING, algorithm=value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# commitment policies (section 2.2)


def test_policy_names() -> None:
    assert resolve_policy(None) is CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    for policy in CommitmentPolicy:
        assert resolve_policy(policy.name) is policy  # the ESDK spelling
        assert resolve_policy(policy.value) is policy
        assert resolve_policy(policy) is policy
    with pytest.raises(UsageError):
        resolve_policy("require-everything")


@pytest.mark.parametrize("policy", list(CommitmentPolicy))
@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_commitment_policy_on_encrypt(policy: CommitmentPolicy, suite_id: int) -> None:
    allowed = SUITES[suite_id].committing != (policy is CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    keyring = CountingKeyring(KEYRING)
    if allowed:
        message = envelope.encrypt(b"x", keyring=keyring, algorithm=suite_id, commitment_policy=policy)
        assert fmt.parse_header(message)[0].suite.id == suite_id
    else:
        with pytest.raises(UsageError, match="commit"):
            envelope.encrypt(b"x", keyring=keyring, algorithm=suite_id, commitment_policy=policy)
        assert keyring.calls == []


@pytest.fixture(scope="module")
def one_message_per_suite() -> dict[int, bytes]:
    return {s: _encrypt(b"policy", s) for s in ALL_SUITE_IDS}


@pytest.mark.parametrize("policy", list(CommitmentPolicy))
def test_commitment_policy_on_decrypt(policy: CommitmentPolicy, one_message_per_suite: dict[int, bytes]) -> None:
    for suite_id, message in one_message_per_suite.items():
        keyring = CountingKeyring(KEYRING)
        if policy is CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT and not SUITES[suite_id].committing:
            with pytest.raises(PolicyError, match="commit"):
                envelope.decrypt(message, keyring=keyring, commitment_policy=policy)
            assert keyring.calls == []  # refused before any keyring was asked (section 2.2)
        else:
            assert envelope.decrypt(message, keyring=keyring, commitment_policy=policy).plaintext == b"policy"


# ---------------------------------------------------------------------------------------------------------
# key derivation (sections 2.3, 2.4)


def _hkdf(hash_name: str, ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac, independent of envelope._crypto."""
    size = hashlib.new(hash_name).digest_size
    prk = hmac.new(salt or bytes(size), ikm, hash_name).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS)
def test_key_derivation(suite_id: int) -> None:
    suite = SUITES[suite_id]
    data_key = os.urandom(suite.key_length)
    message_id = os.urandom(suite.message_id_length)
    key, commitment = crypto.derive_key(suite, data_key, message_id)
    alg = suite_id.to_bytes(2, "big")
    if suite.kdf == "identity":
        assert (key, commitment) == (data_key, b"")
    elif suite.kdf == "hkdf":  # info = suite ID || message ID (18 bytes), no salt
        assert key == _hkdf(suite.kdf_hash or "", data_key, None, alg + message_id, suite.key_length)
        assert commitment == b""
    else:  # salt = message ID; info = suite ID || "DERIVEKEY" and "COMMITKEY"
        assert key == _hkdf("sha512", data_key, message_id, alg + b"DERIVEKEY", 32)
        assert commitment == _hkdf("sha512", data_key, message_id, b"COMMITKEY", 32)
    with pytest.raises(UsageError):
        crypto.derive_key(suite, data_key + b"\x00", message_id)


def test_key_derivation_matches_the_kat_vectors() -> None:
    vectors = Path(__file__).resolve().parents[1] / "vectors" / "esdk" / "commitment-test-vectors.json"
    checked = 0
    for vector in json.loads(vectors.read_text())["tests"]:
        if "content-encryption-key" not in vector or not vector["status"]:
            continue
        suite = SUITES[0x0478] if base64.b64decode(vector["ciphertext"])[1] == 0x04 else SUITES[0x0578]
        key, commitment = crypto.derive_key(suite, base64.b64decode(vector["decrypted-dek"]),
                                            base64.b64decode(vector["message-id"]))
        assert key == base64.b64decode(vector["content-encryption-key"])
        assert commitment == base64.b64decode(vector["commitment"])
        checked += 1
    assert checked == 16


@pytest.mark.parametrize("suite_id", [0x0478, 0x0578])
def test_commitment_is_checked_before_the_header_tag(suite_id: int) -> None:
    message = _encrypt(b"committed", suite_id)
    fields = fmt.parse_header(message)[0]
    at = len(fields.raw) - 32  # the commitment is the last field of the v2 header body
    tampered = message[:at] + bytes([message[at] ^ 1]) + message[at + 1:]
    with pytest.raises(AuthenticationError, match="commitment"):
        envelope.decrypt(tampered, keyring=KEYRING)
    # a bad header tag with a good commitment is reported as such
    tag_at = len(fields.raw)
    tampered = message[:tag_at] + bytes([message[tag_at] ^ 1]) + message[tag_at + 1:]
    with pytest.raises(AuthenticationError, match="header"):
        envelope.decrypt(tampered, keyring=KEYRING)


# ---------------------------------------------------------------------------------------------------------
# signatures (section 4)


class CapturingManager:
    """A materials manager that keeps the encryption materials, so a test can re-sign with the signing key."""

    def __init__(self, keyring: envelope.Keyring) -> None:
        self.inner = DefaultMaterialsManager(keyring)
        self.materials: list[EncryptionMaterials] = []

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        materials = self.inner.get_encryption_materials(request)
        self.materials.append(materials)
        return materials

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        return self.inner.decrypt_materials(request)


def test_0578_signs_with_a_fresh_p384_key_per_message() -> None:
    manager = CapturingManager(KEYRING)
    messages = [envelope.encrypt(b"signed", materials_manager=manager, algorithm=0x0578) for _ in range(2)]
    public_keys = [fmt.parse_header(m)[0].encryption_context[crypto.PUBLIC_KEY_CONTEXT_KEY] for m in messages]
    assert public_keys[0] != public_keys[1]
    for public_key, materials, message in zip(public_keys, manager.materials, messages):
        point = base64.b64decode(public_key, validate=True)
        assert len(public_key) == 68 and len(point) == 49 and point[0] in (2, 3)  # SEC1 compressed P-384
        assert materials.signing_key is not None
        assert isinstance(materials.signing_key.curve, ec.SECP384R1)
        assert crypto.encode_public_key(materials.signing_key.public_key()) == public_key
        # the footer is an ECDSA P-384/SHA-384 signature over everything before it, by that key
        signature = fmt.parse_message(message).footer.signature  # type: ignore[union-attr]
        body = message[:len(message) - len(signature) - 2]
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point).verify(
            signature, hashlib.sha384(body).digest(), ec.ECDSA(Prehashed(hashes.SHA384())))
    assert manager.materials[0].signing_key is not manager.materials[1].signing_key


@pytest.mark.parametrize("suite_id", SIGNED_IDS)
def test_writer_uses_the_esdk_signature_length(suite_id: int) -> None:
    for _ in range(4):
        footer = fmt.parse_message(_encrypt(b"", suite_id)).footer
        assert footer is not None and len(footer.signature) == SUITES[suite_id].signature_length


def _resign(message: bytes, key: ec.EllipticCurvePrivateKey, suite: AlgorithmSuite, accept) -> bytes:  # type: ignore[no-untyped-def]
    """Replace the footer with a fresh signature (or its n - s twin) for which ``accept(der)`` holds."""
    old = fmt.parse_message(message).footer
    assert old is not None
    body = message[:len(message) - len(old.signature) - 2]
    hash_type = hashes.SHA256 if suite.curve == "p256" else hashes.SHA384
    digest = hashlib.new(hash_type.name, body).digest()
    order = P256_ORDER if suite.curve == "p256" else P384_ORDER
    for _ in range(20000):
        der = key.sign(digest, ec.ECDSA(Prehashed(hash_type())))
        r, s = decode_dss_signature(der)
        for candidate in (der, encode_dss_signature(r, order - s)):
            if accept(candidate):
                return body + fmt.serialize_footer(fmt.Footer(candidate))
    raise AssertionError("no signature of the wanted shape found")


@pytest.mark.parametrize("suite_id", [0x0214, 0x0578])
def test_signatures_of_any_valid_der_length_verify(suite_id: int) -> None:
    suite = SUITES[suite_id]
    order = P256_ORDER if suite.curve == "p256" else P384_ORDER
    manager = CapturingManager(KEYRING)
    plaintext = os.urandom(100)
    message = envelope.encrypt(plaintext, materials_manager=manager, algorithm=suite_id,
                               commitment_policy=encrypt_policy(suite_id), frame_length=32)
    key = manager.materials[0].signing_key
    assert key is not None
    standard = suite.signature_length
    int_len = (order.bit_length() + 7) // 8

    def r_length(der: bytes) -> int:
        return der[3]

    shapes = {
        "shorter": lambda der: len(der) < standard,
        "longer": lambda der: len(der) > standard,
        "high-s": lambda der: decode_dss_signature(der)[1] > order // 2,
        "short-r": lambda der: r_length(der) < int_len,  # r with a leading zero byte dropped
    }
    for name, accept in shapes.items():
        resigned = _resign(message, key, suite, accept)
        assert resigned != message, name
        result = envelope.decrypt(resigned, keyring=KEYRING, commitment_policy=READ_ANY)
        assert result.plaintext == plaintext, name
    # and the signature really is checked: a valid signature by the same key over another message fails
    other = envelope.encrypt(b"other", materials_manager=manager, algorithm=suite_id,
                             commitment_policy=encrypt_policy(suite_id))
    wrong = _resign(other, key, suite, lambda der: True)
    footer = fmt.parse_message(wrong).footer
    assert footer is not None
    forged = message[:len(message) - standard - 2] + fmt.serialize_footer(footer)
    with pytest.raises(AuthenticationError, match="signature"):
        envelope.decrypt(forged, keyring=KEYRING, commitment_policy=READ_ANY)


# ---------------------------------------------------------------------------------------------------------
# the encryption context (sections 4 and 6.2)


@pytest.mark.parametrize("suite_id", [0x0478, 0x0578, 0x0114])
@pytest.mark.parametrize("key", ["aws-crypto-public-key", "aws-crypto-", "aws-crypto-anything"])
def test_reserved_context_keys_are_refused_on_encrypt(suite_id: int, key: str) -> None:
    keyring = CountingKeyring(KEYRING)
    out = io.BytesIO()
    with pytest.raises(UsageError, match="aws-crypto-"):
        envelope.encrypt_stream(io.BytesIO(b"x"), out, keyring=keyring, context={"ok": "1", key: "v"},
                                algorithm=suite_id, commitment_policy=encrypt_policy(suite_id))
    assert keyring.calls == [] and out.getvalue() == b""
    # keys that merely look alike are fine
    for fine in ("aws-crypto", "AWS-CRYPTO-x", "x-aws-crypto-y"):
        message = _encrypt(b"x", suite_id, context={fine: "v"})
        assert envelope.decrypt(message, keyring=KEYRING, commitment_policy=READ_ANY).context[fine] == "v"


def test_half_signed_messages_are_refused() -> None:
    """Section 4: an unsigned suite carrying a public key, or a signed suite without one, fails."""
    data_key = os.urandom(32)
    public = crypto.Signer(SUITES[0x0578]).public_key_b64
    sane = build_message(SUITES[0x0478], data_key, [b"hi"], context={"a": "b"})
    assert envelope.decrypt(sane, keyring=StaticKeyring(data_key)).plaintext == b"hi"
    signed = build_message(SUITES[0x0578], data_key, [b"hi"], context={"a": "b"})
    assert envelope.decrypt(signed, keyring=StaticKeyring(data_key)).plaintext == b"hi"
    half_signed = build_message(SUITES[0x0478], data_key, [b"hi"], context={crypto.PUBLIC_KEY_CONTEXT_KEY: public})
    # a signed message whose public key was dropped from the header (and the AAD length fixed up)
    header = fmt.parse_header(signed)[0]
    aad = fmt.serialize_context(header.encryption_context)
    at = signed.index(aad)
    unsigned_context = signed[:at - 2] + b"\x00\x00" + signed[at + len(aad):]
    for message in (half_signed, unsigned_context):
        keyring = StaticKeyring(data_key)
        with pytest.raises(FormatError, match=crypto.PUBLIC_KEY_CONTEXT_KEY):
            envelope.decrypt(message, keyring=keyring)
        assert keyring.calls == []
    # a public key that is not a compressed P-384 point, or not base64 at all
    for text in (base64.b64encode(b"\x05" + bytes(48)).decode(), public[:-4], "not base64!"):
        bad = build_message(SUITES[0x0578], data_key, [b"hi"], context={"a": "b"}, public_key=text)
        with pytest.raises(FormatError, match="public key"):
            envelope.decrypt(bad, keyring=StaticKeyring(data_key))


@pytest.mark.parametrize("suite_id", [0x0078, 0x0214, 0x0378, 0x0478, 0x0578])
def test_layouts_other_writers_use(suite_id: int) -> None:
    """Readers must accept what other SDKs write (sections 3.1, 1.3, 12.1): a final frame as long as the frame
    length, IVs that are not the writer's counter, a random v1 header IV, context entries in any order.
    The ESDK reads each of these too."""
    suite = SUITES[suite_id]
    data_key = os.urandom(suite.key_length)
    keyring = envelope.RawAesKeyring("ns", "suites", bytes(range(32)))
    master_key = esdk_aes_key("ns", "suites", bytes(range(32)))
    context = {"b": "2", "a": "1", "c": "3"}
    variants = {
        "full final frame": dict(chunks=[b"abcd", b"efgh"], frame_length=4),
        "random IVs": dict(chunks=[b"abcd", b"efgh", b"ij"], frame_length=4, iv_for=lambda seq: os.urandom(12)),
        "final frame IV all ones": dict(chunks=[b"abcd", b"e"], frame_length=4,
                                        iv_for=lambda seq: b"\xff" * 8 + seq.to_bytes(4, "big")),
        "random header IV": dict(chunks=[b"abc"], frame_length=4, header_iv=os.urandom(12)),
        "unsorted context": dict(chunks=[b"abcd", b"e"], frame_length=4, unsorted_context=True),
        "non-framed": dict(chunks=[b"a single block"], non_framed=True, iv_for=lambda seq: os.urandom(12)),
    }
    for name, options in variants.items():
        chunks = options.pop("chunks")
        message = build_message(suite, data_key, chunks, context=context, keyring=keyring,
                                 **options)  # type: ignore[arg-type]
        expected = b"".join(chunks)
        assert envelope.decrypt(message, keyring=keyring, commitment_policy=READ_ANY).plaintext == expected, name
        assert esdk_decrypt(message, master_key)[0] == expected, name


@pytest.mark.parametrize("curve", [ec.SECP256R1, ec.SECP384R1])
def test_the_public_key_is_the_compressed_point_cryptography_writes(curve: type[ec.EllipticCurve]) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    parities = set()
    for _ in range(40):  # both parities of Y (the prefix byte 02 or 03)
        public = ec.generate_private_key(curve()).public_key()
        expected = public.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        assert crypto.encode_public_key(public) == base64.b64encode(expected).decode()
        parities.add(expected[0])
    assert parities == {2, 3}
    small_x = ec.derive_private_key(1, curve()).public_key()  # the generator: a fixed, known point
    assert base64.b64decode(crypto.encode_public_key(small_x)) == small_x.public_bytes(
        Encoding.X962, PublicFormat.CompressedPoint)
