"""Interoperability with the real aws-encryption-sdk package, both directions (issue 2, "Tests").

The ESDK uses its legacy RawMasterKey (the MPL keyrings are not installed); envelope uses its raw keyrings.

Covering design
---------------
Factors, per direction (envelope writes / ESDK reads, and ESDK writes / envelope reads):

* suite: the 11 ESDK suites (index s = 0..10)
* frame length: small, default (envelope.DEFAULT_FRAME_LENGTH), large (LARGE below; index j = 0..2). The ESDK
  writes only multiples of 128 bytes, so its small frame is 128; envelope writes 100, which the ESDK must read.
* plaintext size: 0, 1, F-1, F, F+1, 3F+7 for that row's frame length F (6 values)
* context: empty, several keys, non-ASCII (including a character outside the BMP, whose UTF-8 and UTF-16
  sort orders differ), a key starting with "\\x00" (4 values)
* wrapping key: raw AES 128/192/256, raw RSA pkcs1 and OAEP with SHA-1/256/384/512 (8 values)

Rows: for every suite s and frame length j (all 33 suite x frame pairs, in each direction)
    size    = SIZES[(s + 2j + d) % 6]      for each j, s runs over 11 >= 6 consecutive values: every
                                            (frame length, size) pair occurs, so every size value does
    context = CONTEXTS[(s + j + d) % 4]    every value, each suite with three of the four
    key     = KEYS[(3s + j + d) % 8]       3s + j runs over 0..32: every key occurs at least four times
with d = 0 for one direction and 1 for the other, so the two directions pair the values differently.
``test_the_matrix_covers_every_value`` checks these claims.

Non-framed messages (frame length 0) are written by the ESDK only (envelope never writes them) and read by
envelope: one per suite, rotating sizes, contexts and keys the same way.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import pytest
from aws_encryption_sdk.key_providers.raw import RawMasterKey, RawMasterKeyProvider
from helpers import (
    ALL_SUITE_IDS,
    READ_ANY,
    encrypt_policy,
    esdk_aes_key,
    esdk_decrypt,
    esdk_encrypt,
    esdk_rsa_key,
    rsa_private_pem,
)

import envelope
from envelope import _format as fmt
from envelope._stream import BATCH_BYTES
from envelope._suites import SUITES

# Larger than the default and than the frame engine's batch, so each frame is a batch of its own (another
# code path in envelope._stream); a multiple of 128 so that the ESDK can write it.
LARGE = max(4 * envelope.DEFAULT_FRAME_LENGTH, BATCH_BYTES + 128)
FRAMES = {"envelope": (100, envelope.DEFAULT_FRAME_LENGTH, LARGE),
          "esdk": (128, envelope.DEFAULT_FRAME_LENGTH, LARGE)}
SIZE_NAMES = ("0", "1", "F-1", "F", "F+1", "3F+7")
CONTEXTS: tuple[dict[str, str], ...] = (
    {},
    {"app": "interop", "stage": "test", "owner": "team-a", "region": "eu"},
    {"cl\u00e9": "v\u00e4lue", "\u30ad\u30fc": "\u5024", "\U0001f511": "\u2713", "\uffff": "max-bmp"},
    {"\x00key": "starts with NUL", "a": "b"},
)
KEYS = ("aes-128", "aes-192", "aes-256", "rsa-pkcs1", "rsa-oaep-sha1", "rsa-oaep-sha256", "rsa-oaep-sha384",
        "rsa-oaep-sha512")
NAMESPACE = "interop"
AES_KEYS = {bits: bytes((bits + i) % 256 for i in range(bits // 8)) for bits in (128, 192, 256)}


def _size(name: str, frame_length: int) -> int:
    return {"0": 0, "1": 1, "F-1": frame_length - 1, "F": frame_length, "F+1": frame_length + 1,
            "3F+7": 3 * frame_length + 7}[name]


@dataclass(frozen=True)
class Row:
    writer: str
    suite_id: int
    frame_length: int
    size_name: str
    context_index: int
    key: str

    @property
    def size(self) -> int:
        return _size(self.size_name, self.frame_length) if self.frame_length else int(self.size_name)

    def __str__(self) -> str:
        return (f"{self.writer}-0x{self.suite_id:04x}-F{self.frame_length}-{self.size_name}"
                f"-ctx{self.context_index}-{self.key}")


def _matrix(writer: str) -> list[Row]:
    d = 0 if writer == "envelope" else 1
    rows = []
    for s, suite_id in enumerate(ALL_SUITE_IDS):
        for j, frame_length in enumerate(FRAMES[writer]):
            rows.append(Row(writer, suite_id, frame_length, SIZE_NAMES[(s + 2 * j + d) % 6],
                            (s + j + d) % 4, KEYS[(3 * s + j + d) % 8]))
    return rows


NON_FRAMED_SIZES = ("0", "1", "1000", "70000")
NON_FRAMED = [Row("esdk", suite_id, 0, NON_FRAMED_SIZES[s % 4], (s + 2) % 4, KEYS[(s * 5) % 8])
              for s, suite_id in enumerate(ALL_SUITE_IDS)]
MATRIX = _matrix("envelope") + _matrix("esdk")


def test_the_matrix_covers_every_value() -> None:
    for writer in ("envelope", "esdk"):
        rows = [r for r in MATRIX if r.writer == writer]
        assert {(r.suite_id, r.frame_length) for r in rows} == {(s, f) for s in ALL_SUITE_IDS for f in FRAMES[writer]}
        assert {(r.frame_length, r.size_name) for r in rows} == {(f, n) for f in FRAMES[writer] for n in SIZE_NAMES}
        assert {r.context_index for r in rows} == set(range(len(CONTEXTS)))
        assert {r.key for r in rows} == set(KEYS)
    assert {r.suite_id for r in NON_FRAMED} == set(ALL_SUITE_IDS)
    assert {r.context_index for r in NON_FRAMED} == set(range(len(CONTEXTS)))
    assert {r.key.split("-")[0] for r in NON_FRAMED} == {"aes", "rsa"}


class _BothKeys(RawMasterKeyProvider):  # type: ignore[misc]
    """An ESDK raw master-key provider holding several wrapping keys, so it writes several EDKs."""

    provider_id = NAMESPACE

    def __init__(self, **kwargs: Any) -> None:
        self.wrapping_keys: dict[bytes, Any] = {}

    def _get_raw_key(self, key_id: bytes) -> Any:
        return self.wrapping_keys[key_id]


@functools.cache
def _keyrings(key: str) -> tuple[envelope.Keyring, RawMasterKey]:
    """The same wrapping key on both sides: (envelope keyring, ESDK master key), built once per key
    (loading an RSA PEM validates the key, which is slow)."""
    kind, _, detail = key.partition("-")
    name = f"key-{key}"
    if kind == "aes":
        material = AES_KEYS[int(detail)]
        return envelope.RawAesKeyring(NAMESPACE, name, material), esdk_aes_key(NAMESPACE, name, material)
    return (envelope.RawRsaKeyring(NAMESPACE, name, private_key=rsa_private_pem(), padding=detail),
            esdk_rsa_key(NAMESPACE, name, detail))


def _plaintext(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("row", [r for r in MATRIX if r.writer == "envelope"], ids=str)
def test_envelope_writes_esdk_reads(row: Row) -> None:
    keyring, master_key = _keyrings(row.key)
    plaintext = _plaintext(row.size)
    context = CONTEXTS[row.context_index]
    message = envelope.encrypt(plaintext, keyring=keyring, context=context, algorithm=row.suite_id,
                               frame_length=row.frame_length, commitment_policy=encrypt_policy(row.suite_id))
    decrypted, esdk_context = esdk_decrypt(message, master_key)
    assert decrypted == plaintext
    assert {k: v for k, v in esdk_context.items() if k != "aws-crypto-public-key"} == context
    assert ("aws-crypto-public-key" in esdk_context) == SUITES[row.suite_id].signed


@pytest.mark.parametrize("row", [r for r in MATRIX if r.writer == "esdk"] + NON_FRAMED, ids=str)
def test_esdk_writes_envelope_reads(row: Row) -> None:
    keyring, master_key = _keyrings(row.key)
    plaintext = _plaintext(row.size)
    context = CONTEXTS[row.context_index]
    message = esdk_encrypt(plaintext, master_key, row.suite_id, context=context, frame_length=row.frame_length)
    header, _, _ = fmt.parse_header(message)
    assert header.framed == (row.frame_length > 0) and header.frame_length == row.frame_length
    result = envelope.decrypt(message, keyring=keyring, commitment_policy=READ_ANY)
    assert result.plaintext == plaintext and result.suite.id == row.suite_id
    assert {k: v for k, v in result.context.items() if k != "aws-crypto-public-key"} == context
    # the ESDK's messages are canonical: parsing and re-serialising gives the same bytes
    assert fmt.serialize_message(fmt.parse_message(message)) == message


def test_the_esdk_writes_the_same_layout_as_envelope() -> None:
    """Same suite, frame length, context and keys: the two messages differ only in random fields."""
    keyring, master_key = _keyrings("aes-256")
    plaintext = os.urandom(3 * 128 + 7)
    ours = fmt.parse_message(envelope.encrypt(plaintext, keyring=keyring, context=CONTEXTS[2], frame_length=128,
                                              algorithm=0x0478))
    theirs = fmt.parse_message(esdk_encrypt(plaintext, master_key, 0x0478, context=CONTEXTS[2],
                                            frame_length=128))

    def shape(message: fmt.Message) -> Any:
        h = message.header
        edk = h.encrypted_data_keys[0]
        body = message.body
        assert isinstance(body, tuple)
        return (h.version, h.suite, dict(h.encryption_context), len(h.encrypted_data_keys), edk.provider_id,
                edk.provider_info[:-12], len(edk.ciphertext), h.content_type, h.frame_length,
                [(f.sequence_number, len(f.ciphertext), f.final, f.iv) for f in body])

    assert shape(ours) == shape(theirs)


def test_several_wrapping_keys_both_ways() -> None:
    """Messages with several EDKs: each side opens them with just one of the keys."""
    aes, aes_master = _keyrings("aes-256")
    rsa, rsa_master = _keyrings("rsa-oaep-sha256")
    plaintext = os.urandom(5000)
    message = envelope.encrypt(plaintext, keyring=envelope.MultiKeyring(aes, [rsa]), frame_length=1024)
    assert esdk_decrypt(message, rsa_master)[0] == plaintext
    assert esdk_decrypt(message, aes_master)[0] == plaintext
    provider = _BothKeys()
    provider.wrapping_keys = {mk.key_id: mk.config.wrapping_key for mk in (aes_master, rsa_master)}
    provider.add_master_keys_from_list(list(provider.wrapping_keys))
    message = esdk_encrypt(plaintext, provider, 0x0578, context={"k": "v"}, frame_length=1024)
    assert len(fmt.parse_header(message)[0].encrypted_data_keys) == 2
    for keyring in (rsa, aes, envelope.MultiKeyring(None, [rsa, aes])):
        assert envelope.decrypt(message, keyring=keyring).plaintext == plaintext


def test_largest_frame_lengths() -> None:
    """The frame-length field at its maximum: 2^31 - 1 (envelope) and 2^31 - 128 (the ESDK's largest)."""
    keyring, master_key = _keyrings("aes-128")
    message = envelope.encrypt(b"tiny", keyring=keyring, frame_length=2**31 - 1)
    assert esdk_decrypt(message, master_key)[0] == b"tiny"
    message = esdk_encrypt(b"tiny", master_key, 0x0478, context={}, frame_length=2**31 - 128)
    assert fmt.parse_header(message)[0].frame_length == 2**31 - 128
    assert envelope.decrypt(message, keyring=keyring, max_frame_length=2**31 - 1).plaintext == b"tiny"
