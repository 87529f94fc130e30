"""The data-key cache (envelope._cache, esdk-format.md section 8) without KMS.

Every count here is proved with a counting keyring around a raw AES keyring, and the reuse is read back from
the EDKs in the headers the API wrote. The KMS round swaps in a KMS keyring behind the same ``counted``
fixture (one more param: wraps = GenerateDataKey calls, unwraps = Decrypt calls) and keeps the tests.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import doctest
import io
import itertools
import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest
from helpers import esdk_aes_key, esdk_decrypt

import envelope
import envelope._cache
from envelope._format import EncryptedDataKey
from envelope._materials import DecryptionMaterials, DecryptionRequest, EncryptionMaterials, EncryptionRequest
from envelope._suites import SUITES, AlgorithmSuite, CommitmentPolicy

KIB = 1024
CONTEXT = {"app": "cache-test", "stage": "unit"}
FORBID = "forbid-encrypt-allow-decrypt"
READ_ANY = "require-encrypt-allow-decrypt"


# ---------------------------------------------------------------------------------------------------------
# helpers


class FakeClock:
    """A monotonic clock the test moves by hand: no test sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingKeyring:
    """Counts wrap / unwrap calls (thread-safe); ``on_wrap`` runs inside each wrap, before the inner keyring."""

    inner: envelope.Keyring
    on_wrap: Callable[[], None] | None = None
    wraps: int = 0
    unwraps: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        with self._lock:
            self.wraps += 1
        if self.on_wrap is not None:
            self.on_wrap()
        return self.inner.wrap(suite, context, data_key)

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]
               ) -> bytes:
        with self._lock:
            self.unwraps += 1
        return self.inner.unwrap(suite, context, edks)


@dataclass
class Counted:
    """What the count tests need: a keyring to cache in front of, the calls it made, and an ESDK reader.

    The KMS round adds a "kms" param to ``counted``: ``plain`` becomes the KMS keyring on moto_server,
    ``esdk_decrypt`` a KMSMasterKeyProvider reader, and its tests can also assert the proxy's
    GenerateDataKey / Decrypt counts equal ``keyring.wraps`` / ``keyring.unwraps``.
    """

    keyring: CountingKeyring
    plain: envelope.Keyring  # the same key without counting, to decrypt independently of any cache
    esdk_decrypt: Callable[[bytes], bytes]


@pytest.fixture(params=["raw-aes"])
def counted(request: pytest.FixtureRequest) -> Counted:
    key = os.urandom(32)
    plain = envelope.RawAesKeyring("envelope", "test-key", key)
    master_key = esdk_aes_key("envelope", "test-key", key)
    return Counted(CountingKeyring(plain), plain, lambda message: esdk_decrypt(message, master_key)[0])


def caching(keyring: envelope.Keyring | envelope.MaterialsManager, *, capacity: int = 16,
            clock: FakeClock | None = None, max_age: float = 600, **limits: int
            ) -> envelope.CachingMaterialsManager:
    cache = envelope.LocalCache(capacity, clock=clock or FakeClock())
    return envelope.CachingMaterialsManager(keyring, cache, max_age=max_age, **limits)


def edks_of(message: bytes) -> tuple[EncryptedDataKey, ...]:
    header, _, _ = envelope.read_header(io.BytesIO(message))
    return header.encrypted_data_keys


def runs(keys: Sequence[object]) -> list[int]:
    """Lengths of the runs of equal consecutive items: [a, a, b, b, b] -> [2, 3]."""
    return [len(list(group)) for _, group in itertools.groupby(keys)]


def encrypt_many(manager: envelope.MaterialsManager, sizes: Sequence[int], context: Mapping[str, str] = CONTEXT,
                 **kwargs: object) -> list[bytes]:
    return [envelope.encrypt(os.urandom(n), materials_manager=manager, context=context, **kwargs)  # type: ignore[arg-type]
            for n in sizes]


# ---------------------------------------------------------------------------------------------------------
# the headline counts


def test_1000_encryptions_with_max_messages_100_make_10_wraps(counted: Counted) -> None:
    manager = caching(counted.keyring, max_messages=100)
    plaintexts = [os.urandom(KIB) for _ in range(1000)]
    messages = [envelope.encrypt(p, materials_manager=manager, context=CONTEXT) for p in plaintexts]

    assert counted.keyring.wraps == 10
    keys = [edks_of(m) for m in messages]
    assert runs(keys) == [100] * 10  # each data key serves 100 consecutive messages, then never again
    assert len(set(keys)) == 10
    stats = manager.stats
    assert (stats.misses, stats.hits, stats.entries_created, stats.evicted_messages) == (10, 990, 10, 10)
    assert stats.keyring_encrypt_calls == 10
    # every cached message still decrypts (each has its own message ID, so its own derived key): all of them
    # through a decrypt cache (10 unwraps), a sample without any cache and with the ESDK
    assert len({envelope.read_header(io.BytesIO(m))[0].message_id for m in messages}) == 1000
    unwrapping = CountingKeyring(counted.plain)
    reader = caching(unwrapping)
    for message, plaintext in zip(messages, plaintexts):
        assert envelope.decrypt(message, materials_manager=reader, required_context=CONTEXT).plaintext == plaintext
    assert unwrapping.unwraps == 10
    for i in (0, 99, 100, 550, 999):
        assert envelope.decrypt(messages[i], keyring=counted.plain).plaintext == plaintexts[i]
        assert counted.esdk_decrypt(messages[i]) == plaintexts[i]


def test_1000_decryptions_of_messages_sharing_a_data_key_make_one_unwrap(counted: Counted) -> None:
    writer = caching(counted.plain, max_messages=1000)
    plaintexts = [os.urandom(KIB) for _ in range(1000)]
    messages = [envelope.encrypt(p, materials_manager=writer, context=CONTEXT) for p in plaintexts]
    assert len({edks_of(m) for m in messages}) == 1

    reader = caching(counted.keyring)
    for message, plaintext in zip(messages, plaintexts):
        assert envelope.decrypt(message, materials_manager=reader).plaintext == plaintext
    assert counted.keyring.unwraps == 1
    stats = reader.stats
    assert (stats.misses, stats.hits, stats.keyring_decrypt_calls, stats.entries_created) == (1, 999, 1, 1)


def test_a_tampered_message_is_still_refused_with_its_key_cached(counted: Counted) -> None:
    """A cache hit skips the keyring, never the commitment, header tag or frame checks."""
    writer = caching(counted.plain)
    good, other = encrypt_many(writer, [100, 100])
    reader = caching(counted.keyring)
    envelope.decrypt(good, materials_manager=reader)
    tampered = bytearray(other)
    tampered[-1] ^= 1
    with pytest.raises(envelope.AuthenticationError):
        envelope.decrypt(bytes(tampered), materials_manager=reader)
    assert reader.stats.hits == 1 and counted.keyring.unwraps == 1


# ---------------------------------------------------------------------------------------------------------
# limits, each at its boundary from both sides


@pytest.mark.parametrize(("max_bytes", "expected_runs"), [
    (10 * KIB, [10, 10, 1]),  # the 10th message brings the entry exactly to the limit: still served
    (10 * KIB - 1, [9, 9, 3]),  # one byte less: the 10th message would exceed it and gets a new key
    (10 * KIB + 1, [10, 10, 1]),  # one byte more: the 11th message would exceed it
])
def test_max_bytes_retires_an_entry_exactly_at_the_limit(counted: Counted, max_bytes: int,
                                                        expected_runs: list[int]) -> None:
    manager = caching(counted.keyring, max_bytes=max_bytes)
    messages = encrypt_many(manager, [KIB] * 21)
    assert runs([edks_of(m) for m in messages]) == expected_runs
    assert counted.keyring.wraps == len(expected_runs)
    stats = manager.stats
    assert stats.evicted_bytes == len(expected_runs) - 1
    assert stats.evicted_messages == stats.evicted_age == stats.evicted_capacity == 0


def test_max_bytes_counts_the_bytes_of_each_message(counted: Counted) -> None:
    manager = caching(counted.keyring, max_bytes=1000)
    sizes = [600, 400, 1, 999, 0, 1000, 1001, 0, 1000, 0]
    keys = [edks_of(m) for m in encrypt_many(manager, sizes)]
    # 600+400 reach the limit (retired); so do 1+999 and 0+1000; 1001 alone exceeds it (fresh key, never
    # cached); the last 0 starts an entry that the next 1000 still fits into exactly
    labels = dict(zip(dict.fromkeys(keys), "ABCDEF"))
    assert "".join(labels[k] for k in keys) == "AABBCCDEEF"
    stats = manager.stats
    assert (stats.bypass_too_large, stats.entries_created, stats.evicted_bytes) == (1, 5, 4)
    assert counted.keyring.wraps == 6
    fresh = caching(counted.keyring, max_bytes=1000)  # a first message of exactly max_bytes fills its entry
    encrypt_many(fresh, [1000])
    assert (fresh.stats.misses, fresh.stats.entries_created, len(fresh.cache)) == (1, 0, 0)


def test_a_message_longer_than_max_bytes_gets_a_fresh_uncached_key(counted: Counted) -> None:
    manager = caching(counted.keyring, max_bytes=KIB)
    small, big, big2, small2 = encrypt_many(manager, [10, KIB + 1, KIB + 1, 10])
    assert edks_of(small) == edks_of(small2)
    assert len({edks_of(small), edks_of(big), edks_of(big2)}) == 3
    stats = manager.stats
    assert (stats.bypass_too_large, stats.keyring_encrypt_calls, stats.hits) == (2, 3, 1)


@pytest.mark.parametrize("max_messages", [1, 2, 3, 7])
def test_max_messages_retires_an_entry_after_its_last_message(counted: Counted, max_messages: int) -> None:
    manager = caching(counted.keyring, max_messages=max_messages)
    messages = encrypt_many(manager, [10] * 20)
    expected = [max_messages] * (20 // max_messages) + ([20 % max_messages] if 20 % max_messages else [])
    assert runs([edks_of(m) for m in messages]) == expected
    assert counted.keyring.wraps == len(expected)
    if max_messages == 1:
        assert manager.stats.entries_created == 0 and len(manager.cache) == 0  # nothing ever reusable


def test_max_age_retires_an_entry_exactly_at_its_age(counted: Counted) -> None:
    clock = FakeClock(1000.0)
    manager = caching(counted.keyring, clock=clock, max_age=10)
    first = encrypt_many(manager, [10])[0]
    clock.now = 1009.999  # just before max_age: served from the cache
    second = encrypt_many(manager, [10])[0]
    assert edks_of(first) == edks_of(second) and counted.keyring.wraps == 1
    clock.now = 1010.0  # exactly max_age after it was made: never handed out again
    third = encrypt_many(manager, [10])[0]
    assert edks_of(third) != edks_of(first) and counted.keyring.wraps == 2
    assert manager.stats.evicted_age == 1
    clock.now = 1019.999
    assert edks_of(encrypt_many(manager, [10])[0]) == edks_of(third)
    clock.now = 1020.0
    assert edks_of(encrypt_many(manager, [10])[0]) != edks_of(third)
    assert manager.stats.evicted_age == 2 and counted.keyring.wraps == 3


def test_max_age_applies_to_decryption_entries(counted: Counted) -> None:
    message = encrypt_many(caching(counted.plain), [10])[0]
    clock = FakeClock(50.0)
    reader = caching(counted.keyring, clock=clock, max_age=2.5)
    envelope.decrypt(message, materials_manager=reader)
    clock.now = 52.499
    envelope.decrypt(message, materials_manager=reader)
    assert counted.keyring.unwraps == 1
    clock.now = 52.5
    envelope.decrypt(message, materials_manager=reader)
    assert counted.keyring.unwraps == 2 and reader.stats.evicted_age == 1


def test_age_is_counted_from_before_the_keyring_call(counted: Counted) -> None:
    """A keyring slower than max_age yields a key that is used once and never stored."""
    clock = FakeClock(0.0)

    def slow() -> None:
        clock.now += 10.0

    counted.keyring.on_wrap = slow
    manager = caching(counted.keyring, clock=clock, max_age=10)
    a, b = encrypt_many(manager, [10, 10])
    assert edks_of(a) != edks_of(b) and manager.stats.entries_created == 0
    counted.keyring.on_wrap = None
    c, d = encrypt_many(manager, [10, 10])
    assert edks_of(c) == edks_of(d)


def test_the_clock_is_monotonic_by_default() -> None:
    import time

    assert envelope.LocalCache(1).clock is time.monotonic


# ---------------------------------------------------------------------------------------------------------
# what an entry is keyed by


def test_a_different_context_gets_a_different_entry(counted: Counted) -> None:
    manager = caching(counted.keyring)
    a1 = encrypt_many(manager, [10], {"tenant": "a"})[0]
    b1 = encrypt_many(manager, [10], {"tenant": "b"})[0]
    a2 = encrypt_many(manager, [10], {"tenant": "a"})[0]
    empty1, empty2 = encrypt_many(manager, [10, 10], {})
    swapped = encrypt_many(manager, [10], {"stage": "unit", "app": "cache-test"})[0]
    ordered = encrypt_many(manager, [10], {"app": "cache-test", "stage": "unit"})[0]
    assert edks_of(a1) == edks_of(a2) != edks_of(b1)
    assert edks_of(empty1) == edks_of(empty2) not in (edks_of(a1), edks_of(b1))
    assert edks_of(swapped) == edks_of(ordered)  # the context is keyed by its sorted serialization
    assert counted.keyring.wraps == 4
    assert envelope.decrypt(b1, keyring=counted.plain).context == {"tenant": "b"}


def test_requested_suite_and_commitment_policy_are_part_of_the_key(counted: Counted) -> None:
    manager = caching(counted.keyring)
    default = encrypt_many(manager, [10])[0]
    named = encrypt_many(manager, [10], algorithm=0x0478)[0]
    signed = encrypt_many(manager, [10], algorithm=0x0578)[0]
    allow = encrypt_many(manager, [10], commitment_policy=READ_ANY)[0]
    forbid = encrypt_many(manager, [10], commitment_policy=FORBID)[0]
    assert len({edks_of(m) for m in (default, named, signed, allow, forbid)}) == 5
    assert envelope.read_header(io.BytesIO(forbid))[0].suite.id == 0x0378
    # a hit never skips the policy check: the committing suite cached above is refused under FORBID
    with pytest.raises(envelope.UsageError):
        encrypt_many(manager, [10], algorithm=0x0478, commitment_policy=FORBID)
    assert counted.keyring.wraps == 5


def test_partitions_separate_managers_sharing_one_cache(counted: Counted) -> None:
    cache = envelope.LocalCache(10, clock=FakeClock())
    one = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60)
    two = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60)
    assert one.partition != two.partition
    assert edks_of(encrypt_many(one, [10])[0]) != edks_of(encrypt_many(two, [10])[0])
    shared_a = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60, partition="team")
    shared_b = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60, partition="team")
    assert edks_of(encrypt_many(shared_a, [10])[0]) == edks_of(encrypt_many(shared_b, [10])[0])
    assert counted.keyring.wraps == 3 and len(cache) == 3


def test_managers_sharing_a_partition_each_get_their_own_limits(counted: Counted) -> None:
    cache = envelope.LocalCache(10, clock=FakeClock())
    loose = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60, max_messages=100,
                                             partition="p")
    tight = envelope.CachingMaterialsManager(counted.keyring, cache, max_age=60, max_messages=3, partition="p")
    users = [tight, loose] * 6 + [loose] * 10
    seen: collections.Counter[tuple[EncryptedDataKey, ...]] = collections.Counter()
    for user in users:
        key = edks_of(encrypt_many(user, [10])[0])
        seen[key] += 1
        # each checkout respects the limits of the manager making it, counting every earlier use of the key
        assert seen[key] <= user.max_messages
    assert max(seen.values()) > 3  # the loose manager alone may go past the tight limit


# ---------------------------------------------------------------------------------------------------------
# the LRU


def test_capacity_evicts_the_least_recently_used_entry(counted: Counted) -> None:
    manager = caching(counted.keyring, capacity=2)
    a = edks_of(encrypt_many(manager, [10], {"k": "a"})[0])
    b = edks_of(encrypt_many(manager, [10], {"k": "b"})[0])
    assert edks_of(encrypt_many(manager, [10], {"k": "a"})[0]) == a  # a is now the most recently used
    c = edks_of(encrypt_many(manager, [10], {"k": "c"})[0])  # evicts b, the least recently used
    assert manager.stats.evicted_capacity == 1 and len(manager.cache) == 2
    assert counted.keyring.wraps == 3
    assert edks_of(encrypt_many(manager, [10], {"k": "a"})[0]) == a
    assert edks_of(encrypt_many(manager, [10], {"k": "c"})[0]) == c
    assert counted.keyring.wraps == 3
    assert edks_of(encrypt_many(manager, [10], {"k": "b"})[0]) != b  # b was evicted: a new key
    assert counted.keyring.wraps == 4 and manager.stats.evicted_capacity == 2


def test_capacity_covers_decryption_entries_too(counted: Counted) -> None:
    writer = caching(counted.plain)
    messages = [encrypt_many(writer, [10], {"k": str(i)})[0] for i in range(3)]
    reader = caching(counted.keyring, capacity=2)
    for m in messages:
        envelope.decrypt(m, materials_manager=reader)
    envelope.decrypt(messages[2], materials_manager=reader)
    envelope.decrypt(messages[1], materials_manager=reader)
    assert counted.keyring.unwraps == 3
    envelope.decrypt(messages[0], materials_manager=reader)
    assert counted.keyring.unwraps == 4 and reader.stats.evicted_capacity == 2


def test_clear_drops_every_entry(counted: Counted) -> None:
    manager = caching(counted.keyring)
    encrypt_many(manager, [10, 10])
    manager.cache.clear()
    assert len(manager.cache) == 0
    encrypt_many(manager, [10])
    assert counted.keyring.wraps == 2


# ---------------------------------------------------------------------------------------------------------
# suites


@pytest.mark.parametrize("suite_id", [0x0014, 0x0046, 0x0078])
def test_identity_kdf_suites_are_never_cached(counted: Counted, suite_id: int) -> None:
    encryptor = caching(counted.keyring)
    plaintexts = [os.urandom(50) for _ in range(4)]
    messages = [envelope.encrypt(p, materials_manager=encryptor, context=CONTEXT, algorithm=suite_id,
                                 commitment_policy=FORBID) for p in plaintexts]
    assert len({edks_of(m) for m in messages}) == 4 and counted.keyring.wraps == 4
    assert encryptor.stats.bypass_identity_kdf == 4 and len(encryptor.cache) == 0
    # decrypting the same message twice still calls the keyring twice
    decryptor = caching(counted.keyring)
    for _ in range(2):
        assert envelope.decrypt(messages[0], materials_manager=decryptor,
                                commitment_policy=READ_ANY).plaintext == plaintexts[0]
    assert counted.keyring.unwraps == 2 and decryptor.stats.bypass_identity_kdf == 2
    assert decryptor.stats.entries_created == 0 and len(decryptor.cache) == 0
    assert counted.esdk_decrypt(messages[1]) == plaintexts[1]


def test_an_identity_suite_picked_by_the_underlying_manager_is_not_cached(counted: Counted) -> None:
    class PicksIdentity:
        def __init__(self) -> None:
            self.inner = envelope.DefaultMaterialsManager(counted.keyring)

        def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
            return self.inner.get_encryption_materials(dataclasses.replace(request, suite=SUITES[0x0078]))

        def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
            return self.inner.decrypt_materials(request)

    manager = caching(PicksIdentity())
    messages = encrypt_many(manager, [10, 10, 10], commitment_policy=FORBID)
    assert len({edks_of(m) for m in messages}) == 3
    assert manager.stats.bypass_identity_kdf == 3 and len(manager.cache) == 0


@pytest.mark.parametrize("suite_id", [0x0214, 0x0346, 0x0378, 0x0578])
def test_signed_suites_are_cached_with_their_signing_key(counted: Counted, suite_id: int) -> None:
    policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else FORBID
    manager = caching(counted.keyring, max_messages=3)
    plaintexts = [os.urandom(300) for _ in range(5)]
    messages = [envelope.encrypt(p, materials_manager=manager, context=CONTEXT, algorithm=suite_id,
                                 commitment_policy=policy) for p in plaintexts]
    headers = [envelope.read_header(io.BytesIO(m))[0] for m in messages]
    public_keys = [h.encryption_context["aws-crypto-public-key"] for h in headers]
    assert public_keys[0] == public_keys[1] == public_keys[2] != public_keys[3] == public_keys[4]
    assert runs([h.encrypted_data_keys for h in headers]) == [3, 2] and counted.keyring.wraps == 2
    for message, plaintext in zip(messages, plaintexts):  # every signature verifies
        assert envelope.decrypt(message, keyring=counted.plain, commitment_policy=READ_ANY).plaintext == plaintext
    assert counted.esdk_decrypt(messages[2]) == plaintexts[2]
    reader = caching(counted.keyring)
    for message in messages:
        envelope.decrypt(message, materials_manager=reader, commitment_policy=READ_ANY)
    assert counted.keyring.unwraps == 2  # one per shared data key (same EDKs, same public key)


# ---------------------------------------------------------------------------------------------------------
# concurrency


def test_hammer_8_threads_never_exceed_the_limits_per_data_key(counted: Counted) -> None:
    """8 threads x 150 messages of random sizes; the keyring is slowed so threads race on misses."""
    max_messages, max_bytes = 9, 6000
    counted.keyring.on_wrap = lambda: threading.Event().wait(0.0005)
    manager = caching(counted.keyring, max_messages=max_messages, max_bytes=max_bytes)
    results: list[list[tuple[bytes, bytes]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        rng = random.Random(slot)
        try:
            start.wait()
            for _ in range(150):
                plaintext = os.urandom(rng.choice([0, 1, 10, 100, 200, 200, 400, 3000, 5999, 6000]))
                results[slot].append((plaintext, envelope.encrypt(plaintext, materials_manager=manager,
                                                                  context=CONTEXT)))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    produced = [pair for per_thread in results for pair in per_thread]
    assert len(produced) == 1200
    messages_per_key: collections.Counter[tuple[EncryptedDataKey, ...]] = collections.Counter()
    bytes_per_key: collections.Counter[tuple[EncryptedDataKey, ...]] = collections.Counter()
    for plaintext, message in produced:
        key = edks_of(message)
        messages_per_key[key] += 1
        bytes_per_key[key] += len(plaintext)
    assert max(messages_per_key.values()) <= max_messages
    assert max(bytes_per_key.values()) <= max_bytes
    # both limits were actually reached (the test would pass vacuously otherwise) and keys were reused
    assert max(messages_per_key.values()) == max_messages
    stats = manager.stats
    assert stats.evicted_messages > 0 and stats.evicted_bytes > 0
    assert counted.keyring.wraps == len(messages_per_key) < 1200
    assert stats.hits + stats.misses == 1200 and stats.keyring_encrypt_calls == counted.keyring.wraps
    for plaintext, message in random.Random(0).sample(produced, 40):
        assert envelope.decrypt(message, keyring=counted.plain).plaintext == plaintext


def test_hammer_checkouts_without_the_api(counted: Counted) -> None:
    """8 threads x 2,000 direct checkouts: the reserved messages and bytes per data key stay in bounds."""
    max_messages, max_bytes = 50, 40_000
    manager = caching(counted.keyring, max_messages=max_messages, max_bytes=max_bytes)
    usage: list[list[tuple[bytes, int]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        rng = random.Random(100 + slot)
        try:
            start.wait()
            for _ in range(2000):
                n = rng.randrange(0, 4000)
                m = manager.get_encryption_materials(EncryptionRequest(
                    CONTEXT, CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, plaintext_length=n))
                usage[slot].append((m.data_key, n))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    messages: collections.Counter[bytes] = collections.Counter()
    total: collections.Counter[bytes] = collections.Counter()
    for per_thread in usage:
        for data_key, n in per_thread:
            messages[data_key] += 1
            total[data_key] += n
    assert sum(messages.values()) == 16000
    assert max(messages.values()) <= max_messages and max(total.values()) <= max_bytes
    # keys were reused (racing misses may each call the keyring, so the exact count varies between runs)
    assert counted.keyring.wraps == len(messages) and manager.stats.hits > 16000 // 2


def test_two_threads_missing_the_same_entry_both_call_the_keyring(counted: Counted) -> None:
    """No lock is held around the keyring: both misses proceed; the first stored entry wins."""
    both_inside = threading.Barrier(2, timeout=10)
    counted.keyring.on_wrap = both_inside.wait
    manager = caching(counted.keyring, max_messages=4)
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda: out.append(encrypt_many(manager, [10])[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted.keyring.wraps == 2 and len({edks_of(m) for m in out}) == 2
    assert manager.stats.entries_created == 1 and manager.stats.misses == 2
    counted.keyring.on_wrap = None
    later = [edks_of(m) for m in encrypt_many(manager, [10] * 4)]
    assert later[0] in {edks_of(m) for m in out}
    assert max(collections.Counter([*later, *(edks_of(m) for m in out)]).values()) <= 4


# ---------------------------------------------------------------------------------------------------------
# construction and stats


@pytest.mark.parametrize("kwargs", [
    {"max_age": 0}, {"max_age": -1}, {"max_age": float("inf")}, {"max_age": float("nan")}, {"max_age": "60"},
    {"max_age": 60, "max_messages": 0}, {"max_age": 60, "max_messages": 2**32 + 1},
    {"max_age": 60, "max_messages": True}, {"max_age": 60, "max_bytes": -1},
    {"max_age": 60, "max_bytes": 2**63}, {"max_age": 60, "partition": ""},
    {"max_age": 60, "partition": "a\x00b"},
])
def test_bad_settings_are_usage_errors(counted: Counted, kwargs: dict[str, object]) -> None:
    with pytest.raises(envelope.UsageError):
        envelope.CachingMaterialsManager(counted.keyring, envelope.LocalCache(1), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_bad_capacity_is_a_usage_error(capacity: object) -> None:
    with pytest.raises(envelope.UsageError):
        envelope.LocalCache(capacity)  # type: ignore[arg-type]


def test_wraps_a_keyring_or_a_manager_and_nothing_else(counted: Counted) -> None:
    assert isinstance(caching(counted.keyring).underlying, envelope.DefaultMaterialsManager)
    inner = envelope.DefaultMaterialsManager(counted.keyring)
    assert caching(inner).underlying is inner
    with pytest.raises(envelope.UsageError):
        caching(object())  # type: ignore[arg-type]
    with pytest.raises(envelope.UsageError):
        envelope.CachingMaterialsManager(counted.keyring, {}, max_age=1)  # type: ignore[arg-type]


def test_limits_at_the_extremes_are_accepted(counted: Counted) -> None:
    manager = caching(counted.keyring, max_messages=2**32, max_bytes=2**63 - 1)
    assert (manager.max_messages, manager.max_bytes) == (2**32, 2**63 - 1)
    encrypt_many(manager, [0, 5])
    zero = caching(counted.keyring, max_bytes=0)  # nothing can be cached: every message is "too large" or full
    encrypt_many(zero, [0, 0, 1])
    assert zero.stats.entries_created == 0 and zero.stats.bypass_too_large == 1


def test_stats_snapshot_dict_and_sum(counted: Counted) -> None:
    manager = caching(counted.keyring, max_messages=2)
    encrypt_many(manager, [1, 1, 1])
    snapshot = manager.stats
    encrypt_many(manager, [1])
    assert snapshot.hits == 1 and manager.stats.hits == 2  # a snapshot does not change afterwards
    flat = snapshot.as_dict()
    assert flat == {"hits": 1, "misses": 2, "entries_created": 2, "evicted_age": 0, "evicted_messages": 1,
                    "evicted_bytes": 0, "evicted_capacity": 0, "keyring_encrypt_calls": 2,
                    "keyring_decrypt_calls": 0, "bypass_unknown_length": 0, "bypass_too_large": 0,
                    "bypass_identity_kdf": 0}
    assert (snapshot + manager.stats).hits == 3
    assert "test-key" in str(manager)


def test_no_key_material_in_reprs(counted: Counted) -> None:
    manager = caching(counted.keyring)
    materials = manager.get_encryption_materials(EncryptionRequest(
        CONTEXT, CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, plaintext_length=10))
    for text in (repr(manager), str(manager), repr(manager.cache), repr(manager.stats), repr(materials)):
        assert materials.data_key.hex() not in text and repr(materials.data_key) not in text


def test_cached_materials_cannot_be_changed_in_place(counted: Counted) -> None:
    manager = caching(counted.keyring)
    request = EncryptionRequest(CONTEXT, CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, plaintext_length=1)
    first = manager.get_encryption_materials(request)
    with pytest.raises(TypeError):
        first.context["app"] = "changed"  # type: ignore[index]
    assert manager.get_encryption_materials(request).context == CONTEXT


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(envelope._cache)
    assert result.attempted > 0 and result.failed == 0

# ---------------------------------------------------------------------------------------------------------
# unknown plaintext length: the API reads ahead (envelope._cache module docs, "Unknown plaintext length")


@contextlib.contextmanager
def piped(data: bytes) -> Iterator[BinaryIO]:
    """A real, non-seekable pipe fed by a thread."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(write_fd, "wb") as sink:
            sink.write(data)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with open(read_fd, "rb") as stream:
        assert not stream.seekable()
        yield stream
    feeder.join(timeout=10)


class ReadOnly:
    """An input with ``read`` and nothing else (no seek, no readinto, no length), returning short reads."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._data.read(min(n, 777) if n >= 0 else -1)


def encrypt_from(source: object, manager: envelope.MaterialsManager, **kwargs: object) -> bytes:
    out = io.BytesIO()
    envelope.encrypt_stream(source, out, materials_manager=manager, context=CONTEXT, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("kind", ["pipe", "read-only object"])
def test_a_small_message_of_unknown_length_is_served_from_the_cache(counted: Counted, kind: str) -> None:
    manager = caching(counted.keyring)
    first = encrypt_many(manager, [KIB])[0]
    data = os.urandom(KIB)
    if kind == "pipe":
        with piped(data) as stream:
            message = encrypt_from(stream, manager)
    else:
        message = encrypt_from(ReadOnly(data), manager)
    assert edks_of(message) == edks_of(first) and counted.keyring.wraps == 1
    assert (manager.stats.hits, manager.stats.bypass_unknown_length) == (1, 0)
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == data
    assert counted.esdk_decrypt(message) == data


def test_a_large_piped_message_gets_its_own_key_and_leaves_the_entry_alone(counted: Counted) -> None:
    manager = caching(counted.keyring, max_messages=3)
    first = encrypt_many(manager, [KIB])[0]
    data = os.urandom(envelope._cache.READ_AHEAD_BYTES + 1)
    with piped(data) as stream:
        big = encrypt_from(stream, manager)
    assert edks_of(big) != edks_of(first)
    assert (manager.stats.bypass_unknown_length, counted.keyring.wraps) == (1, 2)
    # the bypass neither used nor retired the entry: two more messages fit before max_messages=3
    after = encrypt_many(manager, [KIB, KIB, KIB])
    assert [edks_of(m) == edks_of(first) for m in after] == [True, True, False]
    assert envelope.decrypt(big, keyring=counted.plain).plaintext == data


@pytest.mark.parametrize(("extra", "cached"), [(0, True), (1, False)])
def test_read_ahead_stops_at_one_mebibyte(counted: Counted, extra: int, cached: bool) -> None:
    manager = caching(counted.keyring)
    first = encrypt_many(manager, [10])[0]
    data = os.urandom(envelope._cache.READ_AHEAD_BYTES + extra)
    with piped(data) as stream:
        message = encrypt_from(stream, manager, frame_length=64 * KIB)
    assert (edks_of(message) == edks_of(first)) is cached
    assert manager.stats.bypass_unknown_length == (0 if cached else 1)
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == data


@pytest.mark.parametrize(("size", "learned"), [(0, True), (999, True), (1000, True), (1001, False)])
def test_read_ahead_is_bounded_by_max_bytes(counted: Counted, size: int, learned: bool) -> None:
    manager = caching(counted.keyring, max_bytes=1000)
    assert manager.read_ahead_limit(EncryptionRequest(CONTEXT, CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)) \
        == 1000
    data = os.urandom(size)
    message = encrypt_from(ReadOnly(data), manager, frame_length=100)
    assert manager.stats.bypass_unknown_length == (0 if learned else 1)
    assert manager.stats.misses == (1 if learned else 0)
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == data


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 999, 1000, 1001, 5 * 1024 * 1024 + 7])
def test_read_ahead_loses_and_reorders_nothing(counted: Counted, size: int) -> None:
    """Bytes read ahead are pushed back in front of the rest, with the threaded engine too."""
    manager = caching(counted.keyring, max_bytes=1000)
    data = os.urandom(size)
    with piped(data) as stream:
        message = encrypt_from(stream, manager, frame_length=100 if size < 5000 else 64 * KIB, threads=2)
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == data


def test_identity_suites_do_not_read_ahead(counted: Counted) -> None:
    manager = caching(counted.keyring)
    request = EncryptionRequest(CONTEXT, CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT, suite=SUITES[0x0078])
    assert manager.read_ahead_limit(request) is None
    reads: list[int] = []

    class Recording(ReadOnly):
        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return super().read(n)

    encrypt_from(Recording(b"x" * 10), manager, algorithm=0x0078, commitment_policy=FORBID)
    assert envelope._cache.READ_AHEAD_BYTES + 1 not in reads
    assert (manager.stats.bypass_identity_kdf, manager.stats.bypass_unknown_length) == (1, 0)


def test_without_a_caching_manager_nothing_is_read_ahead(counted: Counted) -> None:
    reads: list[int] = []

    class Recording(ReadOnly):
        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return super().read(n)

    out = io.BytesIO()
    envelope.encrypt_stream(Recording(b"y" * 10), out, keyring=counted.keyring)  # type: ignore[arg-type]
    assert envelope._cache.READ_AHEAD_BYTES + 1 not in reads
    assert envelope.decrypt(out.getvalue(), keyring=counted.plain).plaintext == b"y" * 10


def test_a_declared_length_is_enforced_before_the_extra_bytes_are_encrypted(counted: Counted) -> None:
    manager = caching(counted.keyring, max_bytes=100)
    with pytest.raises(envelope.UsageError, match="declared plaintext length"):
        encrypt_from(io.BytesIO(os.urandom(1000)), manager, plaintext_length=10)
    with pytest.raises(envelope.UsageError, match="declared plaintext length"):
        encrypt_from(io.BytesIO(os.urandom(6 * 1024 * 1024)), manager, plaintext_length=5 * 1024 * 1024,
                     threads=2)
    with pytest.raises(envelope.UsageError):
        encrypt_from(io.BytesIO(b""), manager, plaintext_length=-1)
    # exactly the declared length, or less, is fine
    for size in (10, 3):
        data = os.urandom(size)
        message = encrypt_from(io.BytesIO(data), manager, plaintext_length=10)
        assert envelope.decrypt(message, keyring=counted.plain).plaintext == data


def test_one_shot_encrypt_counts_bytes_not_items(counted: Counted) -> None:
    import array

    manager = caching(counted.keyring, max_bytes=1000)
    words = array.array("I", range(200))  # 200 items, 800 bytes
    message = envelope.encrypt(memoryview(words), materials_manager=manager, context=CONTEXT)
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == words.tobytes()
    encrypt_many(manager, [200])  # 800 + 200 = 1000: fits exactly in the same entry
    assert manager.stats.hits == 1 and manager.stats.evicted_bytes == 1


def test_age_is_checked_after_the_read_ahead(counted: Counted) -> None:
    """The checkout happens once the input has been read ahead, so a slow pipe cannot get an expired key."""
    clock = FakeClock(0.0)
    manager = caching(counted.keyring, clock=clock, max_age=5)
    first = encrypt_many(manager, [10])[0]
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as sink:
            sink.write(b"a" * 10)
            sink.flush()
            clock.now = 5.0  # the entry expires while the input is still arriving
            sink.write(b"b" * 10)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(read_fd, "rb") as stream:
        message = encrypt_from(stream, manager)
    feeder.join()
    assert edks_of(message) != edks_of(first) and manager.stats.evicted_age == 1
    assert envelope.decrypt(message, keyring=counted.plain).plaintext == b"a" * 10 + b"b" * 10
