"""The data-key cache in front of AWS KMS (issue 5), counted at the wire: the ``kms_proxy`` between botocore and
moto_server counts the KMS requests that reached it, so "one call" means one HTTP request, not one method call.

Library: 1,000 encryptions under one KMS key with ``max_messages=100`` make exactly 10 GenerateDataKey calls,
and 1,000 decryptions of messages that share a data key make one Decrypt call. CLI: piped input is read ahead
and cached when small, given its own key when large (``--metadata-output`` stats and proxy counts agree), and a
many-file run with ``--workers 2`` keeps ``--cache-max-messages`` per data key, counted by EDK in the outputs.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_fixtures import AwsEnv, FaultProxy

import envelope
from envelope._format import EncryptedDataKey

KIB = 1024
CONTEXT = {"app": "billing", "stage": "test"}
CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def edks_of(message: bytes) -> tuple[EncryptedDataKey, ...]:
    header, _, _ = envelope.read_header(io.BytesIO(message))
    return header.encrypted_data_keys


def runs(items: Sequence[object]) -> list[int]:
    """Lengths of the runs of equal consecutive items: [a, a, b, b, b] -> [2, 3]."""
    return [len(list(group)) for _, group in itertools.groupby(items)]


def caching(keyring: envelope.Keyring, **limits: Any) -> envelope.CachingMaterialsManager:
    return envelope.CachingMaterialsManager(keyring, envelope.LocalCache(16), max_age=600, **limits)


def cli(*args: str | Path, cwd: Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The CLI as its own process (stdin a real pipe); it inherits the AWS test environment from os.environ."""
    done = subprocess.run([*CLI, *(str(a) for a in args)], capture_output=True, timeout=120, cwd=cwd, input=input,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr.decode()
    return done


def metadata(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-input records, the summary line) of a --metadata-output file."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1].get("summary") is True and not any(line.get("summary") for line in lines[:-1])
    return lines[:-1], lines[-1]


# ---------------------------------------------------------------------------------------------------------
# library


def test_1000_encryptions_with_max_messages_100_make_10_generate_data_key_calls(aws_env: AwsEnv,
                                                                                 kms_proxy: FaultProxy) -> None:
    arn = aws_env.create_key(alias="alias/cached")
    manager = caching(envelope.KmsKeyring(arn), max_messages=100)
    plaintexts = [os.urandom(KIB) for _ in range(1000)]
    messages = [envelope.encrypt(p, materials_manager=manager, context=CONTEXT) for p in plaintexts]

    assert kms_proxy.calls("GenerateDataKey") == 10
    assert kms_proxy.received == Counter({"GenerateDataKey": 10})  # nothing else, no retries
    keys = [edks_of(m) for m in messages]
    assert runs(keys) == [100] * 10 and len(set(keys)) == 10  # each EDK on 100 consecutive messages, never again
    assert all(edk.provider_info.decode() == arn for (edk,) in keys)
    stats = manager.stats
    assert (stats.misses, stats.hits, stats.keyring_encrypt_calls, stats.evicted_messages) == (10, 990, 10, 10)

    # messages encrypted from the cache decrypt with aws-encryption-sdk's KMS master key provider (a sample:
    # the first and last message of the first and last data key), and all of them with envelope
    esdk = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn])
    for i in (0, 99, 900, 999):
        assert esdk.decrypt(source=messages[i], key_provider=provider)[0] == plaintexts[i]
    kms_proxy.reset_counts()
    reader = caching(envelope.KmsKeyring("alias/cached"))
    for message, plaintext in zip(messages, plaintexts):
        assert envelope.decrypt(message, materials_manager=reader, required_context=CONTEXT).plaintext == plaintext
    assert kms_proxy.received == Counter({"DescribeKey": 1, "Decrypt": 10})  # the alias resolved once


def test_1000_decryptions_of_messages_sharing_a_data_key_make_one_decrypt_call(aws_env: AwsEnv,
                                                                               kms_proxy: FaultProxy) -> None:
    arn = aws_env.create_key()
    writer = caching(envelope.KmsKeyring(arn), max_messages=1000)
    plaintexts = [os.urandom(KIB) for _ in range(1000)]
    messages = [envelope.encrypt(p, materials_manager=writer, context=CONTEXT) for p in plaintexts]
    assert len({edks_of(m) for m in messages}) == 1 and kms_proxy.calls("GenerateDataKey") == 1

    for keyring in (envelope.KmsKeyring(arn), envelope.KmsDiscoveryKeyring()):
        kms_proxy.reset_counts()
        reader = caching(keyring)
        for message, plaintext in zip(messages, plaintexts):
            assert envelope.decrypt(message, materials_manager=reader).plaintext == plaintext
        assert kms_proxy.received == Counter({"Decrypt": 1})
        assert (reader.stats.misses, reader.stats.hits, reader.stats.keyring_decrypt_calls) == (1, 999, 1)
    # without a cache, every message is one Decrypt
    kms_proxy.reset_counts()
    for message in messages[:20]:
        envelope.decrypt(message, keyring=envelope.KmsKeyring(arn))
    assert kms_proxy.calls("Decrypt") == 20


# ---------------------------------------------------------------------------------------------------------
# CLI


def test_piped_input_small_is_cached_large_gets_its_own_key(aws_env: AwsEnv, kms_proxy: FaultProxy,
                                                           tmp_path: Path) -> None:
    arn = aws_env.create_key()
    cases = [  # (name, plaintext, extra options, cached)
        ("small", os.urandom(KIB), [], True),
        ("large", os.urandom(1024 * KIB + 1), [], False),  # one byte past the 1 MiB read-ahead
        ("above-max-bytes", os.urandom(4 * KIB), ["--cache-max-bytes", "2048"], False),  # read ahead 2 KiB only
    ]
    for name, plaintext, extra, cached in cases:
        kms_proxy.reset_counts()
        done = cli("encrypt", "-k", f"kms:{arn}", "--cache-max-age", "60", *extra, "--metadata-output",
                   f"{name}.jsonl", cwd=tmp_path, input=plaintext)
        (tmp_path / f"{name}.enc").write_bytes(done.stdout)
        (record,), summary = metadata(tmp_path / f"{name}.jsonl")
        assert record["input"] == "-" and record["bytes_in"] == len(plaintext)
        assert record["cache_stats"] == summary["cache_stats"]  # one input: its stats are the run's
        stats = record["cache_stats"]
        # cached: the length was learned by reading ahead and the data key went into the cache (a miss that
        # created the entry); not cached: the message got a fresh data key that bypassed the cache
        assert (stats["misses"], stats["entries_created"], stats["bypass_unknown_length"]) \
            == ((1, 1, 0) if cached else (0, 0, 1)), (name, stats)
        assert stats["keyring_encrypt_calls"] == 1 and kms_proxy.calls("GenerateDataKey") == 1
        assert summary["cache"]["scope"] == "per-process" and summary["cache"]["max_age"] == 60
        assert envelope.decrypt(done.stdout, keyring=envelope.KmsKeyring(arn)).plaintext == plaintext


def test_many_files_with_two_workers_keep_max_messages_per_data_key(aws_env: AwsEnv, kms_proxy: FaultProxy,
                                                                     tmp_path: Path) -> None:
    aws_env.create_key(alias="alias/batch")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    plaintexts = {f"{'sub/' if i % 3 == 0 else ''}f{i:02}.txt": os.urandom(KIB + i) for i in range(50)}
    for name, data in plaintexts.items():
        (inputs / name).write_bytes(data)

    cli("encrypt", "-r", "in", "-o", "enc", "-k", "kms:alias/batch", "-c", "batch=1", "--workers", "2",
        "--cache-max-age", "300", "--cache-max-messages", "10", "--metadata-output", "enc.jsonl", cwd=tmp_path)
    outputs = {name: (tmp_path / "enc" / f"{name}.encrypted").read_bytes() for name in plaintexts}
    uses = Counter(edks_of(message) for message in outputs.values())
    assert max(uses.values()) <= 10  # the limit holds per data key, across both workers
    # each worker's cache makes ceil(its files / 10) data keys: 5 in all if one worker did everything, at most
    # 6 when the 50 files were split between two
    assert 5 <= len(uses) <= 6
    assert kms_proxy.calls("GenerateDataKey") == len(uses)
    records, summary = metadata(tmp_path / "enc.jsonl")
    assert len(records) == 50 and summary["inputs"] == 50 and summary["failed"] == 0
    assert summary["cache"] == {"scope": "per-process", "caches": 2, "max_age": 300.0, "max_messages": 10,
                                "max_bytes": 2**63 - 1, "capacity": 1000}
    total = summary["cache_stats"]
    assert total["keyring_encrypt_calls"] == total["misses"] == total["entries_created"] == len(uses)
    assert total["hits"] == 50 - len(uses)
    assert sum(r["cache_stats"]["hits"] for r in records) == total["hits"]  # the summary is the per-input sum

    # decrypting them all in one process with a cache: one KMS Decrypt per data key
    kms_proxy.reset_counts()
    cli("decrypt", "-r", "enc", "-o", "dec", "-k", "kms:alias/batch", "-c", "batch=1", "--workers", "1",
        "--cache-max-age", "300", cwd=tmp_path)
    assert kms_proxy.received == Counter({"DescribeKey": 1, "Decrypt": len(uses)})
    for name, data in plaintexts.items():
        assert (tmp_path / "dec" / name).read_bytes() == data
