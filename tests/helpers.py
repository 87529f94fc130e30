"""Shared helpers for the core tests: ESDK master-key builders, a static test keyring, message layout.

Nothing here is a fixture; test modules import what they need (``from helpers import ...``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.base import MasterKeyProvider
from aws_encryption_sdk.key_providers.raw import RawMasterKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import envelope
from envelope._format import EncryptedDataKey
from envelope._suites import SUITES, AlgorithmSuite
from envelope.errors import KeyringError

ALL_SUITE_IDS = sorted(SUITES)
COMMITTING_IDS = [s for s in ALL_SUITE_IDS if SUITES[s].committing]
SIGNED_IDS = [s for s in ALL_SUITE_IDS if SUITES[s].signed]
ESDK_ALGORITHMS = {a.algorithm_id: a for a in Algorithm}

#: the commitment policy a reader needs for every suite (v1 suites do not commit), section 2.2
READ_ANY = "require-encrypt-allow-decrypt"

RSA_PADDINGS = ("pkcs1", "oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512")
_ESDK_RSA = {
    "pkcs1": WrappingAlgorithm.RSA_PKCS1,
    "oaep-sha1": WrappingAlgorithm.RSA_OAEP_SHA1_MGF1,
    "oaep-sha256": WrappingAlgorithm.RSA_OAEP_SHA256_MGF1,
    "oaep-sha384": WrappingAlgorithm.RSA_OAEP_SHA384_MGF1,
    "oaep-sha512": WrappingAlgorithm.RSA_OAEP_SHA512_MGF1,
}
_ESDK_AES = {
    16: WrappingAlgorithm.AES_128_GCM_IV12_TAG16_NO_PADDING,
    24: WrappingAlgorithm.AES_192_GCM_IV12_TAG16_NO_PADDING,
    32: WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
}


def encrypt_policy(suite_id: int) -> str:
    """The commitment policy that lets ``suite_id`` be written (section 2.2)."""
    return "require-encrypt-require-decrypt" if SUITES[suite_id].committing else "forbid-encrypt-allow-decrypt"


# ---------------------------------------------------------------------------------------------------------
# RSA keys (2048-bit: generating 4096-bit keys would dominate the test time)


def rsa_private_pem(index: int = 0) -> bytes:
    """A PKCS#8 PEM RSA-2048 private key, generated once per test session per ``index``."""
    return _rsa_private_pem(index)


@functools.cache
def _rsa_private_pem(index: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def rsa_public_pem(index: int = 0) -> bytes:
    private = serialization.load_pem_private_key(rsa_private_pem(index), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------------------------------------------------
# aws-encryption-sdk (the oracle): legacy RawMasterKey, the MPL keyrings are not installed


def esdk_aes_key(namespace: str, name: str, key: bytes) -> RawMasterKey:
    return RawMasterKey(provider_id=namespace, key_id=name.encode(), wrapping_key=WrappingKey(
        wrapping_algorithm=_ESDK_AES[len(key)], wrapping_key=key, wrapping_key_type=EncryptionKeyType.SYMMETRIC))


def esdk_rsa_key(namespace: str, name: str, padding: str, pem: bytes | None = None) -> RawMasterKey:
    return RawMasterKey(provider_id=namespace, key_id=name.encode(), wrapping_key=WrappingKey(
        wrapping_algorithm=_ESDK_RSA[padding], wrapping_key=pem or rsa_private_pem(),
        wrapping_key_type=EncryptionKeyType.PRIVATE))


def esdk_client(policy: str = READ_ANY) -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy[policy.upper().replace("-", "_")])


def esdk_encrypt(plaintext: bytes, master_key: MasterKeyProvider, suite_id: int, *, context: Mapping[str, str],
                 frame_length: int) -> bytes:
    client = esdk_client(encrypt_policy(suite_id))
    ciphertext, _ = client.encrypt(source=plaintext, key_provider=master_key,
                                   algorithm=ESDK_ALGORITHMS[suite_id], encryption_context=dict(context),
                                   frame_length=frame_length)
    return bytes(ciphertext)


def esdk_decrypt(message: bytes, master_key: MasterKeyProvider) -> tuple[bytes, dict[str, str]]:
    plaintext, header = esdk_client(READ_ANY).decrypt(source=message, key_provider=master_key)
    return bytes(plaintext), dict(header.encryption_context)


# ---------------------------------------------------------------------------------------------------------
# keyrings for tests


STATIC_EDK = EncryptedDataKey("static", b"static-info", b"static-ciphertext")


@dataclass
class StaticKeyring:
    """Returns a fixed data key: for the known-answer vectors, whose EDKs need AWS KMS or a test provider.

    ``provider_id`` (when set) must match one of the message's EDKs, so the keyring still "owns" something.
    ``calls`` counts wrap and unwrap calls, to prove a check happened before any keyring was used.
    """

    data_key: bytes
    provider_id: str | None = None
    edk: EncryptedDataKey = STATIC_EDK
    calls: list[str] = field(default_factory=list)

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        self.calls.append("wrap")
        return self.data_key, [self.edk]

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        self.calls.append("unwrap")
        if self.provider_id is not None and not any(e.provider_id == self.provider_id for e in edks):
            raise KeyringError("static test keyring", [f"no EDK from provider {self.provider_id}"])
        return self.data_key


@dataclass
class CountingKeyring:
    """Wraps a real keyring and records every call."""

    inner: envelope.Keyring
    calls: list[str] = field(default_factory=list)

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        self.calls.append("wrap")
        return self.inner.wrap(suite, context, data_key)

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        self.calls.append("unwrap")
        return self.inner.unwrap(suite, context, edks)


# ---------------------------------------------------------------------------------------------------------
# byte-level helpers


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def replace_at(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def field_map(message: bytes) -> list[tuple[str, int, int]]:
    """Walk a well-formed message and list every field as (name, start, end), in order.

    An implementation of sections 1, 3, 4 and 7.1 written independently of ``envelope._format``, used to
    check the field names and offsets that the parser reports. The AAD is one field ("encryption context").
    """
    fields: list[tuple[str, int, int]] = []
    pos = 0

    def take(name: str, n: int) -> bytes:
        nonlocal pos
        fields.append((name, pos, pos + n))
        pos += n
        return message[pos - n:pos]

    def u(name: str, n: int) -> int:
        return int.from_bytes(take(name, n), "big")

    version = u("version", 1)
    if version == 1:
        take("type", 1)
    suite = SUITES[u("algorithm suite ID", 2)]
    take("message ID", suite.message_id_length)
    take("encryption context", u("AAD length", 2))
    for _ in range(u("encrypted data key count", 2)):
        take("key provider ID", u("key provider ID length", 2))
        take("key provider info", u("key provider info length", 2))
        take("encrypted data key", u("encrypted data key length", 2))
    framed = u("content type", 1) == 2
    if version == 1:
        take("reserved", 4)
        take("IV length", 1)
    frame_length = u("frame length", 4)
    if version == 2:
        take("commitment key", 32)
    else:
        take("header IV", 12)
    take("header authentication tag", 16)
    if framed:
        while True:
            if u("sequence number", 4) == 0xFFFFFFFF:
                take("final frame sequence number", 4)
                take("final frame IV", 12)
                take("final frame content", u("final frame content length", 4))
                take("final frame tag", 16)
                break
            take("frame IV", 12)
            take("frame content", frame_length)
            take("frame tag", 16)
    else:
        take("body IV", 12)
        take("body content", u("body content length", 8))
        take("body tag", 16)
    if suite.signed:
        take("signature", u("signature length", 2))
    assert pos == len(message), "field_map walked past or short of the message"
    return [f for f in fields if f[2] > f[1]]


def field_at(fields: list[tuple[str, int, int]], name: str, occurrence: int = 0) -> tuple[int, int]:
    """(start, end) of the ``occurrence``-th field called ``name``."""
    found = [(s, e) for n, s, e in fields if n == name]
    return found[occurrence]


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


# ---------------------------------------------------------------------------------------------------------
# a minimal writer built from the format and crypto layers, for messages envelope.encrypt never produces


def build_message(suite: AlgorithmSuite, data_key: bytes, chunks: Sequence[bytes], *,
                  context: Mapping[str, str] | None = None, frame_length: int | None = None,
                  header_iv: bytes = bytes(12), iv_for: Callable[[int], bytes] | None = None,
                  non_framed: bool = False, unsorted_context: bool = False,
                  edks: Sequence[EncryptedDataKey] = (STATIC_EDK,),
                  keyring: envelope.Keyring | None = None, public_key: str | None = None) -> bytes:
    """A message whose body holds one frame per chunk, the last chunk in the final frame.

    ``iv_for(sequence_number)`` picks frame IVs (default: the writer's 8 zero bytes || UInt32(seq));
    ``header_iv`` is stored in a v1 header; ``unsorted_context`` writes the AAD entries in reverse order;
    ``non_framed`` writes the one chunk as a non-framed body (section 3.2). Signed suites get a fresh key.
    With ``keyring``, the data key is wrapped by it (for the final context) instead of using ``edks``.
    ``public_key`` replaces the aws-crypto-public-key value of a signed suite (to write a broken one).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from envelope import _crypto as crypto
    from fuzz.vectors import write_message

    context = dict(context or {})
    signing_key = None
    if suite.signed:
        signing_key = ec.generate_private_key(ec.SECP256R1() if suite.curve == "p256" else ec.SECP384R1())
        context[crypto.PUBLIC_KEY_CONTEXT_KEY] = public_key or crypto.encode_public_key(signing_key.public_key())
    if keyring is not None:
        edks = keyring.wrap(suite, context, data_key)[1]
    sign = None
    if signing_key is not None:
        hash_type = hashes.SHA256 if suite.curve == "p256" else hashes.SHA384

        def sign(data: bytes) -> bytes:  # a plain ECDSA signature, of whatever DER length it comes out
            digest = hashlib.new(hash_type.name, data).digest()
            return signing_key.sign(digest, ec.ECDSA(Prehashed(hash_type())))

    return write_message(suite, data_key, context, edks, chunks, frame_length=frame_length, header_iv=header_iv,
                         iv_for=iv_for, non_framed=non_framed, unsorted_context=unsorted_context, sign=sign)


# ---------------------------------------------------------------------------------------------------------
# the CLI's temporary outputs


def partial_output_bytes(pid: int, folder: Path) -> int:
    """Bytes a running CLI process has written so far to a temporary output in ``folder``: a hidden named
    ``.envelope-tmp`` file, or an unnamed one (Linux O_TMPFILE), found among the process's open descriptors
    (its /proc link reads ``FOLDER/#INODE (deleted)``)."""
    sizes = [p.stat().st_size for p in folder.iterdir() if p.name.endswith(".envelope-tmp")]
    prefix = str(folder.resolve()) + os.sep
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone
        entries = []
    for entry in entries:
        try:
            target = os.readlink(entry)
            if target.startswith(prefix) and target.endswith(" (deleted)"):
                sizes.append(entry.stat().st_size)
        except OSError:  # closed meanwhile
            pass
    return max(sizes, default=0)


def unnamed_files_work(folder: Path) -> bool:
    """Whether ``folder``'s file system has unnamed files (O_TMPFILE), which the CLI then uses for outputs."""
    try:
        os.close(os.open(folder, os.O_RDWR | os.O_TMPFILE, 0o600))
    except (OSError, AttributeError):
        return False
    return True
