"""The keyring interface (section 7): wrap a data key for a context, unwrap one of a list of EDKs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..format import EncryptedDataKey
from ..suites import AlgorithmSuite

__all__ = ["Keyring", "describe_edk"]


@runtime_checkable
class Keyring(Protocol):
    """Two methods, as in age's Recipient / Identity.

    ``wrap`` returns the data key (generated when ``data_key`` is None) and the EDKs this keyring made.
    ``unwrap`` returns the plaintext data key from one of ``edks`` or raises
    :class:`~envelope.errors.KeyringError` whose ``attempts`` say what was tried and why it failed.
    """

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]: ...

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes: ...


def describe_edk(edk: EncryptedDataKey) -> str:
    """``provider-id/provider-info`` with the info as text when it is printable UTF-8, else hex."""
    return f"{edk.provider_id}/{printable_info(edk.provider_info)}"


def printable_info(info: bytes) -> str:
    try:
        text = info.decode("utf-8")
    except UnicodeDecodeError:
        return info.hex()
    return text if text.isprintable() else info.hex()
