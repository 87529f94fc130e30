"""Raw AES keyring, wire-compatible with the ESDK's raw AES keyring and RawMasterKey (section 7.2)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._format import EncryptedDataKey, new_encrypted_data_key, serialize_context
from .._suites import AlgorithmSuite
from ..errors import KeyringError, UsageError
from .base import RAW_AES_INFO_TAIL, describe_edk, raw_aes_key_name

__all__ = ["RawAesKeyring"]



def check_namespace(namespace: str, name: str) -> None:
    if not namespace or not name:
        raise UsageError("a raw keyring needs a non-empty namespace and name")
    if namespace.startswith("aws-kms"):
        raise UsageError("the namespace 'aws-kms' is reserved for AWS KMS keyrings")


class RawAesKeyring:
    """Wraps data keys with a local 128, 192 or 256-bit AES key under AES-GCM, the context as AAD."""

    def __init__(self, namespace: str, name: str, key: bytes) -> None:
        check_namespace(namespace, name)
        if len(key) not in (16, 24, 32):
            raise UsageError(f"a raw AES wrapping key must be 16, 24 or 32 bytes, not {len(key)}")
        self.namespace = namespace
        self.name = name
        self._name_bytes = name.encode("utf-8")
        self._aead = AESGCM(bytes(key))
        self.key_bits = len(key) * 8

    def __repr__(self) -> str:  # never shows the key
        return f"RawAesKeyring({self.namespace!r}, {self.name!r}, <{self.key_bits}-bit key>)"

    def __str__(self) -> str:
        return f"raw-aes key {self.namespace}/{self.name}"

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        if data_key is None:  # one read of the system CSPRNG for the data key and the IV (one syscall less)
            fresh = os.urandom(suite.key_length + 12)
            data_key, iv = fresh[:-12], fresh[-12:]
        else:
            iv = os.urandom(12)
        ciphertext = self._aead.encrypt(iv, data_key, serialize_context(context))
        info = self._name_bytes + RAW_AES_INFO_TAIL + iv  # section 7.2
        return data_key, [new_encrypted_data_key(self.namespace, info, ciphertext)]

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        attempts = []
        unauthenticated = False
        aad: bytes | None = None
        for edk in edks:
            info = edk.provider_info
            if edk.provider_id != self.namespace or raw_aes_key_name(info) != self._name_bytes:
                continue
            if len(edk.ciphertext) != suite.key_length + 16:
                attempts.append(f"{describe_edk(edk)}: wrapped key has the wrong length")
                continue
            if aad is None:
                aad = serialize_context(context)
            try:
                return self._aead.decrypt(info[-12:], edk.ciphertext, aad)
            except InvalidTag:
                unauthenticated = True
                attempts.append(f"{describe_edk(edk)}: did not authenticate (wrong key or changed context)")
        if not attempts:
            attempts.append("no encrypted data key names this key")
        raise KeyringError(f"{self} could not open the data key", attempts, unauthenticated=unauthenticated)
