"""envelope: fast, safe streaming encryption in the AWS Encryption SDK message format.

    >>> import envelope
    >>> keyring = envelope.RawAesKeyring("envelope", "demo", bytes(32))
    >>> message = envelope.encrypt(b"secret", keyring=keyring, context={"app": "demo"})
    >>> envelope.decrypt(message, keyring=keyring, required_context={"app": "demo"}).plaintext
    b'secret'

Layers, bottom up: ``errors`` -> ``suites`` (data) -> ``format`` (pure bytes) -> ``crypto`` (KDF, commitment,
signatures) -> ``stream`` (the frame engine) -> ``keyrings`` -> ``materials`` / ``cache`` -> ``api``.
"""

from typing import TYPE_CHECKING, Any

from ._api import (
    DEFAULT_FRAME_LENGTH,
    DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
    DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_MAX_HEADER_LENGTH,
    DecryptResult,
    StreamResult,
    decrypt,
    decrypt_stream,
    encrypt,
    encrypt_stream,
    read_header,
)
from ._format import EncryptedDataKey, Header
from ._keyrings import (
    Keyring,
    MultiKeyring,
    RawAesKeyring,
    RawRsaKeyring,
    load_keyring,
)
from ._materials import DefaultMaterialsManager, MaterialsManager
from ._range import RangeResult, decrypt_range
from ._suites import SUITES, AlgorithmSuite, CommitmentPolicy
from .errors import (
    AuthenticationError,
    ContextMismatchError,
    EnvelopeError,
    FormatError,
    KeyFileError,
    KeyringError,
    KmsError,
    PolicyError,
    StorageError,
    TruncatedError,
    UsageError,
)

if TYPE_CHECKING:
    from ._cache import CacheStats, CachingMaterialsManager, LocalCache
    from ._keyrings.kms import DiscoveryFilter, KmsDiscoveryKeyring, KmsKeyring

__version__ = "0.1.0"

# Loaded on first use (PEP 562) so that `import envelope` stays fast for local-key work.
_LAZY = {
    "CacheStats": "_cache",
    "CachingMaterialsManager": "_cache",
    "LocalCache": "_cache",
    "DiscoveryFilter": "_keyrings.kms",
    "KmsDiscoveryKeyring": "_keyrings.kms",
    "KmsKeyring": "_keyrings.kms",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

__all__ = [
    "DEFAULT_FRAME_LENGTH",
    "DEFAULT_MAX_ENCRYPTED_DATA_KEYS",
    "DEFAULT_MAX_FRAME_LENGTH",
    "DEFAULT_MAX_HEADER_LENGTH",
    "SUITES",
    "AlgorithmSuite",
    "AuthenticationError",
    "CacheStats",
    "CachingMaterialsManager",
    "CommitmentPolicy",
    "ContextMismatchError",
    "DecryptResult",
    "DefaultMaterialsManager",
    "DiscoveryFilter",
    "EncryptedDataKey",
    "EnvelopeError",
    "FormatError",
    "Header",
    "KeyFileError",
    "Keyring",
    "KeyringError",
    "KmsDiscoveryKeyring",
    "KmsError",
    "KmsKeyring",
    "LocalCache",
    "MaterialsManager",
    "MultiKeyring",
    "PolicyError",
    "RangeResult",
    "RawAesKeyring",
    "RawRsaKeyring",
    "StorageError",
    "StreamResult",
    "TruncatedError",
    "UsageError",
    "__version__",
    "decrypt",
    "decrypt_range",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "load_keyring",
    "read_header",
]
