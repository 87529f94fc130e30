"""A burst of cold starts against throttled KMS: 50 separate processes at once, each calling
``envelope.aws.load_env`` for 3 secrets (3 messages, 3 data keys) under one KMS key, through the FaultProxy of
tests/aws_fixtures.py with every second KMS request answered ThrottlingException.

botocore alone (standard mode, 5 attempts) leaves 1 call in 32 failing at that rate, about 5 of these 150 calls;
INIT's retry budget (envelope.aws.RetryBudget, defaults) must absorb them: every process must succeed. As the
``fast_throttle_backoff`` fixture does in-process, the children shrink botocore's throttling back-off base from 1 s
to 0.1 s: botocore still decides to retry, counts its 5 attempts and gives up exactly as in production, only its
sleeps are shorter (``ENVELOPE_TEST_THROTTLING_BASE_SCALE=1`` runs with the real 1 s base: it passes too, in
about 30-50 s here instead of 15-35, most of it 50 Python start-ups sharing 2 cores). The
figures (KMS requests, throttled ones, budget retries, the slowest start) are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from aws_fixtures import FaultProxy, ServicesEnv

import envelope
import envelope.aws

PROCESSES = 50
ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, sys, time
started = time.monotonic()
from botocore.retries.standard import ExponentialBackoff
ExponentialBackoff._DEFAULT_BACKOFF_CONFIG["throttling_base_scale"] = float(os.environ["THROTTLING_BASE_SCALE"])
import envelope, envelope.aws
from envelope import _loadenv

tries = []
sleep = _loadenv._sleep
_loadenv._sleep = lambda seconds: (tries.append(seconds), sleep(seconds))  # counts the budget's retries
keyring = envelope.KmsKeyring([os.environ["KEY_ARN"]])
try:
    got = envelope.aws.load_env(["S1", "S2", "S3"], keyring=keyring)
    result = {"ok": got == {"S1": "one", "S2": "two", "S3": "three"}}
except Exception as exc:
    result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
result.update(retries=len(tries), seconds=round(time.monotonic() - started, 3))
print(json.dumps(result))
"""


def test_fifty_cold_starts_with_half_of_kms_throttled(services_env: ServicesEnv, services_proxy: FaultProxy) -> None:
    arn = services_env.aws.create_key()
    keyring = envelope.KmsKeyring(arn)
    values = {}
    for name, text in (("S1", "one"), ("S2", "two"), ("S3", "three")):  # three data keys: three Decrypts each
        values.update(envelope.aws.encrypt_env({name: text}, keyring=keyring))
    env = {**os.environ, **values, "KEY_ARN": arn,
           "THROTTLING_BASE_SCALE": os.environ.get("ENVELOPE_TEST_THROTTLING_BASE_SCALE", "0.1")}
    env.pop("AWS_MAX_ATTEMPTS", None)  # botocore's default budget (5 attempts), as in production
    services_proxy.reset_counts()
    services_proxy.throttle_operations = {"Decrypt"}
    services_proxy.throttle_share = 0.5
    started = time.monotonic()
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, cwd=ROOT) for _ in range(PROCESSES)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out))
    wall = time.monotonic() - started
    failed = [r for r in results if not r["ok"]]
    retries = sum(r["retries"] for r in results)
    slowest = max(r["seconds"] for r in results)
    print(f"\n{PROCESSES} cold starts: {len(failed)} failed; KMS Decrypt requests {services_proxy.received['Decrypt']} "
          f"(throttled {services_proxy.throttled['Decrypt']}, reached moto {services_proxy.calls('Decrypt')}); "
          f"INIT budget retries (botocore gave up after 5 attempts) {retries}; slowest start {slowest:.1f} s; "
          f"wall {wall:.1f} s")
    assert failed == []
    # each secret opened once, by one successful Decrypt; a request moto answered after the client's read timeout
    # (2 cores, 50 processes and moto) is retried and reaches moto twice: a few such, never a second data key each
    assert 3 * PROCESSES <= services_proxy.calls("Decrypt") <= 3 * PROCESSES + PROCESSES // 10
    assert services_proxy.throttled["Decrypt"] >= 0.45 * services_proxy.received["Decrypt"]  # every second one
