"""Keyrings: wrap and unwrap data keys (section 7). KMS keyrings import boto3 only when used."""

from .base import Keyring, describe_edk
from .keyfile import generate_aes_key_file, generate_rsa_key_file, load_keyring, parse_key_file, write_key_file
from .kms import DiscoveryFilter, KmsDiscoveryKeyring, KmsKeyring
from .multi import MultiKeyring
from .raw_aes import RawAesKeyring
from .raw_rsa import RawRsaKeyring

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
