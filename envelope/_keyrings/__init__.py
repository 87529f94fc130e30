"""Keyrings: wrap and unwrap data keys (section 7).

The KMS keyrings load on first use (PEP 562 ``__getattr__``), and boto3 only when a KMS keyring makes a
client, so local-key runs start fast.
"""

from typing import TYPE_CHECKING, Any

from .base import Keyring, describe_edk
from .keyfile import generate_aes_key_file, generate_rsa_key_file, load_keyring, parse_key_file, write_key_file
from .multi import MultiKeyring
from .raw_aes import RawAesKeyring
from .raw_rsa import RawRsaKeyring

if TYPE_CHECKING:
    from .kms import DiscoveryFilter, KmsDiscoveryKeyring, KmsKeyring

_LAZY = {"DiscoveryFilter", "KmsDiscoveryKeyring", "KmsKeyring"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import kms

        return getattr(kms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DiscoveryFilter",
    "Keyring",
    "KmsDiscoveryKeyring",
    "KmsKeyring",
    "MultiKeyring",
    "RawAesKeyring",
    "RawRsaKeyring",
    "describe_edk",
    "generate_aes_key_file",
    "generate_rsa_key_file",
    "load_keyring",
    "parse_key_file",
    "write_key_file",
]
