"""Raw RSA keyring, wire-compatible with the ESDK's raw RSA keyring and RawMasterKey (section 7.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa

from .._format import EncryptedDataKey
from .._suites import AlgorithmSuite
from ..errors import KeyringError, UsageError
from .base import describe_edk
from .raw_aes import check_namespace

__all__ = ["PADDINGS", "RawRsaKeyring"]

PADDINGS = ("pkcs1", "oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512")
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "oaep-sha1": hashes.SHA1,
    "oaep-sha256": hashes.SHA256,
    "oaep-sha384": hashes.SHA384,
    "oaep-sha512": hashes.SHA512,
}


def _padding(name: str) -> asym_padding.AsymmetricPadding:
    if name == "pkcs1":
        return asym_padding.PKCS1v15()
    hash_type = _OAEP_HASHES.get(name)
    if hash_type is None:
        raise UsageError(f"unknown RSA padding {name!r} (one of {', '.join(PADDINGS)})")
    return asym_padding.OAEP(mgf=asym_padding.MGF1(hash_type()), algorithm=hash_type(), label=None)


class RawRsaKeyring:
    """Wraps data keys with an RSA public key; unwraps with the private key (PEM or key objects)."""

    def __init__(self, namespace: str, name: str, *, private_key: rsa.RSAPrivateKey | bytes | None = None,
                 public_key: rsa.RSAPublicKey | bytes | None = None, padding: str = "oaep-sha256") -> None:
        check_namespace(namespace, name)
        self.namespace = namespace
        self.name = name
        self.padding_name = padding
        self._padding = _padding(padding)
        # serialization is imported where a PEM key is loaded: it pulls in every key format (SSH, DH, DSA, ...),
        # ~3 ms of start-up that AES-key runs skip
        if isinstance(private_key, bytes):
            from cryptography.hazmat.primitives import serialization

            try:
                loaded = serialization.load_pem_private_key(private_key, password=None)
            except TypeError:  # "Password was not given but private key is encrypted"
                raise UsageError("private_key is passphrase-protected (an encrypted PEM), which envelope cannot "
                                 "read: store it unencrypted, e.g. openssl pkey -in KEY.pem -out PLAIN.pem") from None
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise UsageError("private_key is not an RSA key")
            private_key = loaded
        if isinstance(public_key, bytes):
            from cryptography.hazmat.primitives import serialization

            loaded_pub = serialization.load_pem_public_key(public_key)
            if not isinstance(loaded_pub, rsa.RSAPublicKey):
                raise UsageError("public_key is not an RSA key")
            public_key = loaded_pub
        if private_key is None and public_key is None:
            raise UsageError("a raw RSA keyring needs a private key or a public key")
        self._private = private_key
        self._public = public_key if public_key is not None else private_key.public_key()  # type: ignore[union-attr]

    @property
    def has_private_key(self) -> bool:
        """False for an encrypt-only keyring (a public key only): it cannot unwrap data keys."""
        return self._private is not None

    def public_key_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo): what an encrypt-only key file holds."""
        from cryptography.hazmat.primitives import serialization

        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def __repr__(self) -> str:
        kind = "private" if self._private is not None else "public"
        return f"RawRsaKeyring({self.namespace!r}, {self.name!r}, <{kind} key>, padding={self.padding_name!r})"

    def __str__(self) -> str:
        return f"raw-rsa key {self.namespace}/{self.name}"

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        import os

        if data_key is None:
            data_key = os.urandom(suite.key_length)
        ciphertext = self._public.encrypt(data_key, self._padding)
        return data_key, [EncryptedDataKey(self.namespace, self.name.encode("utf-8"), ciphertext)]

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        attempts = []
        name = self.name.encode("utf-8")
        for edk in edks:
            if edk.provider_id != self.namespace or edk.provider_info != name:
                continue
            if self._private is None:
                attempts.append(f"{describe_edk(edk)}: this key file holds only the public key")
                continue
            try:
                data_key = self._private.decrypt(edk.ciphertext, self._padding)
            except ValueError:
                attempts.append(f"{describe_edk(edk)}: RSA decryption failed (wrong key or padding)")
                continue
            if suite.data_key_error(data_key) is not None:
                attempts.append(f"{describe_edk(edk)}: unwrapped key has the wrong length")
                continue
            return data_key
        if not attempts:
            attempts.append("no encrypted data key names this key")
        raise KeyringError(f"{self} could not open the data key", attempts)
