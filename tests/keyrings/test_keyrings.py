"""Keyrings (esdk-format.md section 7): raw AES, raw RSA, multi-keyring, and the pinned key-file shapes."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from helpers import RSA_PADDINGS, rsa_private_pem, rsa_public_pem

import envelope
from envelope import _format as fmt
from envelope._keyrings import generate_aes_key_file, generate_rsa_key_file, parse_key_file, write_key_file
from envelope._suites import SUITES
from envelope.errors import KeyFileError, KeyringError, UsageError

SUITE = SUITES[0x0478]
CONTEXT = {"tenant": "a", "\u00fcber": "\u2713"}


# ---------------------------------------------------------------------------------------------------------
# raw AES (section 7.2)


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_raw_aes_wire_format(bits: int) -> None:
    key = os.urandom(bits // 8)
    keyring = envelope.RawAesKeyring("my-namespace", "my-key", key)
    data_key, edks = keyring.wrap(SUITE, CONTEXT)
    assert len(data_key) == 32 and len(edks) == 1
    edk = edks[0]
    assert edk.provider_id == "my-namespace"
    info = edk.provider_info
    assert info[:-20] == b"my-key" and info[-20:-12] == b"\x00\x00\x00\x80\x00\x00\x00\x0c"
    assert len(edk.ciphertext) == 32 + 16
    # AES-GCM of the data key under the wrapping key itself, IV from the info, AAD = serialized context
    assert AESGCM(key).decrypt(info[-12:], edk.ciphertext, fmt.serialize_context(CONTEXT)) == data_key
    assert keyring.unwrap(SUITE, CONTEXT, edks) == data_key
    # a fresh IV each time
    assert keyring.wrap(SUITE, CONTEXT, data_key)[1][0].provider_info[-12:] != info[-12:]


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_raw_aes_round_trip_through_the_api(bits: int) -> None:
    keyring = envelope.RawAesKeyring("ns", f"aes-{bits}", os.urandom(bits // 8))
    message = envelope.encrypt(b"secret", keyring=keyring, context=CONTEXT)
    assert envelope.decrypt(message, keyring=keyring).plaintext == b"secret"


def test_raw_aes_unwrap_failures_are_not_fatal_and_are_listed() -> None:
    key = os.urandom(32)
    keyring = envelope.RawAesKeyring("ns", "k", key)
    data_key, [good] = keyring.wrap(SUITE, CONTEXT)
    corrupted = fmt.EncryptedDataKey(good.provider_id, good.provider_info, bytes(48))
    other_name = fmt.EncryptedDataKey("ns", b"other" + good.provider_info[1:], good.ciphertext)
    other_ns = fmt.EncryptedDataKey("nsx", good.provider_info, good.ciphertext)
    # the bad EDK is tried, fails, and the next one opens
    assert keyring.unwrap(SUITE, CONTEXT, [other_ns, other_name, corrupted, good]) == data_key
    with pytest.raises(KeyringError) as info:
        keyring.unwrap(SUITE, CONTEXT, [corrupted])
    assert len(info.value.attempts) == 1 and "did not authenticate" in info.value.attempts[0]
    with pytest.raises(KeyringError, match="no encrypted data key names this key"):
        keyring.unwrap(SUITE, CONTEXT, [other_ns, other_name])
    # a changed context is the AAD: unwrap fails
    with pytest.raises(KeyringError):
        keyring.unwrap(SUITE, {"tenant": "b"}, [good])
    # same namespace and name, different key
    with pytest.raises(KeyringError):
        envelope.RawAesKeyring("ns", "k", os.urandom(32)).unwrap(SUITE, CONTEXT, [good])
    # a wrapped key of the wrong length for the suite
    with pytest.raises(KeyringError, match="length"):
        keyring.unwrap(SUITES[0x0114], CONTEXT, [good])


def test_raw_aes_refuses_bad_configuration() -> None:
    for bad_key in (b"", bytes(15), bytes(31), bytes(64)):
        with pytest.raises(UsageError):
            envelope.RawAesKeyring("ns", "k", bad_key)
    for namespace, name in (("", "k"), ("ns", ""), ("aws-kms", "k"), ("aws-kms-mrk", "k")):
        with pytest.raises(UsageError):
            envelope.RawAesKeyring(namespace, name, bytes(32))


def test_keyrings_never_show_key_material() -> None:
    key = bytes(range(100, 132))
    keyring = envelope.RawAesKeyring("ns", "k", key)
    for text in (repr(keyring), str(keyring)):
        assert key.hex() not in text and base64.b64encode(key).decode() not in text and "k" in text
    rsa_keyring = envelope.RawRsaKeyring("ns", "r", private_key=rsa_private_pem())
    assert "PRIVATE" not in repr(rsa_keyring) and "private" in repr(rsa_keyring)


# ---------------------------------------------------------------------------------------------------------
# raw RSA (section 7.3)


@pytest.mark.parametrize("padding", RSA_PADDINGS)
def test_raw_rsa_paddings(padding: str) -> None:
    keyring = envelope.RawRsaKeyring("ns", "rsa-key", private_key=rsa_private_pem(), padding=padding)
    data_key, [edk] = keyring.wrap(SUITE, CONTEXT)
    assert (edk.provider_id, edk.provider_info, len(edk.ciphertext)) == ("ns", b"rsa-key", 256)
    assert keyring.unwrap(SUITE, CONTEXT, [edk]) == data_key
    message = envelope.encrypt(b"rsa", keyring=keyring)
    assert envelope.decrypt(message, keyring=keyring).plaintext == b"rsa"
    # public-only: encrypts, cannot decrypt
    public_only = envelope.RawRsaKeyring("ns", "rsa-key", public_key=rsa_public_pem(), padding=padding)
    message = envelope.encrypt(b"to the private key", keyring=public_only)
    assert envelope.decrypt(message, keyring=keyring).plaintext == b"to the private key"
    with pytest.raises(KeyringError, match="public key"):
        envelope.decrypt(message, keyring=public_only)
    # another padding on the same key does not open it
    other = RSA_PADDINGS[(RSA_PADDINGS.index(padding) + 1) % len(RSA_PADDINGS)]
    with pytest.raises(KeyringError):
        envelope.RawRsaKeyring("ns", "rsa-key", private_key=rsa_private_pem(), padding=other).unwrap(
            SUITE, CONTEXT, [edk])


def test_raw_rsa_refuses_bad_configuration() -> None:
    with pytest.raises(UsageError):
        envelope.RawRsaKeyring("ns", "k")
    with pytest.raises(UsageError):
        envelope.RawRsaKeyring("ns", "k", private_key=rsa_private_pem(), padding="oaep-md5")
    with pytest.raises(UsageError):
        envelope.RawRsaKeyring("aws-kms", "k", private_key=rsa_private_pem())


# ---------------------------------------------------------------------------------------------------------
# multi-keyring


def test_multi_keyring_generator_and_children() -> None:
    gen = envelope.RawAesKeyring("ns", "gen", os.urandom(32))
    child_aes = envelope.RawAesKeyring("ns", "child", os.urandom(16))
    child_rsa = envelope.RawRsaKeyring("ns", "rsa", private_key=rsa_private_pem(), padding="oaep-sha256")
    multi = envelope.MultiKeyring(gen, [child_aes, child_rsa])
    message = envelope.encrypt(b"for three keys", keyring=multi, context=CONTEXT)
    edks = envelope.read_header(io.BytesIO(message))[0].encrypted_data_keys
    # raw AES info ends with 20 bytes of tag length, IV length and IV; raw RSA info is the name
    assert [e.provider_info[:-20] for e in edks[:2]] + [edks[2].provider_info] == [b"gen", b"child", b"rsa"]
    assert [e.provider_id for e in edks] == ["ns"] * 3
    for single in (gen, child_aes, child_rsa):  # any one keyring opens it
        assert envelope.decrypt(message, keyring=single).plaintext == b"for three keys"
    assert envelope.decrypt(message, keyring=multi).plaintext == b"for three keys"
    # decrypt tries the keyrings in order: failing ones first, then one that works
    stranger = envelope.RawAesKeyring("ns", "stranger", os.urandom(32))
    wrong_key = envelope.RawAesKeyring("ns", "gen", os.urandom(32))
    assert envelope.decrypt(message, keyring=envelope.MultiKeyring(stranger, [wrong_key, child_rsa])
                            ).plaintext == b"for three keys"


def test_multi_keyring_error_lists_every_attempt() -> None:
    message = envelope.encrypt(b"x", keyring=envelope.RawAesKeyring("ns", "gen", os.urandom(32)))
    stranger = envelope.RawAesKeyring("ns", "stranger", os.urandom(32))
    wrong_key = envelope.RawAesKeyring("ns", "gen", os.urandom(32))
    public_only = envelope.RawRsaKeyring("ns", "rsa", public_key=rsa_public_pem())
    multi = envelope.MultiKeyring(None, [stranger, wrong_key, public_only])
    with pytest.raises(KeyringError) as info:
        envelope.decrypt(message, keyring=multi)
    attempts = info.value.attempts
    assert len(attempts) == 3
    assert "stranger" in attempts[0] and "no encrypted data key names this key" in attempts[0]
    assert "ns/gen" in attempts[1] and "did not authenticate" in attempts[1]
    assert "rsa" in attempts[2]
    for attempt in attempts:
        assert attempt in str(info.value)


def test_multi_keyring_without_generator() -> None:
    child = envelope.RawAesKeyring("ns", "child", os.urandom(32))
    with pytest.raises(UsageError):
        envelope.MultiKeyring(None, [])
    with pytest.raises(UsageError, match="generator"):
        envelope.encrypt(b"x", keyring=envelope.MultiKeyring(None, [child]))
    # with a data key supplied, the children wrap it
    data_key, edks = envelope.MultiKeyring(None, [child, child]).wrap(SUITE, {}, bytes(32))
    assert data_key == bytes(32) and len(edks) == 2
    assert child.unwrap(SUITE, {}, edks[1:]) == bytes(32)


# ---------------------------------------------------------------------------------------------------------
# key files (the CLI's pinned shapes)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_aes_key_file_shape_and_mode(tmp_path: Path) -> None:
    for bits in (128, 192, 256):
        doc = generate_aes_key_file("ns", f"k{bits}", bits)
        assert set(doc) == {"type", "namespace", "name", "key"} and doc["type"] == "raw-aes"
        assert len(base64.b64decode(doc["key"], validate=True)) == bits // 8
        path = tmp_path / f"aes{bits}.key"
        write_key_file(path, doc)
        assert _mode(path) == 0o600
        assert json.loads(path.read_text()) == doc
        keyring = envelope.load_keyring(path)
        assert isinstance(keyring, envelope.RawAesKeyring) and keyring.key_bits == bits
        reference = envelope.RawAesKeyring("ns", f"k{bits}", base64.b64decode(doc["key"]))
        assert envelope.decrypt(envelope.encrypt(b"k", keyring=keyring), keyring=reference).plaintext == b"k"


def test_rsa_key_file_shapes_and_mode(tmp_path: Path) -> None:
    doc = generate_rsa_key_file("ns", "rsa", bits=2048, padding="oaep-sha384")
    assert set(doc) == {"type", "namespace", "name", "padding", "private_key"} and doc["type"] == "raw-rsa"
    private_path = tmp_path / "private.key"
    write_key_file(private_path, doc)
    assert _mode(private_path) == 0o600
    private = envelope.load_keyring(private_path)
    assert isinstance(private, envelope.RawRsaKeyring) and private.padding_name == "oaep-sha384"
    # the pinned encrypt-only shape: public_key instead of private_key
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(doc["private_key"].encode(), password=None)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    public_doc = {"type": "raw-rsa", "namespace": "ns", "name": "rsa", "padding": "oaep-sha384",
                  "public_key": public_pem}
    public_path = tmp_path / "public.key"
    write_key_file(public_path, public_doc)
    assert _mode(public_path) == 0o600
    public = envelope.load_keyring(public_path)
    message = envelope.encrypt(b"one way", keyring=public)
    assert envelope.decrypt(message, keyring=private).plaintext == b"one way"
    with pytest.raises(KeyringError):
        envelope.decrypt(message, keyring=public)


def test_write_key_file_never_replaces_silently(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = generate_aes_key_file("ns", "k")
    write_key_file(path, first)
    with pytest.raises(FileExistsError):
        write_key_file(path, generate_aes_key_file("ns", "k"))
    assert json.loads(path.read_text()) == first
    second = generate_aes_key_file("ns", "k")
    write_key_file(path, second, force=True)
    assert json.loads(path.read_text()) == second and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]  # no temporary file left behind


def _aes_doc() -> dict[str, Any]:
    return {"type": "raw-aes", "namespace": "ns", "name": "k", "key": base64.b64encode(bytes(32)).decode()}


def _rsa_doc() -> dict[str, Any]:
    return {"type": "raw-rsa", "namespace": "ns", "name": "r", "padding": "pkcs1",
            "private_key": rsa_private_pem().decode()}


MALFORMED = [
    # (description, document builder, the field the error must name)
    ("type missing", lambda: {k: v for k, v in _aes_doc().items() if k != "type"}, "type"),
    ("type unknown", lambda: {**_aes_doc(), "type": "raw-des"}, "type"),
    ("namespace missing", lambda: {k: v for k, v in _aes_doc().items() if k != "namespace"}, "namespace"),
    ("namespace not text", lambda: {**_aes_doc(), "namespace": 7}, "namespace"),
    ("namespace reserved", lambda: {**_aes_doc(), "namespace": "aws-kms"}, "namespace"),
    ("name empty", lambda: {**_aes_doc(), "name": ""}, "name"),
    ("key missing", lambda: {k: v for k, v in _aes_doc().items() if k != "key"}, "key"),
    ("key not base64", lambda: {**_aes_doc(), "key": "not base64!"}, "key"),
    ("key wrong length", lambda: {**_aes_doc(), "key": base64.b64encode(bytes(20)).decode()}, "key"),
    ("padding unknown", lambda: {**_rsa_doc(), "padding": "oaep-md5"}, "padding"),
    ("no rsa key", lambda: {k: v for k, v in _rsa_doc().items() if k != "private_key"}, "private_key"),
    ("private_key not PEM", lambda: {**_rsa_doc(), "private_key": "MIIB"}, "private_key"),
    ("private_key garbage PEM", lambda: {**_rsa_doc(), "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                                                       "-----END PRIVATE KEY-----\n"}, "private_key"),
    ("private_key is a public key", lambda: {**_rsa_doc(), "private_key": rsa_public_pem().decode()},
     "private_key"),
    ("public_key garbage", lambda: {k: v for k, v in {**_rsa_doc(), "public_key": "-----BEGIN PUBLIC KEY-----\n"
                                                      "AAAA\n-----END PUBLIC KEY-----\n"}.items()
                                    if k != "private_key"}, "public_key"),
]


@pytest.mark.parametrize("builder,field", [pytest.param(b, f, id=d) for d, b, f in MALFORMED])
def test_malformed_key_file_names_the_field(tmp_path: Path, builder: Any, field: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(json.dumps(builder()))
    with pytest.raises(KeyFileError) as info:
        envelope.load_keyring(path)
    assert field in str(info.value) and str(path) in str(info.value)
    assert rsa_private_pem().decode().splitlines()[1] not in str(info.value)  # no key material echoed


def test_unreadable_key_files(tmp_path: Path) -> None:
    for text in ("", "{", "[1, 2]", "null", "\"raw-aes\""):
        with pytest.raises(KeyFileError):
            parse_key_file(text)
    with pytest.raises(KeyFileError, match="does not exist"):
        envelope.load_keyring(tmp_path / "missing.key")
    with pytest.raises(KeyFileError, match="folder"):
        envelope.load_keyring(tmp_path)
    with pytest.raises(KeyFileError):
        parse_key_file(b"\xff\xfe not utf-8")
