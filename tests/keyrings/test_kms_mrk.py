"""Multi-Region keys (esdk-format.md section 7.4), ARN parsing, and the checks on KMS answers.

moto cannot decrypt any MRK ciphertext (toolbox section 1: its blob header keeps 36 characters of the 40-character
``mrk-`` key id, so Decrypt always answers AccessDeniedException). The MRK matching logic is therefore tested
against ``FakeKms``, a small in-test KMS double injected through ``client_factory``. It is not a mock of boto3:
it is a second, tiny KMS with real AES-GCM, replicas that share key material, and KMS's error codes. Everything
else about KMS is tested over real HTTP against moto_server (tests/keyrings/test_kms*.py).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import envelope
from envelope._format import EncryptedDataKey
from envelope._keyrings.arn import is_mrk_identifier, mrk_match, parse_arn, try_parse_arn
from envelope._suites import SUITES

ACCOUNT = "123456789012"
EAST, WEST, SOUTH = "us-east-1", "eu-west-1", "ap-southeast-2"
MRK_ID = "mrk-0123456789abcdef0123456789abcdef"
PLAIN_ID = "0f0e0d0c-0000-4000-8000-0123456789ab"
SUITE = SUITES[0x0478]
CONTEXT = {"app": "billing"}
PLAINTEXT = b"multi-region\n" * 40


def arn(region: str, key_id: str, kind: str = "key") -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:{kind}/{key_id}"


def fail(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": ""}}, operation)


@dataclass
class World:
    """Keys (material by key id, shared by MRK replicas), the regions each key exists in, aliases, a call log."""

    material: dict[str, bytes] = field(default_factory=dict)
    regions: dict[str, set[str]] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (region, operation, KeyId)

    def add_key(self, key_id: str, *regions: str) -> None:
        self.material[key_id] = os.urandom(32)
        self.regions[key_id] = set(regions)

    def client(self, region: str) -> FakeKms:
        return FakeKms(self, region)


class FakeKms:
    """The four KMS operations the keyrings use, for one region. Blob = key id length, key id, nonce, AES-GCM."""

    def __init__(self, world: World, region: str) -> None:
        self.world = world
        self.region = region

    def _key(self, key_id: str, operation: str) -> str:
        parsed = try_parse_arn(key_id)
        if parsed is not None:
            if parsed.region != self.region or parsed.account != ACCOUNT:
                raise fail("NotFoundException", operation)
            key_id = parsed.resource_id if parsed.is_key else f"alias/{parsed.resource_id}"
        if key_id.startswith("alias/"):
            key_id = self.world.aliases.get((self.region, key_id), "")
        if self.region not in self.world.regions.get(key_id, set()):
            raise fail("NotFoundException", operation)
        return key_id

    @staticmethod
    def _aad(context: Mapping[str, str] | None) -> bytes:
        return json.dumps(dict(context or {}), sort_keys=True).encode()

    def _wrap(self, key_id: str, plaintext: bytes, context: Mapping[str, str] | None) -> bytes:
        nonce = os.urandom(12)
        sealed = AESGCM(self.world.material[key_id]).encrypt(nonce, plaintext, self._aad(context))
        return bytes([len(key_id)]) + key_id.encode() + nonce + sealed

    def generate_data_key(self, *, KeyId: str, NumberOfBytes: int, EncryptionContext: Any = None,
                          GrantTokens: Any = None) -> dict[str, Any]:
        self.world.calls.append((self.region, "GenerateDataKey", KeyId))
        key_id = self._key(KeyId, "GenerateDataKey")
        plaintext = os.urandom(NumberOfBytes)
        return {"KeyId": arn(self.region, key_id), "Plaintext": plaintext,
                "CiphertextBlob": self._wrap(key_id, plaintext, EncryptionContext)}

    def encrypt(self, *, KeyId: str, Plaintext: bytes, EncryptionContext: Any = None,
                GrantTokens: Any = None) -> dict[str, Any]:
        self.world.calls.append((self.region, "Encrypt", KeyId))
        key_id = self._key(KeyId, "Encrypt")
        return {"KeyId": arn(self.region, key_id), "CiphertextBlob": self._wrap(key_id, Plaintext, EncryptionContext)}

    def decrypt(self, *, CiphertextBlob: bytes, KeyId: str | None = None, EncryptionContext: Any = None,
                GrantTokens: Any = None) -> dict[str, Any]:
        self.world.calls.append((self.region, "Decrypt", KeyId or ""))
        size = CiphertextBlob[0]
        blob_key = CiphertextBlob[1:1 + size].decode()
        key_id = self._key(KeyId or blob_key, "Decrypt")
        if key_id != blob_key:
            raise fail("IncorrectKeyException", "Decrypt")
        nonce, sealed = CiphertextBlob[1 + size:13 + size], CiphertextBlob[13 + size:]
        try:
            plaintext = AESGCM(self.world.material[key_id]).decrypt(nonce, sealed, self._aad(EncryptionContext))
        except InvalidTag:
            raise fail("InvalidCiphertextException", "Decrypt") from None
        return {"KeyId": arn(self.region, key_id), "Plaintext": plaintext}

    def describe_key(self, *, KeyId: str, GrantTokens: Any = None) -> dict[str, Any]:
        self.world.calls.append((self.region, "DescribeKey", KeyId))
        return {"KeyMetadata": {"Arn": arn(self.region, self._key(KeyId, "DescribeKey"))}}


@pytest.fixture
def world() -> World:
    w = World()
    w.add_key(MRK_ID, EAST, WEST)  # an MRK with a replica
    w.add_key(PLAIN_ID, EAST)  # a single-region key
    w.aliases[(WEST, "alias/app")] = MRK_ID
    return w


def decrypts(calls: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [c for c in calls if c[1] == "Decrypt"]


# ---------------------------------------------------------------------------------------------------------
# strict


def test_strict_mrk_aware_decrypts_with_the_configured_replica(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client),
                               context=CONTEXT)
    world.calls.clear()
    keyring = envelope.KmsKeyring(arn(WEST, MRK_ID), client_factory=world.client)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    # Decrypt went to the configured (west) replica with the configured ARN
    assert decrypts(world.calls) == [(WEST, "Decrypt", arn(WEST, MRK_ID))]


def test_strict_without_mrk_awareness_needs_the_exact_arn(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client),
                               context=CONTEXT)
    world.calls.clear()
    keyring = envelope.KmsKeyring(arn(WEST, MRK_ID), client_factory=world.client, mrk_aware=False)
    with pytest.raises(envelope.KeyringError, match="no encrypted data key was wrapped by a configured key"):
        envelope.decrypt(message, keyring=keyring)
    assert decrypts(world.calls) == []


def test_single_region_keys_never_match_across_regions(world: World) -> None:
    world.regions[PLAIN_ID].add(WEST)  # even if a key with the same id existed in the other region
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, PLAIN_ID),
                                                                      client_factory=world.client))
    world.calls.clear()
    with pytest.raises(envelope.KeyringError, match="no encrypted data key"):
        envelope.decrypt(message, keyring=envelope.KmsKeyring(arn(WEST, PLAIN_ID), client_factory=world.client))
    assert decrypts(world.calls) == []


def test_alias_of_a_replica_is_resolved_then_mrk_matched(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client),
                               context=CONTEXT)
    world.calls.clear()
    keyring = envelope.KmsKeyring("alias/app", region=WEST, client_factory=world.client)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert world.calls == [(WEST, "DescribeKey", "alias/app"), (WEST, "Decrypt", arn(WEST, MRK_ID))]


def test_missing_replica_is_reported_with_its_arn(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client))
    keyring = envelope.KmsKeyring(arn(SOUTH, MRK_ID), client_factory=world.client)
    with pytest.raises(envelope.KeyringError, match="not found") as caught:
        envelope.decrypt(message, keyring=keyring)
    assert arn(SOUTH, MRK_ID) in str(caught.value)


def test_multi_region_encrypt_with_mrk_replicas(world: World) -> None:
    keyring = envelope.KmsKeyring([arn(EAST, MRK_ID), arn(WEST, MRK_ID)], client_factory=world.client)
    message = envelope.encrypt(PLAINTEXT, keyring=keyring, context=CONTEXT)
    assert [c[:2] for c in world.calls] == [(EAST, "GenerateDataKey"), (WEST, "Encrypt")]
    header, _, _ = envelope.read_header(io.BytesIO(message))
    assert [e.provider_info.decode() for e in header.encrypted_data_keys] == [arn(EAST, MRK_ID), arn(WEST, MRK_ID)]


# ---------------------------------------------------------------------------------------------------------
# discovery


def test_mrk_aware_discovery_rewrites_the_region(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client),
                               context=CONTEXT)
    world.calls.clear()
    keyring = envelope.KmsDiscoveryKeyring(mrk_aware=True, region=WEST, client_factory=world.client,
                                           discovery_filter=envelope.DiscoveryFilter("aws", [ACCOUNT]))
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert decrypts(world.calls) == [(WEST, "Decrypt", arn(WEST, MRK_ID))]


def test_mrk_aware_discovery_skips_single_region_keys_elsewhere(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, PLAIN_ID),
                                                                      client_factory=world.client))
    world.calls.clear()
    keyring = envelope.KmsDiscoveryKeyring(mrk_aware=True, region=WEST, client_factory=world.client)
    with pytest.raises(envelope.KeyringError, match="not in region eu-west-1 and not a Multi-Region key") as caught:
        envelope.decrypt(message, keyring=keyring)
    assert not isinstance(caught.value, envelope.KmsError)  # KMS was never asked
    assert decrypts(world.calls) == []
    # in its own region the same key is found
    keyring = envelope.KmsDiscoveryKeyring(mrk_aware=True, region=EAST, client_factory=world.client)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT


def test_plain_discovery_decrypts_an_mrk_in_its_own_region(world: World) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client))
    world.calls.clear()
    keyring = envelope.KmsDiscoveryKeyring(region=WEST, client_factory=world.client)
    assert envelope.decrypt(message, keyring=keyring).plaintext == PLAINTEXT
    assert decrypts(world.calls) == [(EAST, "Decrypt", arn(EAST, MRK_ID))]


# ---------------------------------------------------------------------------------------------------------
# checks on the answers (a lying KMS)


class LyingKms(FakeKms):
    def __init__(self, world: World, region: str, lie: str) -> None:
        super().__init__(world, region)
        self.lie = lie

    def decrypt(self, **kwargs: Any) -> dict[str, Any]:
        response = super().decrypt(**kwargs)
        if self.lie == "other-key":
            response["KeyId"] = arn(self.region, PLAIN_ID)
        elif self.lie == "short-key":
            response["Plaintext"] = response["Plaintext"][:16]
        return response

    def generate_data_key(self, **kwargs: Any) -> dict[str, Any]:
        response = super().generate_data_key(**kwargs)
        if self.lie == "short-key":
            response["Plaintext"] = response["Plaintext"][:16]
        elif self.lie == "alias-arn":
            response["KeyId"] = arn(self.region, "app", "alias")
        return response


@pytest.mark.parametrize(("lie", "code"), [("other-key", "KeyIdMismatch"), ("short-key", "WrongKeyLength")])
def test_decrypt_answers_are_checked(world: World, lie: str, code: str) -> None:
    key = arn(EAST, MRK_ID)
    _, edks = envelope.KmsKeyring(key, client_factory=world.client).wrap(SUITE, CONTEXT)
    keyring = envelope.KmsKeyring(key, client=LyingKms(world, EAST, lie))
    with pytest.raises(envelope.KmsError) as caught:
        keyring.unwrap(SUITE, CONTEXT, edks)
    assert caught.value.code == code and caught.value.key_id == key


@pytest.mark.parametrize(("lie", "code"), [("short-key", "WrongKeyLength"), ("alias-arn", "MalformedResponse")])
def test_generate_data_key_answers_are_checked(world: World, lie: str, code: str) -> None:
    keyring = envelope.KmsKeyring(arn(EAST, MRK_ID), client=LyingKms(world, EAST, lie))
    with pytest.raises(envelope.KmsError) as caught:
        keyring.wrap(SUITE, CONTEXT)
    assert caught.value.code == code


def test_wrong_context_error_from_the_double_matches_moto(world: World) -> None:
    keyring = envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client)
    _, edks = keyring.wrap(SUITE, CONTEXT)
    with pytest.raises(envelope.KmsError, match="encryption context differs"):
        keyring.unwrap(SUITE, {"app": "other"}, edks)


# ---------------------------------------------------------------------------------------------------------
# ARNs and MRK matching (pure)


@pytest.mark.parametrize("text", [
    "arn:aws:kms:us-east-1:123456789012:key/abc",
    "arn:aws-cn:kms:cn-north-1:123456789012:alias/a/b/c",
    "arn:aws:kms:us-east-1:123456789012:key/mrk-1/with/slashes",
])
def test_valid_arns_round_trip(text: str) -> None:
    assert str(parse_arn(text)) == text


@pytest.mark.parametrize("text", [
    "arn:aws:kms:us-east-1:123456789012", "arn::kms:us-east-1:123456789012:key/a", "arn:aws:sqs:us-east-1:1:key/a",
    "arn:aws:kms::123456789012:key/a", "arn:aws:kms:us-east-1::key/a", "arn:aws:kms:us-east-1:123456789012:key/",
    "arn:aws:kms:us-east-1:123456789012:key", "arn:aws:kms:us-east-1:123456789012:grant/a", "nope:aws:kms:r:a:key/b",
])
def test_invalid_arns(text: str) -> None:
    assert try_parse_arn(text) is None
    with pytest.raises(envelope.UsageError):
        parse_arn(text)


def test_mrk_identification_and_matching() -> None:
    assert is_mrk_identifier(arn(EAST, MRK_ID)) and is_mrk_identifier(MRK_ID)
    assert not is_mrk_identifier(arn(EAST, "mrk-looks-like-one", "alias"))  # an alias is never an MRK
    assert not is_mrk_identifier(arn(EAST, PLAIN_ID)) and not is_mrk_identifier("alias/mrk-x")
    assert mrk_match(arn(EAST, MRK_ID), arn(WEST, MRK_ID))
    assert mrk_match(arn(EAST, PLAIN_ID), arn(EAST, PLAIN_ID))
    assert not mrk_match(arn(EAST, PLAIN_ID), arn(WEST, PLAIN_ID))
    assert not mrk_match(arn(EAST, MRK_ID), arn(WEST, MRK_ID + "0"))
    assert not mrk_match(arn(EAST, MRK_ID), arn(WEST, MRK_ID).replace(ACCOUNT, "0" * 12))
    assert not mrk_match(arn(EAST, MRK_ID), arn(WEST, MRK_ID).replace("arn:aws:", "arn:aws-cn:"))
    assert not mrk_match(arn(EAST, "mrk-a", "alias"), arn(WEST, "mrk-a", "alias"))


def test_edk_provider_info_that_is_not_utf8_fails_closed(world: World) -> None:
    bad = EncryptedDataKey("aws-kms", b"\xff\xfe", b"x")
    with pytest.raises(envelope.KeyringError, match="not a KMS key ARN"):
        envelope.KmsKeyring(arn(EAST, MRK_ID), client_factory=world.client).unwrap(SUITE, CONTEXT, [bad])
