"""Key SPEC resolution, in one place: ``--key SPEC`` options (and later ``--discovery``) -> one keyring.

    file:PATH      a key file (README "Key files"); a bare PATH that exists works too
    kms:ID         an AWS KMS key (key ARN, key id, alias/NAME or alias ARN) -- added by the KMS issue

Several ``--key`` options make a multi-keyring: the first generates (or, on decrypt, is tried first), the others
wrap the data key too (or are tried in order). To add a scheme, add a resolver to ``_SCHEMES``; options that
belong to a scheme (region, grant tokens, discovery filter) go into :class:`KeyOptions`, which is passed to
every resolver and must stay picklable (``--workers`` rebuilds the keyring in each worker process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from envelope import Keyring

__all__ = ["KeyOptions", "Purpose", "build_keyring"]

Purpose = Literal["encrypt", "decrypt"]


@dataclass(frozen=True)
class KeyOptions:
    """Everything the command line says about keys."""

    specs: tuple[str, ...] = ()
    discovery: bool = False


def _file_keyring(path: str, options: KeyOptions, purpose: Purpose) -> Keyring:
    from envelope import KeyFileError, load_keyring

    if not path:
        raise KeyFileError("key spec 'file:' needs a path (file:PATH)")
    return load_keyring(path)


def _kms_keyring(key_id: str, options: KeyOptions, purpose: Purpose) -> Keyring:
    from envelope import UsageError

    raise UsageError(f"key spec 'kms:{key_id}': AWS KMS keys are not available yet in this version of envelope")


_SCHEMES: dict[str, Callable[[str, KeyOptions, Purpose], Keyring]] = {
    "file": _file_keyring,
    "kms": _kms_keyring,
}


def resolve_spec(spec: str, options: KeyOptions, purpose: Purpose) -> Keyring:
    """One ``--key SPEC`` -> one keyring."""
    from envelope import KeyFileError, UsageError

    scheme, colon, rest = spec.partition(":")
    if colon and scheme in _SCHEMES:
        return _SCHEMES[scheme](rest, options, purpose)
    if spec and os.path.exists(spec):
        return _file_keyring(spec, options, purpose)
    if colon and len(scheme) > 1 and "/" not in scheme and "\\" not in scheme:
        schemes = ", ".join(f"{name}:" for name in _SCHEMES)
        raise UsageError(f"key spec {spec!r}: unknown scheme {scheme + ':'!r} (use one of {schemes}, or the path "
                         "of a key file)")
    if not spec:
        raise UsageError("--key needs a value: file:PATH or kms:ID")
    raise KeyFileError(f"key file {spec!r} does not exist (a key spec is file:PATH, kms:ID or the path of a key "
                       "file)")


def build_keyring(options: KeyOptions, purpose: Purpose) -> Keyring:
    """All ``--key`` options (or ``--discovery``) -> the keyring the library gets."""
    from envelope import MultiKeyring, UsageError

    if options.discovery:
        if options.specs:
            raise UsageError("--discovery and --key exclude each other: give one or the other")
        raise UsageError("--discovery (AWS KMS discovery) is not available yet in this version of envelope")
    if not options.specs:
        raise UsageError("give at least one --key SPEC (file:PATH or kms:ID)"
                         + (" or --discovery" if purpose == "decrypt" else ""))
    keyrings = [resolve_spec(spec, options, purpose) for spec in options.specs]
    if len(keyrings) == 1:
        return keyrings[0]
    return MultiKeyring(keyrings[0], keyrings[1:])
