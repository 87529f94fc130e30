"""Issue 16: what the small-message fast paths remember never changes what the data-key cache does.

The keyring is called exactly once per ceil(N / max_messages) messages; the remembered cache identifiers are the
ones the formula gives and differ whenever an input of the formula differs.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import pytest

import envelope
from envelope._cache import CachingMaterialsManager, LocalCache
from envelope._format import EncryptedDataKey, serialize_context
from envelope._materials import DecryptionRequest, EncryptionRequest
from envelope._suites import SUITES, AlgorithmSuite, CommitmentPolicy


class CountingKeyring:
    """A raw AES keyring that counts its calls (the ESDK's on_encrypt / on_decrypt)."""

    def __init__(self) -> None:
        self.inner = envelope.RawAesKeyring("count", "key", bytes(range(32)))
        self.wraps = 0
        self.unwraps = 0

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        self.wraps += 1
        return self.inner.wrap(suite, context, data_key)

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]) -> bytes:
        self.unwraps += 1
        return self.inner.unwrap(suite, context, edks)


@pytest.mark.parametrize(("messages", "max_messages"), [(1, 1), (7, 1), (100, 100), (101, 100), (250, 100),
                                                         (1000, 7), (64, 3)])
def test_keyring_calls_are_ceil_of_messages_over_max_messages(messages: int, max_messages: int) -> None:
    keyring = CountingKeyring()
    manager = CachingMaterialsManager(keyring, LocalCache(10), max_age=300.0, max_messages=max_messages)
    made = [envelope.encrypt(b"x" * 1024, materials_manager=manager, context={"purpose": "count"})
            for _ in range(messages)]
    assert keyring.wraps == math.ceil(messages / max_messages)
    assert manager.stats.keyring_encrypt_calls == keyring.wraps
    # decrypt: one keyring call per distinct data key (decrypt entries are limited by age only)
    reader = CachingMaterialsManager(keyring, LocalCache(1000), max_age=300.0)
    for message in made:
        assert envelope.decrypt(message, materials_manager=reader).plaintext == b"x" * 1024
    assert keyring.unwraps == math.ceil(messages / max_messages)
    for message in made:  # all hits now
        envelope.decrypt(message, materials_manager=reader)
    assert keyring.unwraps == math.ceil(messages / max_messages)


def test_messages_of_different_contexts_never_share_a_data_key() -> None:
    keyring = CountingKeyring()
    manager = CachingMaterialsManager(keyring, LocalCache(10), max_age=300.0, max_messages=100)
    for i in range(30):
        envelope.encrypt(b"x", materials_manager=manager, context={"n": str(i % 3)})
    assert keyring.wraps == 3
    one = envelope.encrypt(b"x", materials_manager=manager, context={"n": "0"})
    other = envelope.encrypt(b"x", materials_manager=manager, context={"n": "1"})
    headers = [envelope.decrypt(m, keyring=keyring.inner).header for m in (one, other)]
    assert headers[0].encrypted_data_keys != headers[1].encrypted_data_keys


def _formula_encrypt(manager: CachingMaterialsManager, request: EncryptionRequest) -> bytes:
    """The encrypt identifier of envelope._cache's documentation, computed from scratch."""
    suite = request.suite
    policy = {CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT: b"\x01",
              CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT: b"\x02",
              CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT: b"\x03"}[request.commitment_policy]
    data = (b"\x01\x00\x01\x00" + manager.partition.encode() + b"\x00"
            + (b"\x00" if suite is None else b"\x01\x00" + suite.id.to_bytes(2, "big"))
            + b"\x00" + policy + b"\x00" + serialize_context(request.context))
    if request.required_context_keys:
        data += b"\x00" + serialize_context(dict.fromkeys(request.required_context_keys, ""))
    return hashlib.sha384(data).digest()


def _formula_decrypt(manager: CachingMaterialsManager, request: DecryptionRequest) -> bytes:
    data = (b"\x01\x00\x02\x00" + manager.partition.encode() + b"\x00" + request.suite.id.to_bytes(2, "big")
            + b"\x00" + b"".join(sorted(e.serialize() for e in request.encrypted_data_keys)) + b"\x00"
            + serialize_context(request.context))
    if request.required_context_keys:
        data += b"\x00" + serialize_context(dict.fromkeys(request.required_context_keys, ""))
    return hashlib.sha384(data).digest()


def test_remembered_identifiers_are_the_formula_and_differ_with_every_input() -> None:
    manager = CachingMaterialsManager(CountingKeyring(), LocalCache(10), max_age=300.0, partition="p")
    policies = list(CommitmentPolicy)
    requests = [EncryptionRequest(context, policy, suite, None, required)
                for context in ({}, {"a": "1"}, {"a": "2"}, {"a": "1", "b": ""})
                for policy in policies
                for suite in (None, SUITES[0x0478], SUITES[0x0578])
                for required in (frozenset(), frozenset(context))]
    for _ in range(2):  # computed, then remembered
        ids = [manager._encrypt_id(r) for r in requests]
        assert ids == [_formula_encrypt(manager, r) for r in requests]
    assert len({(r.context.items().__repr__(), r.commitment_policy, r.suite, r.required_context_keys)
                for r in requests}) == len(set(ids))
    edk = [EncryptedDataKey("ns", b"info-%d" % i, b"ct") for i in range(3)]
    drequests = [DecryptionRequest(suite, edks, context, required)
                 for suite in (SUITES[0x0478], SUITES[0x0578])
                 for edks in ((edk[0],), (edk[1],), (edk[0], edk[1]), (edk[1], edk[0]))
                 for context in ({"a": "1"}, {"a": "2"})
                 for required in (frozenset(), frozenset({"a"}))]
    for _ in range(2):
        dids = [manager._decrypt_id(r) for r in drequests]
        assert dids == [_formula_decrypt(manager, r) for r in drequests]
    # EDK order does not matter to the formula (sorted); everything else does
    assert len(set(dids)) == len(drequests) - len(drequests) // 4
    other = CachingMaterialsManager(CountingKeyring(), LocalCache(10), max_age=300.0, partition="q")
    assert other._encrypt_id(requests[1]) != manager._encrypt_id(requests[1])
    listed = DecryptionRequest(SUITES[0x0478], list(edk), {"a": "1"})  # type: ignore[arg-type]
    assert manager._decrypt_id(listed) == _formula_decrypt(manager, listed)  # unhashable: not remembered


def test_cached_headers_are_the_bytes_of_a_fresh_serialisation() -> None:
    from envelope import _format as fmt

    keyring = CountingKeyring()
    manager = CachingMaterialsManager(keyring, LocalCache(10), max_age=300.0, max_messages=50)
    for i in range(60):
        context = {"n": str(i % 4), "purpose": "template"}
        frame = 64 if i % 2 else 4096
        message = envelope.encrypt(b"y" * (i * 3), materials_manager=manager, context=context, frame_length=frame,
                                   required_context_keys=["n"] if i % 3 == 0 else None)
        header = fmt.parse_header(message)[0]
        assert fmt.serialize_header_body(header) == header.raw
        assert header.frame_length == frame
        expected = {"purpose": "template"} if i % 3 == 0 else context
        assert header.encryption_context == expected
        reproduced = {"n": context["n"]} if i % 3 == 0 else None
        assert envelope.decrypt(message, keyring=keyring.inner, reproduced_context=reproduced).plaintext \
            == b"y" * (i * 3)


def test_a_template_never_outlives_its_materials() -> None:
    import gc

    from envelope import _api
    from envelope._materials import EncryptionMaterials

    suite = SUITES[0x0478]
    seen = set()
    for i in range(50):  # new materials, often at the id of the last ones
        edk = EncryptedDataKey("ns", b"info-%d" % i, b"c" * 48)
        materials = EncryptionMaterials(suite, bytes(32), (edk,), MappingProxyType({"i": str(i)}))
        template = _api._template(materials, materials.context, 1024)
        assert template == fmt_template(materials)
        seen.add(id(materials))
        del materials
        gc.collect()
    assert len(seen) < 50  # ids were reused, and no template came back for other materials


def fmt_template(materials: object) -> tuple[bytes, bytes]:
    from envelope import _format as fmt

    return fmt.header_template(materials.suite, materials.context,  # type: ignore[attr-defined]
                               materials.encrypted_data_keys, 1024)  # type: ignore[attr-defined]


class LockedCountingKeyring(CountingKeyring):
    """CountingKeyring safe to call from several threads."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def wrap(self, suite: AlgorithmSuite, context: Mapping[str, str], data_key: bytes | None = None
             ) -> tuple[bytes, list[EncryptedDataKey]]:
        with self._lock:
            self.wraps += 1
        return self.inner.wrap(suite, context, data_key)

    def unwrap(self, suite: AlgorithmSuite, context: Mapping[str, str], edks: Sequence[EncryptedDataKey]) -> bytes:
        with self._lock:
            self.unwraps += 1
        return self.inner.unwrap(suite, context, edks)


def _hammer(work: Callable[[int], None], threads: int = 6) -> None:
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            start.wait()
            work(slot)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors


def test_hits_count_themselves_exactly_under_threads_with_two_managers_on_one_cache() -> None:
    """A hit is counted in the step that checks it out (one lock): the counters of each of two managers sharing a
    cache add up exactly, the keyring calls are the misses, and no data key serves more than max_messages."""
    keyring = LockedCountingKeyring()
    cache = LocalCache(50)
    managers = [CachingMaterialsManager(keyring, cache, max_age=300.0, max_messages=9) for _ in range(2)]
    per_thread, contexts = 300, [{"purpose": f"c{i}"} for i in range(3)]
    made: list[list[tuple[bytes, dict[str, str]]]] = [[] for _ in range(6)]

    def encrypt(slot: int) -> None:
        manager = managers[slot % 2]
        for i in range(per_thread):
            context = contexts[i % 3]
            made[slot].append((envelope.encrypt(b"m" * (i % 50), materials_manager=manager, context=context),
                               context))
            if i % 50 == 0:
                assert manager.stats.hits >= 0  # snapshots while others count: no deadlock

    _hammer(encrypt)
    total = 6 * per_thread
    stats = [m.stats for m in managers]
    for s in stats:
        assert s.hits + s.misses == total // 2
        assert s.keyring_encrypt_calls == s.misses
        assert s.evicted_messages <= s.misses
    assert keyring.wraps == sum(s.keyring_encrypt_calls for s in stats)
    per_key: dict[bytes, int] = {}
    for slot in made:
        for message, context in slot:
            header = envelope.read_header(io.BytesIO(message))[0]
            assert dict(header.encryption_context) == context
            edk = header.encrypted_data_keys[0].ciphertext
            per_key[edk] = per_key.get(edk, 0) + 1
    assert max(per_key.values()) <= 9
    assert len(per_key) == keyring.wraps

    # decrypt: two readers share one cache; every message opens with the right plaintext, hits + misses exact
    readers = [CachingMaterialsManager(keyring, LocalCache(1000), max_age=300.0) for _ in range(2)]
    before = keyring.unwraps

    def decrypt(slot: int) -> None:
        reader = readers[slot % 2]
        for i, (message, context) in enumerate(made[slot]):
            result = envelope.decrypt(message, materials_manager=reader)
            assert result.plaintext == b"m" * (i % 50)
            assert dict(result.context) == context

    _hammer(decrypt)
    rstats = [r.stats for r in readers]
    for s in rstats:
        assert s.hits + s.misses == total // 2
        assert s.keyring_decrypt_calls == s.misses
    assert keyring.unwraps - before == sum(s.keyring_decrypt_calls for s in rstats)


def test_a_decrypt_hit_never_serves_another_messages_key() -> None:
    """Two data keys cached side by side: each message is opened by its own (a wrong one fails the commitment)."""
    keyring = CountingKeyring()
    writer = CachingMaterialsManager(keyring, LocalCache(10), max_age=300.0, max_messages=1)
    a = envelope.encrypt(b"a", materials_manager=writer, context={"k": "v"})
    b = envelope.encrypt(b"b", materials_manager=writer, context={"k": "v"})
    c = envelope.encrypt(b"c", materials_manager=writer, context={"k": "w"})
    reader = CachingMaterialsManager(keyring, LocalCache(10), max_age=300.0)
    for _ in range(3):
        assert [envelope.decrypt(m, materials_manager=reader).plaintext for m in (a, b, c)] == [b"a", b"b", b"c"]
    assert reader.stats.misses == 3 and reader.stats.hits == 6


def test_one_edk_identifiers_are_remembered_by_its_fields_and_each_field_counts() -> None:
    """A request with one EDK is remembered by that EDK's fields (fresh EDK objects per message): every field
    changes the identifier, equal fields in new objects find the same one, and each is the formula's."""
    manager = CachingMaterialsManager(CountingKeyring(), LocalCache(10), max_age=300.0, partition="p")
    base = ("ns", b"info", b"ciphertext")
    variants = [base, ("nt", b"info", b"ciphertext"), ("ns", b"infp", b"ciphertext"), ("ns", b"info", b"ciphertexu"),
                ("nsinfo", b"", b"ciphertext"), ("ns", b"infociphertext", b"")]
    for _ in range(2):  # computed, then remembered
        ids = []
        for fields in variants:
            request = DecryptionRequest(SUITES[0x0478], (EncryptedDataKey(*fields),), {"a": "1"})
            ids.append(manager._decrypt_id(request))
            assert ids[-1] == _formula_decrypt(manager, request)
        assert len(set(ids)) == len(variants)
    # a different suite or context with the same EDK is a different identifier
    again = DecryptionRequest(SUITES[0x0578], (EncryptedDataKey(*base),), {"a": "1"})
    assert manager._decrypt_id(again) == _formula_decrypt(manager, again) != ids[0]

    class OtherEdk(EncryptedDataKey):
        def serialize(self) -> bytes:
            return b"other:" + super().serialize()

    odd = DecryptionRequest(SUITES[0x0478], (OtherEdk(*base),), {"a": "1"})
    assert manager._decrypt_id(odd) == _formula_decrypt(manager, odd) != ids[0]  # not served from the memo
