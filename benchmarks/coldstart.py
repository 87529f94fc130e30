"""The ``coldstart`` group (issue 14): a fresh Python process that decrypts 3 secrets under a KMS key on moto_server.

Peers, in the same run and round-robin:

* ``snippet``: the Lambda console's encryption-helper code, ``boto3.client("kms")`` once and 3 ``kms.decrypt``
  calls on raw KMS ciphertexts (context ``LambdaFunctionName``), its best showing (one client, not one per value);
* ``envelope-vars``: ``envelope.aws.load_env`` of 3 variables made by ``encrypt_env`` (one data key: 1 KMS call);
* ``envelope-bundle``: ``load_env`` of one variable holding a JSON bundle of the 3 secrets (1 KMS call);
* ``envelope-console``: ``load_env`` of the snippet's own 3 values (the migration case: 3 KMS calls).

Each process runs as a Lambda function would at INIT (``AWS_LAMBDA_FUNCTION_NAME`` set, contexts checked). Times
are from just before the parent starts the process (``time.monotonic``, one clock for both) to the first secret and
to all three in hand: interpreter start-up, imports, client creation and the KMS calls; the process's own CPU time
(user + system, less swayed by other work on a shared machine) is shown too. The KMS calls are counted
in one extra, untimed run of each peer (a pass-through wrapper around botocore's ``_make_api_call``), which also
checks the values.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from .tools import CommandFailed, Run

FUNCTION = "orders-api"
SECRETS = {"DB_PASSWORD": "correct horse battery staple", "API_TOKEN": "tok_4f1c2a9d", "SIGNING_KEY": "sk-7d1e0b"}

_COUNT = """
import os
if os.environ.get("COUNT_KMS"):
    import botocore.client
    _calls = []
    _original = botocore.client.BaseClient._make_api_call
    def _counting(self, name, params):
        _calls.append(name)
        return _original(self, name, params)
    botocore.client.BaseClient._make_api_call = _counting
"""

_REPORT = """
import json
cpu = sum(os.times()[:2])  # user + system CPU seconds of this process: less swayed by other processes than time
assert secrets == EXPECTED, "wrong values"
print(json.dumps({"first": first - T0, "all": done - T0, "cpu": cpu,
                  "kms_calls": len(_calls) if os.environ.get("COUNT_KMS") else None}))
"""

SNIPPET = """
import os, time
T0 = float(os.environ["BENCH_T0"])
COUNT
from base64 import b64decode
import boto3

kms = boto3.client("kms")
secrets = {}
for name in ("DB_PASSWORD", "API_TOKEN", "SIGNING_KEY"):
    secrets[name] = kms.decrypt(CiphertextBlob=b64decode(os.environ["CONSOLE_" + name]),
                                EncryptionContext={"LambdaFunctionName": os.environ["AWS_LAMBDA_FUNCTION_NAME"]}
                                )["Plaintext"].decode("utf-8")
    if len(secrets) == 1:
        first = time.monotonic()
done = time.monotonic()
"""

ENVELOPE = """
import os, time
T0 = float(os.environ["BENCH_T0"])
COUNT
import envelope, envelope.aws

keyring = envelope.KmsKeyring([os.environ["KEY_ARN"]])
LOAD
first = done = time.monotonic()
"""

LOADS = {
    "envelope-vars": 'secrets = envelope.aws.load_env(["DB_PASSWORD", "API_TOKEN", "SIGNING_KEY"], keyring=keyring)',
    "envelope-bundle": 'secrets = envelope.aws.load_env(["APP_SECRETS"], keyring=keyring, transform="json")'
                       '["APP_SECRETS"]',
    "envelope-console": 'secrets = envelope.aws.load_env({n: "CONSOLE_" + n for n in ("DB_PASSWORD", "API_TOKEN", '
                        '"SIGNING_KEY")}, keyring=keyring)',
}


def script(kind: str) -> str:
    body = SNIPPET if kind == "snippet" else ENVELOPE.replace("LOAD", LOADS[kind])
    return body.replace("COUNT", _COUNT) + f"EXPECTED = {SECRETS!r}\n" + _REPORT


def environment(moto_env: dict[str, str], arn: str) -> dict[str, str]:
    """The variables every peer's process gets: moto, the function name, the ciphertexts of every form."""
    import boto3

    import envelope
    import envelope.aws

    env = {**moto_env, "KEY_ARN": arn, "AWS_LAMBDA_FUNCTION_NAME": FUNCTION}
    kms = boto3.client("kms", endpoint_url=moto_env["AWS_ENDPOINT_URL_KMS"], region_name=moto_env["AWS_REGION"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for name, value in SECRETS.items():
        blob = kms.encrypt(KeyId=arn, Plaintext=value.encode(),
                           EncryptionContext={"LambdaFunctionName": FUNCTION})["CiphertextBlob"]
        env["CONSOLE_" + name] = base64.b64encode(blob).decode()
    saved = {k: os.environ.get(k) for k in moto_env}
    os.environ.update(moto_env)  # the keyring below talks to moto through the same variables
    try:
        keyring = envelope.KmsKeyring([arn])
        env.update(envelope.aws.encrypt_env(SECRETS, keyring=keyring, function=FUNCTION))
        env.update(envelope.aws.encrypt_env({"APP_SECRETS": json.dumps(SECRETS)}, keyring=keyring,
                                            function=FUNCTION))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return env


def run_once(kind: str, env: dict[str, str], *, count: bool = False) -> dict[str, Any]:
    """One fresh process; the child's marks (seconds since the parent's start stamp) and KMS calls."""
    child_env = dict(env)
    child_env.pop("COUNT_KMS", None)
    if count:
        child_env["COUNT_KMS"] = "1"
    child_env["BENCH_T0"] = repr(time.monotonic())
    done = subprocess.run([sys.executable, "-c", script(kind)], env=child_env, capture_output=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise CommandFailed(f"coldstart {kind} exited {done.returncode}: {tail[:400]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


LABELS = {
    "snippet": "console snippet: boto3 + 3 kms.decrypt",
    "envelope-vars": "envelope load_env: 3 variables, one data key",
    "envelope-bundle": "envelope load_env: 1 JSON bundle of 3",
    "envelope-console": "envelope load_env: the 3 console values",
}


def group_coldstart(b: Any) -> None:
    """Register and measure the cases (``b`` is the harness's Bench)."""
    from .harness import Case
    from .tools import Skip

    try:
        moto = b.moto()
    except Skip as exc:
        b.skip("cold start with KMS", str(exc))
        return
    env = environment(moto.environ(), moto.arn)
    cases = []
    for kind, label in LABELS.items():
        firsts: list[float] = []
        cpus: list[float] = []
        calls = {"n": None}

        def run(kind: str = kind, firsts: list[float] = firsts, cpus: list[float] = cpus) -> Run:
            marks = run_once(kind, env)
            firsts.append(marks["first"])
            cpus.append(marks["cpu"])
            return Run(float(marks["all"]), 0, marks)

        def check(kind: str = kind, calls: dict[str, Any] = calls) -> None:
            calls["n"] = run_once(kind, env, count=True)["kms_calls"]

        def extra(last: Run, firsts: list[float] = firsts, cpus: list[float] = cpus,
                  calls: dict[str, Any] = calls) -> str:
            first, cpu = statistics.median(firsts) * 1000, statistics.median(cpus) * 1000
            return (f"first secret {first:.0f} ms (min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f}); "
                    f"CPU {cpu:.0f} ms (min {min(cpus) * 1000:.0f}); KMS calls {calls['n']}")

        cases.append(Case(f"coldstart/{kind}", f"cold start, 3 secrets: {label}", "ms", 1, run, check=check,
                          envelope=kind.startswith("envelope"), params={"kms": "moto_server"}, extra=extra))
    b.notes.append("coldstart: ms from process start (the parent's stamp just before starting it) to all 3 secrets "
                   "in hand, against moto_server on loopback (about 2 ms per KMS call; real KMS from Lambda is "
                   "slower, which favours the peers that make fewer calls)")
    b.measure(cases, b.args.startup_reps)
