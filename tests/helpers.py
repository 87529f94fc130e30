"""Shared helpers for the core tests: ESDK master-key builders, test keyrings, RSA keys, the CLI's temporary
outputs. Writing and changing messages is in the ``testkit`` package (shared with fuzz/ and benchmarks/).

Nothing here is a fixture; test modules import what they need (``from helpers import ...``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
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
from testkit.messages import STATIC_EDK

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


def write_tree(root: Path, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Write ``files`` (relative path -> content) below ``root``; returns them."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return dict(files)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root``: relative path -> content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
