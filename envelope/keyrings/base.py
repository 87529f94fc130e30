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


#: Characters of a provider ID or info that error messages show: a hostile message may carry 65,535-byte
#: fields (the header limit bounds the total, not one line of an error message).
SHOWN = 200


def _shown(text: str) -> str:
    if not text.isprintable():  # never pass terminal control sequences from a message through to an error
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def describe_edk(edk: EncryptedDataKey) -> str:
    """``provider-id/provider-info`` for error messages: the info as text when it is printable UTF-8, a raw
    AES key's name (section 7.2: name, UInt32 tag bits 128, UInt32 IV length 12, IV), else hex. Each part is
    cut to :data:`SHOWN` characters."""
    info = edk.provider_info
    if len(info) > 20 and info[-20:-12] == b"\x00\x00\x00\x80\x00\x00\x00\x0c":
        name = printable_info(info[:-20])
        if name != info[:-20].hex():
            return f"{_shown(edk.provider_id)}/{_shown(name)} (raw AES)"
    return f"{_shown(edk.provider_id)}/{_shown(printable_info(info))}"


def printable_info(info: bytes) -> str:
    """The info as text when it is printable UTF-8, else hex (what ``envelope inspect`` shows)."""
    try:
        text = info.decode("utf-8")
    except UnicodeDecodeError:
        return info.hex()
    return text if text.isprintable() else info.hex()
