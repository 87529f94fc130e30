"""Key files: the JSON shape pinned by the CLI, read and written with mode 0600.

    {"type": "raw-aes", "namespace": "...", "name": "...", "key": "<base64 of 16, 24 or 32 bytes>"}
    {"type": "raw-rsa", "namespace": "...", "name": "...", "padding": "oaep-sha256",
     "private_key": "<PEM>"}            # or "public_key" for an encrypt-only file
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import KeyFileError, UsageError
from .raw_aes import RawAesKeyring
from .raw_rsa import PADDINGS, RawRsaKeyring

__all__ = ["generate_aes_key_file", "generate_rsa_key_file", "key_file_text", "load_keyring", "parse_key_file",
           "public_key_file", "write_key_file"]

DEFAULT_NAMESPACE = "envelope"


def _text(doc: dict[str, Any], field: str, where: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise KeyFileError(f"{where}: field {field!r} must be a non-empty string")
    return value


def parse_key_file(text: str | bytes, where: str = "key file") -> RawAesKeyring | RawRsaKeyring:
    """Build a keyring from key-file text. ``where`` names the file in error messages."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{where}: not a JSON key file") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"{where}: a key file is a JSON object")
    kind = doc.get("type")
    namespace = _text(doc, "namespace", where)
    name = _text(doc, "name", where)
    try:
        if kind == "raw-aes":
            encoded = _text(doc, "key", where)
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyFileError(f"{where}: field 'key' is not valid base64") from None
            if len(key) not in (16, 24, 32):
                raise KeyFileError(f"{where}: field 'key' must decode to 16, 24 or 32 bytes, not {len(key)}")
            return RawAesKeyring(namespace, name, key)
        if kind == "raw-rsa":
            padding = doc.get("padding", "oaep-sha256")
            if padding not in PADDINGS:
                raise KeyFileError(f"{where}: field 'padding' must be one of {', '.join(PADDINGS)}")
            private_pem, public_pem = doc.get("private_key"), doc.get("public_key")
            if private_pem is None and public_pem is None:
                raise KeyFileError(f"{where}: a raw-rsa key file needs 'private_key' or 'public_key'")
            for field, pem in (("private_key", private_pem), ("public_key", public_pem)):
                if pem is not None and (not isinstance(pem, str) or "-----BEGIN" not in pem):
                    raise KeyFileError(f"{where}: field {field!r} must be a PEM string")
            try:
                return RawRsaKeyring(namespace, name, padding=padding,
                                     private_key=private_pem.encode() if private_pem else None,
                                     public_key=public_pem.encode() if public_pem else None)
            except (ValueError, TypeError) as exc:
                field = "private_key" if private_pem else "public_key"
                if isinstance(exc, UsageError):
                    raise KeyFileError(f"{where}: {exc}") from None
                raise KeyFileError(f"{where}: field {field!r} is not a readable RSA key in PEM") from None
    except UsageError as exc:
        raise KeyFileError(f"{where}: {exc}") from None
    raise KeyFileError(f"{where}: field 'type' must be 'raw-aes' or 'raw-rsa'")


def load_keyring(path: str | os.PathLike[str]) -> RawAesKeyring | RawRsaKeyring:
    """Load a key file (see the module docstring for the shape)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {str(p)!r} is a folder") from None
    except OSError as exc:
        raise KeyFileError(f"key file {str(p)!r} cannot be read: {exc.strerror}") from None
    return parse_key_file(data, f"key file {str(p)!r}")


def generate_aes_key_file(namespace: str = DEFAULT_NAMESPACE, name: str | None = None, bits: int = 256
                          ) -> dict[str, str]:
    """A new raw-AES key file (the dict :func:`write_key_file` writes), with a random key of ``bits`` bits."""
    if bits not in (128, 192, 256):
        raise UsageError("AES keys are 128, 192 or 256 bits")
    name = name or f"key-{secrets.token_hex(4)}"
    RawAesKeyring(namespace, name, bytes(bits // 8))  # validates namespace and name
    return {"type": "raw-aes", "namespace": namespace, "name": name,
            "key": base64.b64encode(secrets.token_bytes(bits // 8)).decode()}


def generate_rsa_key_file(namespace: str = DEFAULT_NAMESPACE, name: str | None = None, bits: int = 4096,
                          padding: str = "oaep-sha256") -> dict[str, str]:
    """A new raw-RSA key file holding a new private key of ``bits`` bits (PKCS#8 PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if bits < 2048 or bits > 16384:
        raise UsageError("RSA keys are between 2048 and 16384 bits")
    name = name or f"key-{secrets.token_hex(4)}"
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    RawRsaKeyring(namespace, name, private_key=private, padding=padding)  # validates the rest
    return {"type": "raw-rsa", "namespace": namespace, "name": name, "padding": padding, "private_key": pem}


def public_key_file(doc: dict[str, str]) -> dict[str, str]:
    """The encrypt-only key file of a raw-RSA key file: the same namespace, name and padding, and the public
    key instead of the private one (a machine holding it can encrypt but never decrypt)."""
    keyring = parse_key_file(json.dumps(doc))
    if not isinstance(keyring, RawRsaKeyring):
        raise UsageError("only a raw-rsa key file has a public half")
    return {"type": "raw-rsa", "namespace": doc["namespace"], "name": doc["name"],
            "padding": doc.get("padding", "oaep-sha256"), "public_key": keyring.public_key_pem()}


def key_file_text(doc: dict[str, str]) -> str:
    """The text of a key file, as :func:`write_key_file` writes it."""
    return json.dumps(doc, indent=2) + "\n"


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_key_file(path: str | os.PathLike[str], doc: dict[str, str], *, force: bool = False,
                   mode: int = 0o600) -> None:
    """Write a key file with mode 0600 (``mode``: 0644 suits a public-only file). Refuses to replace an
    existing file unless ``force``.

    With ``force`` the new file is written beside the old one and renamed over it, so a failure leaves the
    old key intact.
    """
    target = Path(path)
    data = key_file_text(doc).encode()
    if not force:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, mode)
            _write_fully(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)
            raise
        os.close(fd)
        return
    if target.exists() and not target.is_file():
        raise KeyFileError(f"{str(target)!r} exists and is not a regular file; refusing to replace it")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
