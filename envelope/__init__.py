"""envelope: fast, safe streaming encryption in the AWS Encryption SDK message format.

    >>> import envelope
    >>> keyring = envelope.RawAesKeyring("envelope", "demo", bytes(32))
    >>> message = envelope.encrypt(b"secret", keyring=keyring, context={"app": "demo"})
    >>> envelope.decrypt(message, keyring=keyring, required_context={"app": "demo"}).plaintext
    b'secret'

Layers, bottom up: ``errors`` -> ``suites`` (data) -> ``format`` (pure bytes) -> ``crypto`` (KDF, commitment,
signatures) -> ``stream`` (the frame engine) -> ``keyrings`` -> ``materials`` / ``cache`` -> ``api``.
"""

from .api import (
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
from .cache import CacheStats, CachingMaterialsManager, LocalCache
from .errors import (
    AuthenticationError,
    ContextMismatchError,
    EnvelopeError,
    FormatError,
    KeyFileError,
    KeyringError,
    KmsError,
    PolicyError,
    TruncatedError,
    UsageError,
)
from .format import EncryptedDataKey, Header
from .keyrings import (
    DiscoveryFilter,
    Keyring,
    KmsDiscoveryKeyring,
    KmsKeyring,
    MultiKeyring,
    RawAesKeyring,
    RawRsaKeyring,
    load_keyring,
)
from .materials import DefaultMaterialsManager, MaterialsManager
from .suites import SUITES, AlgorithmSuite, CommitmentPolicy

__version__ = "0.1.0"

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
    "RawAesKeyring",
    "RawRsaKeyring",
    "StreamResult",
    "TruncatedError",
    "UsageError",
    "__version__",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "load_keyring",
    "read_header",
]
