"""Message headers as JSON-ready dicts, and the JSON text of them, for ``inspect`` and ``--metadata-output``."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envelope import EncryptedDataKey, Header

__all__ = ["REQUIRED_CONTEXT_NOTE", "header_json", "header_summary", "json_text"]

#: What ``inspect`` can say about required encryption context (esdk-format.md section 6.4): nothing in the bytes
#: tells, because those pairs are authenticated by the header tag without being stored.
REQUIRED_CONTEXT_NOTE = ("unknown: pairs encrypted as required context (--required-context-key) are authenticated "
                         "but not stored, and nothing in the message says whether there are any; "
                         "encryption_context lists the stored pairs. If decrypt fails to authenticate, give the "
                         "required pairs with -c KEY=VALUE")


def _edk(edk: EncryptedDataKey) -> dict[str, Any]:
    from envelope import printable_info, readable_key_name

    raw = edk.provider_info
    info = printable_info(raw)
    described: dict[str, Any] = {"provider_id": edk.provider_id, "provider_info": info,
                                 "provider_info_encoding": "hex" if raw and info == raw.hex() else "utf-8"}
    name = readable_key_name(raw)
    if name is not None:  # a raw-AES EDK: show the key name too
        described["key_name"] = name
    return described


def header_summary(header: Header) -> dict[str, Any]:
    """Suite, message id, frame length, context and EDK providers: what ``--metadata-output`` records for each
    message."""
    return {
        "suite": {"id": header.suite.hex_id, "name": header.suite.name},
        "message_id": header.message_id.hex(),
        "frame_length": header.frame_length,
        "encryption_context": dict(header.encryption_context),
        "encrypted_data_keys": [_edk(edk) for edk in header.encrypted_data_keys],
    }


def header_json(header: Header) -> dict[str, Any]:
    """Everything ``inspect`` prints (esdk-format.md sections 1 and 7.1); no key is needed."""
    suite = header.suite
    return {
        "format_version": header.version,
        "suite": {"id": suite.hex_id, "name": suite.name, "committing": suite.committing, "signed": suite.signed},
        "message_id": header.message_id.hex(),
        "content_type": "framed" if header.framed else "non-framed",
        "frame_length": header.frame_length,
        "encryption_context": dict(header.encryption_context),
        "encrypted_data_keys": [
            {**_edk(edk), "ciphertext_length": len(edk.ciphertext)} for edk in header.encrypted_data_keys
        ],
        "required_context": REQUIRED_CONTEXT_NOTE,
    }


_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e\n]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return char if char.isprintable() else json.dumps(char)[1:-1]  # \u009b, or a surrogate pair


def json_text(value: Any, *, indent: int | None = None) -> str:
    """JSON that keeps readable text (``ensure_ascii=False``) but escapes every unprintable character as
    ``\\uXXXX``: C0 and C1 controls, bidirectional overrides, line separators. A context or provider id comes from
    the message, so a hostile one must not reach a terminal as escape sequences; the parsed JSON is the same."""
    return _NOT_PLAIN_ASCII.sub(_escape, json.dumps(value, indent=indent, ensure_ascii=False))
