"""Secret bundles: the decrypted text of a message that holds many variables (``envelope exec``).

Two shapes, told apart by the first character that is not white space: ``{`` is JSON, anything else dotenv.

* **JSON**: one object. Nested objects flatten with ``__`` (``{"DB": {"HOST": "h"}}`` -> ``DB__HOST=h``);
  strings are taken as they are, other values (numbers, ``true``, ``null``, lists) as their compact JSON text.
* **dotenv**: ``NAME=VALUE`` lines; blank lines and lines starting with ``#`` are skipped, an ``export `` prefix
  is allowed. A value in double quotes may span lines and knows the escapes ``\\n \\r \\t \\" \\\\``; single quotes
  take the text literally; an unquoted value ends at `` #`` (a comment) and is stripped. No ``${...}``
  interpolation: what is in the bundle is what the variable gets.

Names must be valid environment variable names (``[A-Za-z_][A-Za-z0-9_]*``) and appear once per bundle;
values may not hold NUL. Errors are :class:`~envelope.errors.FormatError` naming the line or key, never a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import FormatError

__all__ = ["NAME", "flatten", "parse_bundle"]

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SEPARATOR = "__"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _check(name: str, value: str, where: str, into: Mapping[str, str]) -> None:
    if not NAME.fullmatch(name):
        raise FormatError("bundle", 0, f"{where}: {name[:80]!r} is not a valid environment variable name "
                                       "(letters, digits and _, not starting with a digit)")
    if "\0" in value:
        raise FormatError("bundle", 0, f"{where}: the value of {name} holds a NUL character, which an "
                                       "environment variable cannot")
    if name in into:
        raise FormatError("bundle", 0, f"{where}: {name} is given twice")


def flatten(document: Mapping[str, Any], *, separator: str = SEPARATOR, where: str = "bundle") -> dict[str, str]:
    """A JSON object -> flat NAME -> text (nested keys joined with ``separator``)."""
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{separator}{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                if not value:
                    continue
                walk(value, name)
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            _check(name, text, where, out)
            out[name] = text

    walk(document, "")
    return out


def _dotenv(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip()
        i += 1
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, equals, rest = line.partition("=")
        name = name.strip()
        if not equals:
            raise FormatError("bundle", 0, f"{where}, line {number}: expected NAME=VALUE")
        rest = rest.lstrip()
        if rest.startswith('"'):
            body, value_parts, closed = rest[1:], [], False
            while True:
                j, chunk = 0, []
                while j < len(body):
                    c = body[j]
                    if c == "\\" and j + 1 < len(body) and body[j + 1] in _ESCAPES:
                        chunk.append(_ESCAPES[body[j + 1]])
                        j += 2
                        continue
                    if c == '"':
                        closed = True
                        break
                    chunk.append(c)
                    j += 1
                value_parts.append("".join(chunk))
                if closed:
                    tail = body[j + 1:].strip()
                    if tail and not tail.startswith("#"):
                        raise FormatError("bundle", 0, f"{where}, line {number}: text after the closing quote")
                    break
                if i >= len(lines):
                    raise FormatError("bundle", 0, f"{where}, line {number}: the double quote is never closed")
                body = lines[i]
                i += 1
                value_parts.append("\n")
            value = "".join(value_parts)
        elif rest.startswith("'"):
            end = rest.find("'", 1)
            if end < 0:
                raise FormatError("bundle", 0, f"{where}, line {number}: the single quote is never closed")
            tail = rest[end + 1:].strip()
            if tail and not tail.startswith("#"):
                raise FormatError("bundle", 0, f"{where}, line {number}: text after the closing quote")
            value = rest[1:end]
        else:
            comment = rest.find(" #")
            value = (rest[:comment] if comment >= 0 else rest).strip()
        _check(name, value, f"{where}, line {number}", out)
        out[name] = value
    return out


def parse_bundle(text: str | bytes, *, where: str = "bundle") -> dict[str, str]:
    """Decrypted bundle text (JSON or dotenv, see the module docstring) -> NAME -> value."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("bundle", 0, f"{where} is not UTF-8 text (a bundle is JSON or dotenv)") from None
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            position = getattr(exc, "pos", None)
            at = f" at character {position}" if isinstance(position, int) else ""
            raise FormatError("bundle", 0, f"{where} is not valid JSON{at}") from None
        if not isinstance(document, dict):
            raise FormatError("bundle", 0, f"{where}: a JSON bundle is one object")
        return flatten(document, where=where)
    return _dotenv(text, where)
