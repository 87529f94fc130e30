"""Key SPEC resolution, in one place: ``--key SPEC`` options or ``--discovery`` -> one keyring.

    file:PATH      a key file (README "Key files"); a bare PATH that exists works too
    kms:ID         an AWS KMS key: key ARN, key id, alias/NAME or alias ARN (README "AWS KMS")
    ssm:/NAME      a key file kept in an SSM SecureString parameter (read with decryption; docs/secrets.md)
    secretsmanager:NAME   a key file kept in a secret (name or ARN)

Several ``--key`` options make a multi-keyring: the first generates (or, on decrypt, is tried first), the others
wrap the data key too (or are tried in order). Each ``kms:`` spec is one :class:`~envelope.KmsKeyring` (as the
CLI mapping in ``envelope/keyrings/kms.py`` says), with ``--region`` for identifiers that are not ARNs and every
``--grant-token``. ``--discovery`` is one :class:`~envelope.KmsDiscoveryKeyring`, filtered when
``--discovery-account`` is given. To add a scheme, add a resolver to ``_SCHEMES`` (it gets the rest of the spec,
the :class:`KeyOptions`, the purpose and a ``warn`` callback or None); options that belong to a scheme go into
:class:`KeyOptions`, which is passed to every resolver and must stay picklable (``--workers`` rebuilds the
keyring in each worker process).

Building a keyring never talks to AWS and never imports boto3: KMS clients are made on the first call, so a
bad ``kms:`` spec is refused here (exit 2) and a local-key run never loads boto3. The exception are ``ssm:`` and
``secretsmanager:`` specs: their key file is fetched here (a parameter or secret that cannot be read is a
StorageError, exit 4, naming it; one that holds no key file a KeyFileError, exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from envelope import Keyring

__all__ = ["DEFAULT_PARTITION", "KeyOptions", "Purpose", "build_keyring", "key_files"]

Purpose = Literal["encrypt", "decrypt"]

#: ``--discovery-partition`` when only ``--discovery-account`` is given.
DEFAULT_PARTITION = "aws"
_ACCOUNT_ID = re.compile(r"[0-9]{12}")


@dataclass(frozen=True)
class KeyOptions:
    """Everything the command line says about keys."""

    specs: tuple[str, ...] = ()
    discovery: bool = False
    discovery_partition: str | None = None
    discovery_accounts: tuple[str, ...] = ()
    region: str | None = None  # for kms: identifiers that are not ARNs, and the discovery clients
    grant_tokens: tuple[str, ...] = ()

    @property
    def uses_kms(self) -> bool:
        return self.discovery or any(spec.startswith("kms:") for spec in self.specs)


Warn = Callable[[str], None]


def _file_keyring(path: str, options: KeyOptions, purpose: Purpose, warn: Warn | None) -> Keyring:
    """A key file. Decrypt refuses a public-only RSA file (it can never open a data key); a file holding a
    secret key that group or others may read gets a warning, as ssh gives for its keys."""
    import envelope

    if not path:
        raise envelope.KeyFileError("key spec 'file:' needs a path (file:PATH)")
    keyring = envelope.load_keyring(path)
    secret = not isinstance(keyring, envelope.RawRsaKeyring) or keyring.has_private_key
    if purpose == "decrypt" and not secret:
        raise envelope.KeyFileError(f"key file {path!r} holds only an RSA public key: it can encrypt but not "
                                    "decrypt (give the key file with the private key)")
    if secret and warn is not None:
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            return keyring
        readers = [who for who, bit in (("group", 0o040), ("others", 0o004)) if mode & bit]
        if readers:
            warn(f"key file {path!r} holds a secret key and is readable by {' and '.join(readers)} (mode "
                 f"{mode:04o}); make it private: chmod 600 {path}")
    return keyring


def _kms_keyring(key_id: str, options: KeyOptions, purpose: Purpose, warn: Warn | None) -> Keyring:
    from envelope import KmsKeyring, UsageError

    if not key_id:
        raise UsageError("key spec 'kms:' needs a key: kms:ARN, kms:KEY-ID or kms:alias/NAME")
    try:
        return KmsKeyring(key_id, region=options.region, grant_tokens=options.grant_tokens)
    except UsageError as exc:
        raise UsageError(f"key spec 'kms:{key_id}': {exc}") from None


def _stored_keyring(scheme: str) -> Callable[[str, KeyOptions, Purpose, Warn | None], Keyring]:
    def resolve(rest: str, options: KeyOptions, purpose: Purpose, warn: Warn | None) -> Keyring:
        from envelope.aws import load_keyring

        return load_keyring(f"{scheme}:{rest}")  # type: ignore[no-any-return]
    return resolve


_SCHEMES: dict[str, Callable[[str, KeyOptions, Purpose, Warn | None], Keyring]] = {
    "file": _file_keyring,
    "kms": _kms_keyring,
    "ssm": _stored_keyring("ssm"),
    "secretsmanager": _stored_keyring("secretsmanager"),
}


def resolve_spec(spec: str, options: KeyOptions, purpose: Purpose, warn: Warn | None = None) -> Keyring:
    """One ``--key SPEC`` -> one keyring (``warn`` gets warnings about it, such as a key file others can read)."""
    from envelope import KeyFileError, UsageError

    scheme, colon, rest = spec.partition(":")
    if colon and scheme in _SCHEMES:
        return _SCHEMES[scheme](rest, options, purpose, warn)
    if spec and os.path.exists(spec):
        return _file_keyring(spec, options, purpose, warn)
    if colon and len(scheme) > 1 and "/" not in scheme and "\\" not in scheme:
        schemes = ", ".join(f"{name}:" for name in _SCHEMES)
        raise UsageError(f"key spec {spec!r}: unknown scheme {scheme + ':'!r} (use one of {schemes}, or the path "
                         "of a key file)")
    if not spec:
        raise UsageError("--key needs a value: file:PATH or kms:ID")
    raise KeyFileError(f"key file {spec!r} does not exist (a key spec is file:PATH, kms:ID or the path of a key "
                       "file)")


def _discovery_keyring(options: KeyOptions, purpose: Purpose) -> Keyring:
    from envelope import DiscoveryFilter, KmsDiscoveryKeyring, UsageError

    if purpose != "decrypt":
        raise UsageError("--discovery only decrypts: name the KMS keys to encrypt with (--key kms:ID)")
    if options.specs:
        raise UsageError("--discovery and --key exclude each other: give one or the other")
    bad = [account for account in options.discovery_accounts if not _ACCOUNT_ID.fullmatch(account)]
    if bad:
        raise UsageError(f"--discovery-account {bad[0]!r}: an AWS account id is 12 digits")
    if options.discovery_partition is not None and not options.discovery_accounts:
        raise UsageError("--discovery-partition needs at least one --discovery-account (the filter is a partition "
                         "and its accounts)")
    discovery_filter = None
    if options.discovery_accounts:
        discovery_filter = DiscoveryFilter(options.discovery_partition or DEFAULT_PARTITION,
                                           options.discovery_accounts)
    return KmsDiscoveryKeyring(discovery_filter=discovery_filter, region=options.region,
                               grant_tokens=options.grant_tokens)


def _check_kms_options(options: KeyOptions) -> None:
    """Refuse KMS settings that would be silently ignored."""
    from envelope import UsageError

    if not options.discovery and (options.discovery_accounts or options.discovery_partition is not None):
        raise UsageError("--discovery-account and --discovery-partition filter --discovery; add --discovery")
    if not options.uses_kms:
        for given, name in ((options.region is not None, "--region"), (options.grant_tokens, "--grant-token")):
            if given:
                raise UsageError(f"{name} applies to AWS KMS keys (kms:ID or --discovery), and none is given")
    if any(not token for token in options.grant_tokens):
        raise UsageError("--grant-token needs a value")
    if options.region is not None and not options.region.strip():
        raise UsageError("--region needs a value such as us-east-1")


def key_files(options: KeyOptions) -> tuple[str, ...]:
    """The key files the ``--key`` options name (what a run reads besides its inputs)."""
    found = []
    for spec in options.specs:
        scheme, colon, rest = spec.partition(":")
        if colon and scheme == "file":
            found.append(rest)
        elif not (colon and scheme in _SCHEMES) and os.path.exists(spec):
            found.append(spec)
    return tuple(found)


def build_keyring(options: KeyOptions, purpose: Purpose, warn: Warn | None = None) -> Keyring:
    """All ``--key`` options (or ``--discovery``) -> the keyring the library gets. ``warn`` (the main process
    only, so that worker processes do not repeat them) gets one line per warning."""
    from envelope import MultiKeyring, UsageError

    _check_kms_options(options)
    if options.discovery:
        return _discovery_keyring(options, purpose)
    if not options.specs:
        raise UsageError("give at least one --key SPEC (file:PATH or kms:ID)"
                         + (" or --discovery" if purpose == "decrypt" else ""))
    keyrings = [resolve_spec(spec, options, purpose, warn) for spec in options.specs]
    if len(keyrings) == 1:
        return keyrings[0]
    return MultiKeyring(keyrings[0], keyrings[1:])
