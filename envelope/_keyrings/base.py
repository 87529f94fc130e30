"""The keyring interface (section 7): wrap a data key for a context, unwrap one of a list of EDKs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from .._format import EncryptedDataKey
from .._suites import AlgorithmSuite

__all__ = ["Keyring", "describe_edk", "printable_info", "readable_key_name"]


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


#: Section 7.2: raw-AES provider info is the key name, UInt32 tag bits (128), UInt32 IV length (12), the IV.
RAW_AES_INFO_TAIL = b"\x00\x00\x00\x80\x00\x00\x00\x0c"


def raw_aes_key_name(info: bytes) -> bytes | None:
    """The key name of raw-AES provider info (parsed from the end: the name has no length prefix), else None."""
    if len(info) >= 20 and info[-20:-12] == RAW_AES_INFO_TAIL:
        return info[:-20]
    return None


def readable_key_name(info: bytes) -> str | None:
    """A raw-AES key name as text, when the info is raw-AES info and the name is printable UTF-8."""
    name = raw_aes_key_name(info)
    if not name:
        return None
    text = printable_info(name)
    return None if text == name.hex() else text


def describe_edk(edk: EncryptedDataKey) -> str:
    """``provider-id/provider-info`` for error messages: a raw AES key's name, else the info as text when it
    is printable UTF-8, else hex. Each part is cut to :data:`SHOWN` characters."""
    name = readable_key_name(edk.provider_info)
    if name is not None:
        return f"{_shown(edk.provider_id)}/{_shown(name)} (raw AES)"
    return f"{_shown(edk.provider_id)}/{_shown(printable_info(edk.provider_info))}"


def printable_info(info: bytes) -> str:
    """The info as text when it is printable UTF-8, else hex (what ``envelope inspect`` shows)."""
    try:
        text = info.decode("utf-8")
    except UnicodeDecodeError:
        return info.hex()
    return text if text.isprintable() else info.hex()
