"""envelope: fast, safe streaming encryption in the AWS Encryption SDK message format.

    >>> import envelope
    >>> keyring = envelope.RawAesKeyring("envelope", "demo", bytes(32))
    >>> message = envelope.encrypt(b"secret", keyring=keyring, context={"app": "demo"})
    >>> envelope.decrypt(message, keyring=keyring, required_context={"app": "demo"}).plaintext
    b'secret'

Layers, bottom up (private modules, this package exports what is public): ``errors`` -> ``suites`` (data) ->
``format`` (pure bytes, the only owner of the layout) -> ``crypto`` (KDF, commitment, signatures) -> ``stream``
(the frame engine) -> ``keyrings`` -> ``materials`` / ``cache`` -> ``api`` -> ``range`` / ``rewrap``; above them
the public modules ``envelope.s3`` (S3 objects), ``envelope.aws`` (SSM, Secrets Manager, ``load_env``) and
``envelope.batch`` (planning and running many inputs, on worker processes or Dask). docs/design.md has the map.
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
from ._keyrings.base import printable_info, readable_key_name
from ._keyrings.keyfile import (
    generate_aes_key_file,
    generate_rsa_key_file,
    key_file_text,
    public_key_file,
    write_key_file,
)
from ._materials import DefaultMaterialsManager, MaterialsManager
from ._range import RangeResult, decrypt_range
from ._rewrap import RewrapResult, rewrap_stream
from ._suites import SUITES, AlgorithmSuite, CommitmentPolicy, resolve_policy, resolve_suite
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
    from ._cache import DEFAULT_MAX_BYTES as DEFAULT_CACHE_MAX_BYTES
    from ._cache import DEFAULT_MAX_MESSAGES as DEFAULT_CACHE_MAX_MESSAGES
    from ._cache import CacheStats, CachingMaterialsManager, LocalCache
    from ._keyrings.kms import DiscoveryFilter, KmsDiscoveryKeyring, KmsKeyring

__version__ = "0.1.0"

# Loaded on first use (PEP 562) so that `import envelope` stays fast for local-key work: name -> (module,
# the name there).
_LAZY = {
    "CacheStats": ("_cache", "CacheStats"),
    "CachingMaterialsManager": ("_cache", "CachingMaterialsManager"),
    "LocalCache": ("_cache", "LocalCache"),
    #: the caching manager's defaults (section 8): messages and plaintext bytes one cached data key may protect
    "DEFAULT_CACHE_MAX_MESSAGES": ("_cache", "DEFAULT_MAX_MESSAGES"),
    "DEFAULT_CACHE_MAX_BYTES": ("_cache", "DEFAULT_MAX_BYTES"),
    "DiscoveryFilter": ("_keyrings.kms", "DiscoveryFilter"),
    "KmsDiscoveryKeyring": ("_keyrings.kms", "KmsDiscoveryKeyring"),
    "KmsKeyring": ("_keyrings.kms", "KmsKeyring"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "aws":  # the public submodule envelope.aws, loaded on first use like the KMS keyrings
        return importlib.import_module(f"{__name__}.aws")
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = found
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


def stream_threads(input_length: int | None) -> int | None:
    """The ``threads=`` that suits :func:`encrypt_stream` / :func:`decrypt_stream` for an input of
    ``input_length`` bytes: 0 when it is known to fit in one batch of the frame engine (a thread pipeline would
    only add its start-up), else None (the default)."""
    from ._stream import BATCH_BYTES

    return 0 if input_length is not None and input_length <= BATCH_BYTES else None

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_CACHE_MAX_MESSAGES",
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
    "RewrapResult",
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
    "generate_aes_key_file",
    "generate_rsa_key_file",
    "key_file_text",
    "load_keyring",
    "printable_info",
    "public_key_file",
    "read_header",
    "readable_key_name",
    "resolve_policy",
    "resolve_suite",
    "rewrap_stream",
    "stream_threads",
    "write_key_file",
]
