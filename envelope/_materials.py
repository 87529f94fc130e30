"""Materials managers: choose the suite, make signing keys and call the keyring (section 7.4 "Default CMM").

The caching manager (the data-key cache) lives in :mod:`envelope._cache` and wraps one of these.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec

from ._crypto import PUBLIC_KEY_CONTEXT_KEY, Signer
from ._format import EncryptedDataKey
from ._keyrings.base import Keyring, describe_edk
from ._suites import AlgorithmSuite, CommitmentPolicy, check_encrypt_policy, default_suite_for
from .errors import FormatError, KeyringError, KmsError, UsageError

__all__ = [
    "DecryptionMaterials",
    "DecryptionRequest",
    "DefaultMaterialsManager",
    "EncryptionMaterials",
    "EncryptionRequest",
    "MaterialsManager",
    "ReadsAhead",
    "reads_ahead",
]

_new_object = object.__new__

#: "no key could open the data key" names at most this many of the message's EDKs (a message may hold 256).
LISTED_EDKS = 10


@dataclass(frozen=True)
class EncryptionRequest:
    context: Mapping[str, str]
    commitment_policy: CommitmentPolicy
    suite: AlgorithmSuite | None = None
    plaintext_length: int | None = None  # None when unknown (a pipe)
    #: section 6.4: keys of ``context`` whose pairs are authenticated but not stored in the message
    required_context_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EncryptionMaterials:
    suite: AlgorithmSuite
    data_key: bytes = field(repr=False)
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    context: Mapping[str, str]  # the caller's context plus aws-crypto-public-key for signed suites
    signing_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    #: section 6.4: the keys of ``context`` left out of the stored context (at least the request's)
    required_context_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DecryptionRequest:
    suite: AlgorithmSuite
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    #: what the keyring authenticates: the message's stored context plus the pairs the caller reproduced that
    #: the message does not store (section 6.4)
    context: Mapping[str, str]
    #: those reproduced keys (empty unless the caller reproduced pairs the message does not store)
    required_context_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DecryptionMaterials:
    suite: AlgorithmSuite
    data_key: bytes = field(repr=False)


def new_encryption_request(context: Mapping[str, str], commitment_policy: CommitmentPolicy,
                           suite: AlgorithmSuite | None, plaintext_length: int | None,
                           required_context_keys: frozenset[str]) -> EncryptionRequest:
    """``EncryptionRequest(...)`` for the per-message paths, as :func:`envelope._format._header` makes headers: the
    frozen ``__init__`` sets each field through ``object.__setattr__`` (~0.5 us per object, ~2 us of the four a
    small message makes). The same object, equal to the constructor's (tests/materials/test_fast_materials.py);
    nothing is changed after it is made."""
    request = _new_object(EncryptionRequest)
    request.__dict__.update(context=context, commitment_policy=commitment_policy, suite=suite,
                            plaintext_length=plaintext_length, required_context_keys=required_context_keys)
    return request


def new_encryption_materials(suite: AlgorithmSuite, data_key: bytes, encrypted_data_keys: tuple[EncryptedDataKey, ...],
                             context: Mapping[str, str], signing_key: ec.EllipticCurvePrivateKey | None,
                             required_context_keys: frozenset[str]) -> EncryptionMaterials:
    """``EncryptionMaterials(...)`` without the frozen ``__init__`` (see :func:`new_encryption_request`)."""
    materials = _new_object(EncryptionMaterials)
    materials.__dict__.update(suite=suite, data_key=data_key, encrypted_data_keys=encrypted_data_keys, context=context,
                              signing_key=signing_key, required_context_keys=required_context_keys)
    return materials


def new_decryption_request(suite: AlgorithmSuite, encrypted_data_keys: tuple[EncryptedDataKey, ...],
                           context: Mapping[str, str], required_context_keys: frozenset[str]) -> DecryptionRequest:
    """``DecryptionRequest(...)`` without the frozen ``__init__`` (see :func:`new_encryption_request`)."""
    request = _new_object(DecryptionRequest)
    request.__dict__.update(suite=suite, encrypted_data_keys=encrypted_data_keys, context=context,
                            required_context_keys=required_context_keys)
    return request


def new_decryption_materials(suite: AlgorithmSuite, data_key: bytes) -> DecryptionMaterials:
    """``DecryptionMaterials(...)`` without the frozen ``__init__`` (see :func:`new_encryption_request`)."""
    materials = _new_object(DecryptionMaterials)
    materials.__dict__.update(suite=suite, data_key=data_key)
    return materials


@runtime_checkable
class MaterialsManager(Protocol):
    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials: ...

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials: ...


@runtime_checkable
class ReadsAhead(Protocol):
    """A materials manager that wants ``encrypt_stream`` to learn unknown plaintext lengths by reading ahead
    (the caching manager: it can serve a message from the cache only when it knows its length)."""

    def read_ahead_limit(self, request: EncryptionRequest) -> int | None: ...


def reads_ahead(manager: object) -> TypeGuard[ReadsAhead]:
    """Whether ``manager`` implements :class:`ReadsAhead`: the protocol's structural check, made once per class
    (an ``isinstance`` against a runtime-checkable protocol costs ~10 us, a lot next to a small message)."""
    cls = type(manager)
    found = _READS_AHEAD.get(cls)
    if found is None:
        found = _READS_AHEAD[cls] = issubclass(cls, ReadsAhead)
    return found


_READS_AHEAD: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


class DefaultMaterialsManager:
    """Wraps one keyring: picks the suite, adds the signing key's public half to the context, checks lengths."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def __str__(self) -> str:
        return str(self.keyring)

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        required = request.required_context_keys
        suite, data_key, edks, context, signing_key = self.wrap_for(request.suite, request.commitment_policy,
                                                                    request.context, required)
        return new_encryption_materials(suite, data_key, edks, context, signing_key, required)

    def wrap_for(self, suite: AlgorithmSuite | None, policy: CommitmentPolicy, context: Mapping[str, str],
                 required_context_keys: frozenset[str]
                 ) -> tuple[AlgorithmSuite, bytes, tuple[EncryptedDataKey, ...], dict[str, str],
                            ec.EllipticCurvePrivateKey | None]:
        """:meth:`get_encryption_materials` without the request and materials objects: (suite, data key, EDKs,
        context, signing key). The one-shot encrypt of a small message calls it directly (envelope._api)."""
        if suite is None:
            suite = default_suite_for(policy)  # the default of each policy is one the policy allows
        else:
            check_encrypt_policy(suite, policy)
        context = dict(context)
        if required_context_keys:  # section 6.4 (the MPL's required-EC CMM)
            for key in sorted(required_context_keys - context.keys()):
                raise UsageError(f"required encryption context key {key!r} is not in the encryption context")
        signing_key = None
        if suite.signed:
            if PUBLIC_KEY_CONTEXT_KEY in context:
                raise UsageError(f"the encryption context already holds {PUBLIC_KEY_CONTEXT_KEY}")
            signer = Signer(suite)
            signing_key = signer.private_key
            context[PUBLIC_KEY_CONTEXT_KEY] = signer.public_key_b64
        data_key, edks = self.keyring.wrap(suite, context)
        self._check_data_key(suite, data_key)
        if not edks:
            raise KeyringError(f"{self.keyring} produced no encrypted data key")
        return suite, data_key, tuple(edks), context, signing_key

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        suite = request.suite
        return new_decryption_materials(suite, self.unwrap_for(suite, request.encrypted_data_keys, request.context))

    def unwrap_for(self, suite: AlgorithmSuite, encrypted_data_keys: tuple[EncryptedDataKey, ...],
                   context: Mapping[str, str]) -> bytes:
        """:meth:`decrypt_materials` without the request and materials objects: the data key (envelope._api
        calls it directly for this manager)."""
        # the signing-key rules of the context were checked before any manager was asked (api._open_message)
        try:
            data_key = self.keyring.unwrap(suite, context, encrypted_data_keys)
        except KeyringError as exc:
            raise no_key_error(exc, encrypted_data_keys) from None
        self._check_data_key(suite, data_key)
        return data_key

    def _check_data_key(self, suite: AlgorithmSuite, data_key: bytes) -> None:
        """Any keyring, either direction: the key must fit the suite (built-in keyrings check it themselves too,
        to name the EDK or the KMS answer)."""
        problem = suite.data_key_error(data_key)
        if problem is not None:
            raise KeyringError(f"{self.keyring} returned {problem}")


def check_signing_context(suite: AlgorithmSuite, context: Mapping[str, str]) -> str | None:
    """Section 4 consistency rules: signed suites carry the public key, unsigned suites must not. Returns the
    key (base64). The decrypt API runs it once per message, before any materials manager is called."""
    public_key = context.get(PUBLIC_KEY_CONTEXT_KEY)
    if suite.signed and public_key is None:
        raise FormatError("encryption context", 0,
                          f"signed suite {suite.hex_id} but no {PUBLIC_KEY_CONTEXT_KEY} in the context")
    if not suite.signed and public_key is not None:
        raise FormatError("encryption context", 0,
                          f"unsigned suite {suite.hex_id} carries {PUBLIC_KEY_CONTEXT_KEY} (half-signed message)")
    return public_key


def no_key_error(exc: KeyringError, edks: Sequence[EncryptedDataKey]) -> KeyringError:
    """A keyring failure restated with the encrypted data keys the message holds (same class, same KMS key)."""
    present = ", ".join(describe_edk(e) for e in edks[:LISTED_EDKS])
    if len(edks) > LISTED_EDKS:
        present += f" and {len(edks) - LISTED_EDKS} more"
    message = f"no key could open the data key; the message holds {present}"
    attempts = exc.attempts or [str(exc)]
    if isinstance(exc, KmsError):
        return KmsError(message, exc.key_id, exc.code, attempts, unauthenticated=exc.unauthenticated)
    return KeyringError(message, attempts, unauthenticated=exc.unauthenticated)
