"""The materials managers' protocols and checks: ``encrypt_stream`` reads ahead for any manager that
implements ``ReadsAhead`` (structurally, as the caching manager does), and for no other; decrypt materials
carry only the suite and the data key (the signing-key rules are checked once, by the API, before any manager
runs); the default manager refuses a data key that does not fit the suite, in both directions."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence

import pytest

import envelope
from envelope._crypto import PUBLIC_KEY_CONTEXT_KEY, Signer
from envelope._format import EncryptedDataKey
from envelope._materials import (
    DecryptionMaterials,
    DecryptionRequest,
    EncryptionMaterials,
    EncryptionRequest,
    ReadsAhead,
    reads_ahead,
)
from envelope._suites import SUITES, AlgorithmSuite
from envelope.errors import FormatError, KeyringError
from testkit.messages import build_message

KEYRING = envelope.RawAesKeyring("ns", "protocols", bytes(range(32)))


class Recording:
    """A manager that records the plaintext length each encryption request declares."""

    def __init__(self) -> None:
        self.inner = envelope.DefaultMaterialsManager(KEYRING)
        self.lengths: list[int | None] = []
        self.decrypt_calls = 0

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        self.lengths.append(request.plaintext_length)
        return self.inner.get_encryption_materials(request)

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        self.decrypt_calls += 1
        return self.inner.decrypt_materials(request)


class ReadingAhead(Recording):
    """The same, implementing ReadsAhead without subclassing it."""

    def read_ahead_limit(self, request: EncryptionRequest) -> int | None:
        return 100


def test_encrypt_stream_reads_ahead_only_for_managers_that_implement_the_protocol() -> None:
    plain, ahead = Recording(), ReadingAhead()
    assert not reads_ahead(plain) and reads_ahead(ahead) and isinstance(ahead, ReadsAhead)
    assert reads_ahead(envelope.CachingMaterialsManager(KEYRING, envelope.LocalCache(1), max_age=60))
    for manager in (plain, ahead):
        for data in (b"x" * 100, b"x" * 101):
            out = io.BytesIO()
            envelope.encrypt_stream(io.BytesIO(data), out, materials_manager=manager)
            assert envelope.decrypt(out.getvalue(), keyring=KEYRING).plaintext == data
    assert plain.lengths == [None, None]
    assert ahead.lengths == [100, None]  # learned within the bound; unknown past it


def test_decrypt_materials_hold_the_suite_and_the_data_key_only() -> None:
    assert [f.name for f in dataclasses.fields(DecryptionMaterials)] == ["suite", "data_key"]


def test_the_signing_key_rules_are_checked_before_any_manager_is_asked() -> None:
    """A half-signed message (an unsigned suite whose context carries a public key) is refused by the API's one
    check; the manager, which no longer repeats it, is never called."""
    suite = SUITES[0x0478]
    context = {PUBLIC_KEY_CONTEXT_KEY: Signer(SUITES[0x0578]).public_key_b64}
    message = build_message(suite, bytes(suite.key_length), [b"data"], context=context, keyring=KEYRING)
    manager = Recording()
    with pytest.raises(FormatError, match="half-signed"):
        envelope.decrypt(message, materials_manager=manager)
    assert manager.decrypt_calls == 0


class ShortKeys:
    """A keyring that wraps properly but hands out a data key one byte short when asked to."""

    def __init__(self) -> None:
        self.short = False

    def __str__(self) -> str:
        return "short-keys keyring"

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        key, edks = KEYRING.wrap(suite, context, data_key)
        return (key[:-1] if self.short else key), edks

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]) -> bytes:
        key = KEYRING.unwrap(suite, context, edks)
        return key[:-1] if self.short else key


@pytest.mark.parametrize("suite_id", [0x0114, 0x0478])
def test_a_data_key_that_does_not_fit_the_suite_is_a_keyring_error_both_ways(suite_id: int) -> None:
    keyring = ShortKeys()
    encrypt_policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else \
        "forbid-encrypt-allow-decrypt"
    message = envelope.encrypt(b"data", keyring=keyring, algorithm=suite_id, commitment_policy=encrypt_policy)
    keyring.short = True
    needs = f"short-keys keyring returned a {SUITES[suite_id].key_length - 1}-byte data key; " \
        f"suite 0x{suite_id:04x} needs {SUITES[suite_id].key_length}"
    with pytest.raises(KeyringError) as info:
        envelope.encrypt(b"data", keyring=keyring, algorithm=suite_id, commitment_policy=encrypt_policy)
    assert str(info.value) == needs
    with pytest.raises(KeyringError) as info:
        envelope.decrypt(message, keyring=keyring, commitment_policy="require-encrypt-allow-decrypt")
    assert str(info.value) == needs
