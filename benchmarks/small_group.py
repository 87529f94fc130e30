"""The ``small`` group: 1 KiB one-shot messages with a raw AES key, envelope beside the ESDK (issue #16).

``envelope.encrypt`` / ``envelope.decrypt`` with a ``RawAesKeyring`` (suite 0x0478, committing, unsigned), without
and with the data-key cache (``CachingMaterialsManager`` + ``LocalCache``), and the ESDK's ``client.encrypt`` /
``client.decrypt`` with a ``RawMasterKey`` (the same suite and commitment policy), without and with its
``CachingCryptoMaterialsManager`` + ``LocalCryptoMaterialsCache``. Both caches allow ``MAX_MESSAGES`` messages per
data key. Each run is a fresh child process (``python -m benchmarks.child small``) that warms up, then times
``INNER_REPS`` loops of ``--messages`` messages (at least ``MIN_MESSAGES``) and reports the median loop; the table
shows microseconds per message (lower is better), the median over the harness's repetitions. Decrypt cycles over
``DISTINCT`` messages made untimed beforehand (through the cache for the cached variants, so they share data keys
as a cached workload's messages do). The line under each envelope row gives the keyring calls the run made.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import tools
from .tools import Run

if TYPE_CHECKING:
    from .harness import Bench

__all__ = ["group_small", "small_child"]

MESSAGE_BYTES = 1024
MAX_MESSAGES = 100
DISTINCT = 100
INNER_REPS = 7
MIN_MESSAGES = 2000
CONTEXT = {"purpose": "benchmark"}


def group_small(b: Bench) -> None:
    from .harness import Case

    messages = max(MIN_MESSAGES, b.args.messages)

    def extra(run: Run) -> str:
        calls = run.child.get("keyring_calls")
        if calls is None:
            return ""
        total = run.child.get("total_messages")
        return (f"keyring calls: {calls} for {total} messages (max {MAX_MESSAGES} per data key; "
                f"per-message {run.child.get('us_min', 0):.1f}..{run.child.get('us_max', 0):.1f} us over "
                f"{INNER_REPS} loops)")

    cases = []
    for tool in ("envelope", "esdk"):
        for cache in (False, True):
            for op in ("encrypt", "decrypt"):
                variant = "cache" if cache else "no-cache"
                name = "envelope" if tool == "envelope" else "ESDK"
                spec = {"tool": tool, "op": op, "cache": cache, "messages": messages}
                label = (f"{name} {op} 1 KiB one-shot, raw AES"
                         f"{f', cache ({MAX_MESSAGES} msgs/key)' if cache else ''}")
                cases.append(Case(f"small/{tool}/{variant}/{op}", label, "us/msg", messages,
                                  lambda spec=spec: tools.run_child("small", spec, b.ws), envelope=tool == "envelope",
                                  params={"message_bytes": MESSAGE_BYTES, "suite": "0x0478", "cache": cache,
                                          "max_messages": MAX_MESSAGES, "messages": messages},
                                  extra=extra if tool == "envelope" else None))
    b.notes.append(f"small group: per-message time of 1 KiB one-shot calls in a fresh child, the median of "
                   f"{INNER_REPS} loops of {messages} messages, then the median over the repetitions; the 2-core VM "
                   "is shared, so figures of a few us move by 10-30% between runs")
    b.measure(cases, b.args.reps)


# ---------------------------------------------------------------------------------------------------------
# the child side: python -m benchmarks.child small --spec ...


def _envelope_calls(spec: dict[str, Any]) -> tuple[Callable[[int], Any], Callable[[], int]]:
    import envelope
    from envelope._cache import CachingMaterialsManager, LocalCache

    keyring = envelope.RawAesKeyring("bench", "small", os.urandom(32))
    plain = os.urandom(MESSAGE_BYTES)
    if spec["cache"]:
        manager = CachingMaterialsManager(keyring, LocalCache(100), max_age=300.0, max_messages=MAX_MESSAGES)
        kwargs: dict[str, Any] = {"materials_manager": manager}
    else:
        manager = None
        kwargs = {"keyring": keyring}

    def calls() -> int:
        if manager is None:
            return -1
        stats = manager.stats
        return stats.keyring_encrypt_calls + stats.keyring_decrypt_calls

    if spec["op"] == "encrypt":
        return lambda i: envelope.encrypt(plain, context=CONTEXT, **kwargs), calls
    made = [envelope.encrypt(plain, context=CONTEXT, **kwargs) for _ in range(DISTINCT)]
    if manager is not None:  # decrypt through a manager of its own: nothing is shared with the encrypt side
        manager = CachingMaterialsManager(keyring, LocalCache(100), max_age=300.0, max_messages=MAX_MESSAGES)
        kwargs = {"materials_manager": manager}
    return lambda i: envelope.decrypt(made[i % DISTINCT], **kwargs), calls


def _esdk_calls(spec: dict[str, Any]) -> Callable[[int], Any]:
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import (
        Algorithm,
        CommitmentPolicy,
        EncryptionKeyType,
        WrappingAlgorithm,
    )
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey

    wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                           wrapping_key=os.urandom(32), wrapping_key_type=EncryptionKeyType.SYMMETRIC)
    master_key = RawMasterKey(provider_id="bench", key_id=b"small", wrapping_key=wrapping)
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    algorithm = Algorithm.get_by_id(0x0478)
    plain = os.urandom(MESSAGE_BYTES)

    def provider() -> dict[str, Any]:
        if spec["cache"]:
            return {"materials_manager": aws_encryption_sdk.CachingCryptoMaterialsManager(
                master_key_provider=master_key, cache=aws_encryption_sdk.LocalCryptoMaterialsCache(100),
                max_age=300.0, max_messages_encrypted=MAX_MESSAGES)}
        return {"key_provider": master_key}

    kwargs = provider()
    if spec["op"] == "encrypt":
        return lambda i: client.encrypt(source=plain, encryption_context=CONTEXT, algorithm=algorithm, **kwargs)
    made = [client.encrypt(source=plain, encryption_context=CONTEXT, algorithm=algorithm, **kwargs)[0]
            for _ in range(DISTINCT)]
    kwargs = provider()
    return lambda i: client.decrypt(source=made[i % DISTINCT], **kwargs)


def small_child(spec: dict[str, Any]) -> dict[str, Any]:
    messages = int(spec["messages"])
    if spec["tool"] == "envelope":
        call, calls = _envelope_calls(spec)
    else:
        call, calls = _esdk_calls(spec), (lambda: -1)
    for i in range(min(messages, 200)):  # warm-up: caches filled, code paths hot
        call(i)
    loops = []
    for _ in range(INNER_REPS):
        start = time.perf_counter()
        for i in range(messages):
            call(i)
        loops.append(time.perf_counter() - start)
    result: dict[str, Any] = {"seconds": statistics.median(loops), "messages": messages,
                              "us_min": min(loops) / messages * 1e6, "us_max": max(loops) / messages * 1e6}
    counted = calls()
    if counted >= 0:
        result["keyring_calls"] = counted
        result["total_messages"] = min(messages, 200) + INNER_REPS * messages
    return result
