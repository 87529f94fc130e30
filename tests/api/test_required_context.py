"""Required encryption context (esdk-format.md section 6.4; issue 15): pairs authenticated but not stored.

encrypt(required_context_keys=) leaves those pairs out of the stored context and appends them to the header
tag's AAD; keyrings see the whole context. decrypt(reproduced_context=) supplies them again; decrypt(
required_context=) keeps meaning "pairs the message must store", checked before any key is used. Interop with the
ESDK + MPL required-EC CMM is in tests/interop/test_required_context_interop.py.
"""

from __future__ import annotations

import io
import os

import pytest
from helpers import CountingKeyring, rsa_private_pem

import envelope
from envelope import _format as fmt
from envelope._materials import DefaultMaterialsManager, EncryptionMaterials, EncryptionRequest

CONTEXT = {"app": "web", "tenant": "acme", "region": "eu"}
PLAINTEXT = os.urandom(10_000)


def keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("envelope", "required", bytes(range(32)))


def rsa_keyring() -> envelope.RawRsaKeyring:
    return envelope.RawRsaKeyring("envelope", "rsa", private_key=rsa_private_pem(), padding="oaep-sha256")


def required_message(*, algorithm: int | None = None, keys: tuple[str, ...] = ("tenant",),
                     ring: envelope.Keyring | None = None) -> bytes:
    return envelope.encrypt(PLAINTEXT, keyring=ring or keyring(), context=CONTEXT, required_context_keys=keys,
                            algorithm=algorithm, frame_length=4096)


def stored_context(message: bytes) -> dict[str, str]:
    return dict(envelope.read_header(io.BytesIO(message))[0].encryption_context)


@pytest.mark.parametrize("algorithm", [0x0478, 0x0578, 0x0178])
def test_required_pairs_are_authenticated_not_stored(algorithm: int) -> None:
    policy = "require-encrypt-allow-decrypt"
    message = envelope.encrypt(PLAINTEXT, keyring=keyring(), context=CONTEXT, required_context_keys=["tenant"],
                               algorithm=algorithm, frame_length=4096,
                               commitment_policy="forbid-encrypt-allow-decrypt" if algorithm < 0x0400 else None)
    stored = stored_context(message)
    assert "tenant" not in stored and b"acme" not in message and b"tenant" not in message
    assert {k: v for k, v in stored.items() if not k.startswith("aws-crypto-")} == {"app": "web", "region": "eu"}
    for decrypt in (envelope.decrypt, _decrypt_stream):
        result = decrypt(message, keyring=keyring(), reproduced_context={"tenant": "acme"}, commitment_policy=policy)
        assert result.plaintext == PLAINTEXT
        assert "tenant" not in result.header.encryption_context
        # a stored pair may be reproduced too (it must then have the same value)
        assert decrypt(message, keyring=keyring(), reproduced_context={"tenant": "acme", "app": "web"},
                       commitment_policy=policy).plaintext == PLAINTEXT


def _decrypt_stream(message: bytes, **kwargs: object) -> envelope.DecryptResult:
    out = io.BytesIO()
    result = envelope.decrypt_stream(io.BytesIO(message), out, **kwargs)  # type: ignore[arg-type]
    return envelope.DecryptResult(out.getvalue(), result.header)


def test_several_required_keys_and_every_subset_needed() -> None:
    message = required_message(keys=("tenant", "region"))
    assert set(stored_context(message)) == {"app"}
    assert envelope.decrypt(message, keyring=keyring(),
                            reproduced_context={"tenant": "acme", "region": "eu"}).plaintext == PLAINTEXT
    with pytest.raises(envelope.KeyringError, match="its pairs must be reproduced"):
        envelope.decrypt(message, keyring=keyring(), reproduced_context={"app": "web"})  # only a stored pair
    with pytest.raises(envelope.AuthenticationError, match="'region', 'tenant' are missing") as info:
        envelope.decrypt(message, keyring=keyring(), reproduced_context={"tenant": "acme", "region": "us"})
    assert "acme" not in str(info.value)


def test_a_wrong_reproduced_value_is_an_authentication_error_naming_the_key() -> None:
    message = required_message()
    with pytest.raises(envelope.AuthenticationError) as info:
        envelope.decrypt(message, keyring=keyring(), reproduced_context={"tenant": "other"})
    text = str(info.value)
    assert "'tenant'" in text and "other" not in text and "acme" not in text  # names the key, never a value


def test_a_pair_the_message_was_not_encrypted_with_fails_the_same_way() -> None:
    plain = envelope.encrypt(PLAINTEXT, keyring=keyring(), context={"app": "web"})
    with pytest.raises(envelope.AuthenticationError, match="'tenant' is missing from the message"):
        envelope.decrypt(plain, keyring=keyring(), reproduced_context={"tenant": "acme"})


def test_without_the_reproduced_pairs_nothing_opens_and_the_error_says_why_it_may_be() -> None:
    message = required_message()
    with pytest.raises(envelope.KeyringError, match="its pairs must be reproduced") as info:
        envelope.decrypt(message, keyring=keyring())  # raw AES binds the whole context to the wrapped key
    assert info.value.unauthenticated
    # RSA does not bind the context: the header tag is what catches the missing pair
    rsa_message = required_message(ring=rsa_keyring())
    with pytest.raises(envelope.AuthenticationError, match="required encryption context pair"):
        envelope.decrypt(rsa_message, keyring=rsa_keyring())
    with pytest.raises(envelope.AuthenticationError, match="'tenant'"):
        envelope.decrypt(rsa_message, keyring=rsa_keyring(), reproduced_context={"tenant": "x"})
    assert envelope.decrypt(rsa_message, keyring=rsa_keyring(),
                            reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT


def test_a_conflicting_stored_pair_is_refused_before_any_key_is_used() -> None:
    counting = CountingKeyring(keyring())
    message = required_message()
    with pytest.raises(envelope.ContextMismatchError, match="'app' has a different value"):
        envelope.decrypt(message, keyring=counting, reproduced_context={"tenant": "acme", "app": "api"})
    assert counting.calls.count("unwrap") == 0


def test_required_context_keys_with_any_value() -> None:
    message = required_message()
    assert envelope.decrypt(message, keyring=keyring(), required_context={"app": None},
                            reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT
    counting = CountingKeyring(keyring())
    with pytest.raises(envelope.ContextMismatchError, match="'tenant' is missing from the message"):
        # required_context checks what the message stores: a required (unstored) pair is not there
        envelope.decrypt(message, keyring=counting, required_context={"tenant": None})
    assert counting.calls.count("unwrap") == 0


def test_encrypt_refuses_required_keys_it_cannot_honour() -> None:
    with pytest.raises(envelope.UsageError, match="'user' is not in the encryption context"):
        envelope.encrypt(b"x", keyring=keyring(), context=CONTEXT, required_context_keys=["user"])
    with pytest.raises(envelope.UsageError, match="not one string"):
        envelope.encrypt(b"x", keyring=keyring(), context=CONTEXT, required_context_keys="tenant")
    with pytest.raises(envelope.UsageError, match="reserved"):
        envelope.decrypt(required_message(), keyring=keyring(), reproduced_context={"aws-crypto-x": "y"})
    with pytest.raises(envelope.UsageError, match="'user'"):
        envelope.encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), keyring=keyring(), context=CONTEXT,
                                required_context_keys=["user"])


def test_messages_without_required_keys_are_unchanged() -> None:
    """An empty required set appends nothing to the header tag's AAD (section 6.4): such a message decrypts with
    a reproduced pair it stores, and its header tag is the plain header-body tag."""
    message = envelope.encrypt(PLAINTEXT, keyring=keyring(), context=CONTEXT, required_context_keys=[])
    assert stored_context(message) == CONTEXT
    assert fmt.header_tag_aad(b"body", {}) == b"body"
    assert fmt.header_tag_aad(b"body", {"k": "v"}) == b"body" + fmt.serialize_context({"k": "v"})
    assert envelope.decrypt(message, keyring=keyring(), reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT


class AddsRequiredKeys:
    """A materials manager that makes a key required itself, as the MPL's required-EC CMM does."""

    def __init__(self, underlying: envelope.MaterialsManager, keys: frozenset[str]) -> None:
        self.underlying, self.keys = underlying, keys

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        import dataclasses

        materials = self.underlying.get_encryption_materials(request)
        return dataclasses.replace(materials, required_context_keys=materials.required_context_keys | self.keys)

    def decrypt_materials(self, request):  # type: ignore[no-untyped-def]
        return self.underlying.decrypt_materials(request)


def test_a_materials_manager_may_require_keys_too() -> None:
    manager = AddsRequiredKeys(DefaultMaterialsManager(keyring()), frozenset({"region"}))
    message = envelope.encrypt(PLAINTEXT, materials_manager=manager, context=CONTEXT, required_context_keys=["tenant"])
    assert set(stored_context(message)) == {"app"}
    assert envelope.decrypt(message, keyring=keyring(),
                            reproduced_context={"tenant": "acme", "region": "eu"}).plaintext == PLAINTEXT


class DropsRequiredKeys(AddsRequiredKeys):
    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        import dataclasses

        materials = self.underlying.get_encryption_materials(request)
        return dataclasses.replace(materials, required_context_keys=frozenset())


def test_a_materials_manager_that_drops_required_keys_is_refused() -> None:
    manager = DropsRequiredKeys(DefaultMaterialsManager(keyring()), frozenset())
    with pytest.raises(envelope.UsageError, match="dropped required encryption context keys: 'tenant'"):
        envelope.encrypt(PLAINTEXT, materials_manager=manager, context=CONTEXT, required_context_keys=["tenant"])


# ---------------------------------------------------------------------------------------------------------
# the data-key cache


def test_cache_keeps_required_key_sets_apart() -> None:
    cache = envelope.LocalCache(10)
    manager = envelope.CachingMaterialsManager(keyring(), cache, max_age=60)
    one = envelope.encrypt(b"a", materials_manager=manager, context=CONTEXT, required_context_keys=["tenant"])
    two = envelope.encrypt(b"b", materials_manager=manager, context=CONTEXT, required_context_keys=["tenant"])
    other = envelope.encrypt(b"c", materials_manager=manager, context=CONTEXT, required_context_keys=["region"])
    plain = envelope.encrypt(b"d", materials_manager=manager, context=CONTEXT)
    stats = manager.stats
    assert (stats.hits, stats.misses, stats.keyring_encrypt_calls) == (1, 3, 3)
    assert set(stored_context(two)) == {"app", "region"} and set(stored_context(other)) == {"app", "tenant"}
    assert set(stored_context(plain)) == set(CONTEXT)
    for message, reproduced in ((one, {"tenant": "acme"}), (two, {"tenant": "acme"}), (other, {"region": "eu"})):
        assert envelope.decrypt(message, keyring=keyring(), reproduced_context=reproduced).plaintext


def test_cache_never_serves_a_decrypt_entry_to_other_reproduced_values() -> None:
    counting = CountingKeyring(keyring())
    manager = envelope.CachingMaterialsManager(counting, envelope.LocalCache(10), max_age=60)
    message = required_message()
    for _ in range(2):
        assert envelope.decrypt(message, materials_manager=manager,
                                reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT
    assert (manager.stats.hits, counting.calls.count("unwrap")) == (1, 1)
    with pytest.raises(envelope.AuthenticationError, match="'tenant'"):
        envelope.decrypt(message, materials_manager=manager, reproduced_context={"tenant": "other"})
    assert counting.calls.count("unwrap") == 2  # a different identifier: the keyring was asked (and refused)
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt(message, materials_manager=manager)  # no reproduced pair: a third identifier
    assert counting.calls.count("unwrap") == 3


def test_keyring_errors_say_whether_a_key_failed_to_authenticate() -> None:
    message = required_message()
    with pytest.raises(envelope.KeyringError) as wrong_name:
        envelope.decrypt(message, keyring=envelope.RawAesKeyring("envelope", "other", bytes(32)))
    assert not wrong_name.value.unauthenticated
    with pytest.raises(envelope.KeyringError) as wrong_bytes:
        envelope.decrypt(message, keyring=envelope.MultiKeyring(
            envelope.RawAesKeyring("envelope", "required", bytes(32))), reproduced_context={})
    assert wrong_bytes.value.unauthenticated
