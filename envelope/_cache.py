"""The data-key cache: a bounded LRU and the caching materials manager (esdk-format.md section 8).

    >>> import envelope
    >>> keyring = envelope.RawAesKeyring("envelope", "demo", bytes(32))
    >>> manager = envelope.CachingMaterialsManager(keyring, envelope.LocalCache(100), max_age=300,
    ...                                            max_messages=1000)
    >>> first = envelope.encrypt(b"one", materials_manager=manager, context={"app": "demo"})
    >>> second = envelope.encrypt(b"two", materials_manager=manager, context={"app": "demo"})
    >>> manager.stats.hits, manager.stats.misses, manager.stats.keyring_encrypt_calls
    (1, 1, 1)

A :class:`CachingMaterialsManager` sits between the API and a keyring (or another materials manager) and
reuses data keys. A :class:`LocalCache` holds the entries: an ``OrderedDict`` in least-recently-used order
behind one lock, with a fixed capacity. Several managers may share one cache; their entries never mix unless
they are given the same partition name (the default is a random UUID per manager).

**What is cached.** Encryption materials (data key, EDKs, context, and for signed suites the signing key) per
(partition, requested suite, commitment policy, encryption context); decryption materials per (partition,
suite, EDKs, encryption context). Identity-KDF suites (0x0014, 0x0046, 0x0078) are never cached, in either
direction: every message under them must have its own data key.

**Signed suites are cached with their signing key**, as the ESDK does: every message served by one entry
carries the same ``aws-crypto-public-key`` in its context and is signed by the same ECDSA key, and that private
key stays in memory as long as the entry. A reader can therefore tell that those messages share a signer
(they already share a data key). Decrypting them needs nothing special; the decrypt entry for them is shared
too, because their EDKs and context (public key included) are identical.

**The invariant**, for every entry and under any concurrency: a data key never protects more than
``max_messages`` messages or more than ``max_bytes`` plaintext bytes, and is never handed out after
``max_age``. Usage is counted at checkout, atomically: under the cache lock the entry is checked and one
message plus its plaintext length are reserved *before* the materials leave the cache. The message that
creates an entry counts as its first use. An entry is retired (removed) the moment it reaches either limit,
or on its next checkout once its age or the new message's bytes would break a limit; that message then gets
a new entry (a miss). A message longer than ``max_bytes`` on its own gets a fresh data key that is not cached.
Because the API reserves the declared length, ``encrypt_stream`` refuses input that runs past a
``plaintext_length`` it was given (the ESDK does the same with ``source_length``).

**Age** is measured on a monotonic clock (``time.monotonic`` unless a ``clock`` is injected into the cache),
never the wall clock. An entry is usable while ``clock() - created < max_age``, where ``created`` is read just
*before* the keyring is called, so a slow keyring shortens the entry's life rather than stretching it.

**Unknown plaintext length (pipes).** The ESDK silently skips its cache whenever the length is unknown.
Here, when ``encrypt_stream`` is given no ``plaintext_length`` and the manager is a caching one, the API reads
ahead up to ``min(1 MiB, max_bytes)`` bytes (see :meth:`CachingMaterialsManager.read_ahead_limit`) and pushes
them back: if the input ends within that bound its length is known and the cache is used as for any other
message; otherwise the message gets a fresh, uncached data key and ``stats.bypass_unknown_length`` counts it.
The bound is the largest message an entry could serve, capped at 1 MiB of memory; a message that fits the
bound but not the current entry's remaining byte budget retires that entry and starts a new one, exactly as
a message of known length does.

**Concurrency.** No lock is held while a keyring (or KMS) is called. Two threads that miss the same entry may
both call the keyring; the first to store its materials wins, and the other's data key protects only its own
message. Limits hold regardless, because every use of an entry is reserved under the lock. A manager's counters
(``stats``) are kept under its cache's lock too, so a hit takes that lock once: the checkout counts itself.

**Cache identifiers** (internal; nothing on the wire depends on them) follow the current specification's
SHA-384 formula from section 8, with the commitment policy added to the encrypt suffix::

    encrypt: SHA-384(01 00 01 00 || UTF8(partition) || 00 || S || 00 || policy || 00 || serEC)
             S = 00 when no suite was requested, 01 00 || suite ID (2 bytes) when one was;
             policy = 01 forbid-encrypt-allow-decrypt, 02 require-encrypt-allow-decrypt,
                      03 require-encrypt-require-decrypt
    decrypt: SHA-384(01 00 02 00 || UTF8(partition) || 00 || suite ID || 00 ||
                     concat(sorted serialized EDK entries) || 00 || serEC)

The policy is part of the key because the underlying manager picks and checks the suite by policy: a hit
must never skip that check. Partition names may not contain NUL, which keeps the encoding unambiguous.

**Required encryption context** (section 6.4). An encrypt request with ``required_context_keys`` and a
decrypt request with reproduced pairs the message does not store get ``00 || R`` appended to the identifier,
where ``R`` is the serialised context ``{key: "" for each required key}`` (the keys, sorted, with empty
values); requests without them keep the formula above unchanged. ``serEC`` is there the whole context: for
encrypt the caller's (required pairs included), for decrypt the stored pairs plus the reproduced ones, which is
what the keyring authenticates. The MPL has no caching CMM today (its branch had one); its specification's
identifiers (``caching-cmm.md`` version 0.4.0) cover only the request's encryption context, which for decrypt is
the header's stored context, and its unreleased caching CMM then checks the cached materials against the
reproduced context (and, for encrypt, against the required keys) after a hit. Keying on both here serves the
same materials on the same hits, and never needs that check to fail: materials made for one set of required
keys or reproduced values are never handed to a request for another.

**Sharing.** Managers that share a cache and a partition share entries; each entry enforces the tighter of
the limits of the manager that created it and of the manager checking it out.

**Stats** (:class:`CacheStats`, from ``manager.stats``) count what that manager did: hits, misses, entries
created, evictions by reason (age, messages, bytes, capacity), calls through to the keyring for encryption
and for decryption, and requests that bypassed the cache by reason (unknown length, too large, identity KDF).

**Security.** A cached data key protects many messages: whoever learns it reads them all, and KMS records one
call per entry rather than per message. Keep ``max_age`` and the limits small, and give different trust
domains different partitions (or caches).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from ._format import EncryptedDataKey, serialize_context
from ._keyrings.base import Keyring
from ._materials import (
    DecryptionMaterials,
    DecryptionRequest,
    DefaultMaterialsManager,
    EncryptionMaterials,
    EncryptionRequest,
    MaterialsManager,
    ReadsAhead,
)
from ._suites import CommitmentPolicy
from .errors import UsageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "READ_AHEAD_BYTES",
    "CacheStats",
    "CachingMaterialsManager",
    "LocalCache",
    "ReadsAhead",
]

#: Section 8 defaults and ranges (the ESDK's): 1..2^32 messages, 0..2^63 - 1 bytes per data key.
DEFAULT_MAX_MESSAGES = 2**32
DEFAULT_MAX_BYTES = 2**63 - 1
#: The most ``encrypt_stream`` reads ahead to learn the length of an input of unknown length.
READ_AHEAD_BYTES = 1024 * 1024

Clock = Callable[[], float]
#: Cache identifiers each manager remembers (then it starts again).
_ID_MEMO_SIZE = 1024

_POLICY_BYTE = {
    CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT: b"\x01",
    CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT: b"\x02",
    CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT: b"\x03",
}


def _required_suffix(keys: frozenset[str]) -> bytes:
    """``00 || R`` of the cache identifiers (module docstring, "Required encryption context")."""
    return b"\x00" + serialize_context(dict.fromkeys(keys, ""))


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of what one :class:`CachingMaterialsManager` did. ``as_dict()`` gives flat JSON-ready keys.

    ``keyring_encrypt_calls`` / ``keyring_decrypt_calls`` count calls through to the wrapped keyring or
    materials manager (cache misses plus bypasses): with a KMS keyring, one GenerateDataKey or Decrypt each.
    """

    hits: int = 0
    misses: int = 0
    entries_created: int = 0
    evicted_age: int = 0
    evicted_messages: int = 0
    evicted_bytes: int = 0
    evicted_capacity: int = 0
    keyring_encrypt_calls: int = 0
    keyring_decrypt_calls: int = 0
    bypass_unknown_length: int = 0
    bypass_too_large: int = 0
    bypass_identity_kdf: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __add__(self, other: CacheStats) -> CacheStats:
        """Sum two snapshots (for example one per worker)."""
        if not isinstance(other, CacheStats):
            return NotImplemented
        return CacheStats(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                             for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class _Limits:
    max_age: float
    max_messages: int
    max_bytes: int

    def tighter(self, other: _Limits) -> _Limits:
        if other is self:
            return self
        return _Limits(min(self.max_age, other.max_age), min(self.max_messages, other.max_messages),
                       min(self.max_bytes, other.max_bytes))


class _Entry:
    __slots__ = ("bytes", "created", "limits", "materials", "messages")

    def __init__(self, materials: EncryptionMaterials | DecryptionMaterials, created: float, limits: _Limits,
                 messages: int, nbytes: int) -> None:
        self.materials = materials
        self.created = created
        self.limits = limits
        self.messages = messages
        self.bytes = nbytes


class LocalCache:
    """An in-memory LRU of at most ``capacity`` entries, safe to share between threads and managers.

    ``clock`` returns seconds on a monotonic scale (``time.monotonic`` by default); tests inject their own.
    Its methods are used by :class:`CachingMaterialsManager`; besides ``len()`` and :meth:`clear` there is
    nothing for callers to do with it directly.
    """

    def __init__(self, capacity: int, *, clock: Clock = time.monotonic) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise UsageError(f"the cache capacity must be a whole number of entries, at least 1 (got {capacity!r})")
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalCache(capacity={self.capacity}, entries={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (the data keys go with them)."""
        with self._lock:
            self._entries.clear()

    # -- used by CachingMaterialsManager; every method is one atomic step under the lock ------------------

    def checkout_encrypt(self, cache_id: bytes, length: int, limits: _Limits, counts: dict[str, int]
                         ) -> EncryptionMaterials | None:
        """Reserve one message of ``length`` bytes on the entry and return its materials, or None (a miss).

        An entry that this message brings to a limit is retired at once; one that cannot take the message is
        evicted and None returned. The hit, or the miss and the keyring call it leads to, and any eviction are
        counted in ``counts`` (the manager's, guarded by this cache's lock) in the same step: one lock taken
        per hit.
        """
        with self._lock:
            entry = self._entries.get(cache_id)
            if entry is None:
                counts["misses"] += 1
                counts["keyring_encrypt_calls"] += 1
                return None
            lim = entry.limits.tighter(limits)
            if self.clock() - entry.created >= lim.max_age:
                reason = "evicted_age"
            elif entry.messages >= lim.max_messages:
                reason = "evicted_messages"
            elif entry.bytes + length > lim.max_bytes:
                reason = "evicted_bytes"
            else:
                entry.messages += 1
                entry.bytes += length
                materials = entry.materials
                assert isinstance(materials, EncryptionMaterials)
                counts["hits"] += 1
                if entry.messages >= lim.max_messages:
                    counts["evicted_messages"] += 1
                elif entry.bytes >= lim.max_bytes:
                    counts["evicted_bytes"] += 1
                else:
                    self._entries.move_to_end(cache_id)
                    return materials
                del self._entries[cache_id]
                return materials
            del self._entries[cache_id]
            counts[reason] += 1
            counts["misses"] += 1
            counts["keyring_encrypt_calls"] += 1
            return None

    def put_encrypt(self, cache_id: bytes, materials: EncryptionMaterials, created: float, length: int,
                    limits: _Limits) -> tuple[bool, list[str]]:
        """Store new materials whose first message (``length`` bytes) is already counted.

        Returns (stored, reasons of evictions). Nothing is stored when that first message already reaches a
        limit, when the entry is already too old, or when another thread stored a live entry first.
        """
        if limits.max_messages <= 1 or length >= limits.max_bytes:
            return False, []
        return self._put(cache_id, _Entry(materials, created, limits, 1, length))

    def get_decrypt(self, cache_id: bytes, max_age: float, counts: dict[str, int]) -> DecryptionMaterials | None:
        """Decrypt entries are limited by age only (section 8). Counts as :meth:`checkout_encrypt` does."""
        with self._lock:
            entry = self._entries.get(cache_id)
            if entry is not None:
                limit = entry.limits.max_age
                if self.clock() - entry.created < (limit if limit < max_age else max_age):
                    self._entries.move_to_end(cache_id)
                    materials = entry.materials
                    assert isinstance(materials, DecryptionMaterials)
                    counts["hits"] += 1
                    return materials
                del self._entries[cache_id]
                counts["evicted_age"] += 1
            counts["misses"] += 1
            counts["keyring_decrypt_calls"] += 1
            return None

    def put_decrypt(self, cache_id: bytes, materials: DecryptionMaterials, created: float, limits: _Limits
                    ) -> tuple[bool, list[str]]:
        return self._put(cache_id, _Entry(materials, created, limits, 0, 0))

    def _put(self, cache_id: bytes, entry: _Entry) -> tuple[bool, list[str]]:
        evicted: list[str] = []
        with self._lock:
            now = self.clock()
            if now - entry.created >= entry.limits.max_age:
                return False, evicted
            existing = self._entries.get(cache_id)
            if existing is not None:
                if now - existing.created < existing.limits.tighter(entry.limits).max_age:
                    return False, evicted  # another thread got there first; keep its entry
                del self._entries[cache_id]
                evicted.append("age")
            self._entries[cache_id] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                evicted.append("capacity")
        return True, evicted


class CachingMaterialsManager(ReadsAhead):
    """Reuses data keys from a :class:`LocalCache`, within ``max_age`` seconds, ``max_messages`` messages and
    ``max_bytes`` plaintext bytes per data key. See the module documentation for the exact rules.

    ``underlying`` is a keyring (wrapped in a :class:`~envelope.DefaultMaterialsManager`) or a materials
    manager. ``partition`` names the share of the cache this manager uses; by default a random UUID, so no
    two managers share entries unless told to.
    """

    def __init__(
        self,
        underlying: Keyring | MaterialsManager,
        cache: LocalCache,
        *,
        max_age: float,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        partition: str | None = None,
    ) -> None:
        if isinstance(underlying, MaterialsManager):
            self.underlying: MaterialsManager = underlying
        elif isinstance(underlying, Keyring):
            self.underlying = DefaultMaterialsManager(underlying)
        else:
            raise UsageError(f"a caching materials manager wraps a keyring or a materials manager, "
                             f"not {type(underlying).__name__}")
        if not isinstance(cache, LocalCache):
            raise UsageError(f"cache must be a LocalCache, not {type(cache).__name__}")
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not 0 < max_age < float("inf"):
            raise UsageError(f"max_age must be a positive number of seconds (got {max_age!r})")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) \
                or not 1 <= max_messages <= DEFAULT_MAX_MESSAGES:
            raise UsageError(f"max_messages must be between 1 and 2^32 (got {max_messages!r})")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 <= max_bytes <= DEFAULT_MAX_BYTES:
            raise UsageError(f"max_bytes must be between 0 and 2^63 - 1 (got {max_bytes!r})")
        if partition is None:
            partition = str(uuid.uuid4())
        if not isinstance(partition, str) or not partition or "\x00" in partition:
            raise UsageError("the partition name must be non-empty text without NUL characters")
        self.cache = cache
        self.partition = partition
        self._limits = _Limits(float(max_age), max_messages, max_bytes)
        name = partition.encode("utf-8")
        self._encrypt_prefix = hashlib.sha384(b"\x01\x00\x01\x00" + name + b"\x00")
        self._decrypt_prefix = hashlib.sha384(b"\x01\x00\x02\x00" + name + b"\x00")
        self._counts = dict.fromkeys((f.name for f in dataclasses.fields(CacheStats)), 0)
        #: cache identifiers by what they are computed from (the encrypt and decrypt keys differ in shape)
        self._ids: dict[tuple[object, ...], bytes] = {}
        #: the counters are guarded by the cache's own lock: a hit counts itself in the step that checks it out
        self._count_lock = cache._lock

    def __repr__(self) -> str:
        lim = self._limits
        return (f"CachingMaterialsManager({self.underlying!r}, {self.cache!r}, max_age={lim.max_age}, "
                f"max_messages={lim.max_messages}, max_bytes={lim.max_bytes}, partition={self.partition!r})")

    def __str__(self) -> str:
        return f"{self.underlying} (data keys cached)"

    @property
    def max_age(self) -> float:
        return self._limits.max_age

    @property
    def max_messages(self) -> int:
        return self._limits.max_messages

    @property
    def max_bytes(self) -> int:
        return self._limits.max_bytes

    @property
    def stats(self) -> CacheStats:
        """A consistent snapshot of this manager's counters."""
        with self._count_lock:
            return CacheStats(**self._counts)

    def _count(self, *names: str | None) -> None:
        with self._count_lock:
            for name in names:
                if name is not None:
                    self._counts[name] += 1

    def _count_evictions(self, reasons: list[str]) -> None:
        self._count(*(f"evicted_{reason}" for reason in reasons))

    # -- encrypt ----------------------------------------------------------------------------------------

    def read_ahead_limit(self, request: EncryptionRequest) -> int | None:
        """How far ``encrypt_stream`` reads ahead to learn an unknown length: ``min(1 MiB, max_bytes)``, the
        largest message an entry could serve; None when the requested suite can never be cached."""
        if request.suite is not None and not request.suite.cacheable:
            return None
        return min(READ_AHEAD_BYTES, self._limits.max_bytes)

    def _encrypt_id(self, request: EncryptionRequest) -> bytes:
        suite = request.suite
        context = serialize_context(request.context)
        required = _required_suffix(request.required_context_keys) if request.required_context_keys else b""
        # the identifier is a function of exactly these (partition aside: one memo per manager), so it is
        # remembered by them: a SHA-384 per message is ~1 us of a small message
        memo_key = (None if suite is None else suite.id, request.commitment_policy, context, required)
        found = self._ids.get(memo_key)
        if found is not None:
            return found
        h = self._encrypt_prefix.copy()
        h.update(b"\x00" if suite is None else b"\x01\x00" + suite.id.to_bytes(2, "big"))
        h.update(b"\x00" + _POLICY_BYTE[request.commitment_policy] + b"\x00")
        h.update(context)
        h.update(required)
        return self._remember(memo_key, h.digest())

    def _remember(self, memo_key: tuple[object, ...] | None, cache_id: bytes) -> bytes:
        if memo_key is None:
            return cache_id
        if len(self._ids) >= _ID_MEMO_SIZE:
            self._ids.clear()
        self._ids[memo_key] = cache_id
        return cache_id

    def _bypass(self, request: EncryptionRequest, reason: str) -> EncryptionMaterials:
        self._count(f"bypass_{reason}", "keyring_encrypt_calls")
        return self.underlying.get_encryption_materials(request)

    def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        suite = request.suite
        length = request.plaintext_length
        if suite is not None and not suite.cacheable:
            return self._bypass(request, "identity_kdf")
        if length is None:
            return self._bypass(request, "unknown_length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise UsageError(f"the plaintext length must be a whole number of bytes, 0 or more (got {length!r})")
        if length > self._limits.max_bytes:
            return self._bypass(request, "too_large")
        cache_id = self._encrypt_id(request)
        materials = self.cache.checkout_encrypt(cache_id, length, self._limits, self._counts)
        if materials is not None:
            return materials
        created = self.cache.clock()
        # section 8: the underlying manager is asked without the length, so the materials fit any message
        materials = self.underlying.get_encryption_materials(dataclasses.replace(request, plaintext_length=None))
        if not materials.suite.cacheable:  # the underlying manager picked an identity-KDF suite itself
            self._count("bypass_identity_kdf")
            return materials
        # shared by every message the entry serves: make sure no caller can change the context in place
        materials = dataclasses.replace(materials, context=MappingProxyType(dict(materials.context)))
        stored, reasons = self.cache.put_encrypt(cache_id, materials, created, length, self._limits)
        self._count("entries_created" if stored else None)
        self._count_evictions(reasons)
        return materials

    # -- decrypt ----------------------------------------------------------------------------------------

    def _decrypt_id(self, request: DecryptionRequest) -> bytes:
        context = serialize_context(request.context)
        required = _required_suffix(request.required_context_keys) if request.required_context_keys else b""
        edks = request.encrypted_data_keys
        memo_key: tuple[object, ...] | None
        if type(edks) is tuple and len(edks) == 1 and type(edks[0]) is EncryptedDataKey:
            # the one EDK's fields in the key itself: the header parser makes new EDK objects for each message,
            # and hashing and comparing them as dataclasses (Python-level __hash__ / __eq__) costs ~0.3 us a hit;
            # the fields are what both compare, and no other memo key has six items
            edk = edks[0]
            memo_key = (request.suite.id, edk.provider_id, edk.provider_info, edk.ciphertext, context, required)
        else:
            memo_key = (request.suite.id, edks, context, required)
        try:  # as in _encrypt_id
            found = self._ids.get(memo_key)
        except TypeError:  # unhashable EDKs (a list, bytearray fields: a custom caller): computed every time
            memo_key, found = None, None
        if found is not None:
            return found
        h = self._decrypt_prefix.copy()
        h.update(request.suite.id.to_bytes(2, "big") + b"\x00")
        h.update(b"".join(sorted(edk.serialize() for edk in request.encrypted_data_keys)))
        h.update(b"\x00")
        h.update(context)
        h.update(required)
        return self._remember(memo_key, h.digest())

    def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        if not request.suite.cacheable:
            self._count("bypass_identity_kdf", "keyring_decrypt_calls")
            return self.underlying.decrypt_materials(request)
        cache_id = self._decrypt_id(request)
        materials = self.cache.get_decrypt(cache_id, self._limits.max_age, self._counts)
        if materials is not None:
            return materials
        created = self.cache.clock()
        materials = self.underlying.decrypt_materials(request)
        stored, reasons = self.cache.put_decrypt(cache_id, materials, created, self._limits)
        self._count("entries_created" if stored else None)
        self._count_evictions(reasons)
        return materials
