"""envelope.aws.load_env / encrypt_env over HTTP against moto_server (KMS, SSM, Secrets Manager, Lambda).

KMS, SSM and Secrets Manager calls go through the FaultProxy of tests/aws_fixtures.py (``services_proxy``), which
counts what reached moto: that is how the tests see batching, the cache and the retry budget at work.
moto differences that matter here: none of the size limits is enforced; SecureString is not encrypted; moto's
KMS ciphertext blob starts with the key id in ASCII (a real one starts with 0x01), which is why envelope tells
console values from ESDK messages by parsing, never by the first byte.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from aws_fixtures import FaultProxy, ServicesEnv

import envelope
import envelope.aws as aws
from envelope import _loadenv

FUNCTION = "orders-api"


@pytest.fixture
def key_arn(services_env: ServicesEnv) -> str:
    return services_env.aws.create_key(alias="alias/app")


@pytest.fixture
def keyring(key_arn: str, services_proxy: FaultProxy) -> envelope.KmsKeyring:
    return envelope.KmsKeyring([key_arn])


def _console_value(services_env: ServicesEnv, key_arn: str, plaintext: bytes, function: str = FUNCTION) -> str:
    """What the Lambda console's encryption helper stores: base64 of a raw KMS Encrypt with LambdaFunctionName."""
    blob = services_env.aws.kms().encrypt(KeyId=key_arn, Plaintext=plaintext,
                                          EncryptionContext={"LambdaFunctionName": function})["CiphertextBlob"]
    return base64.b64encode(blob).decode()


# ---------------------------------------------------------------------------------------------------------
# environment variables


def test_encrypt_env_then_load_env_with_one_kms_call(keyring: envelope.KmsKeyring,
                                                    services_proxy: FaultProxy) -> None:
    values = aws.encrypt_env({"DB_PASSWORD": "pw-1", "API_TOKEN": "tok-2", "EMPTY": ""}, keyring=keyring)
    assert services_proxy.calls("GenerateDataKey") == 1  # one data key for all three
    assert all(v.startswith("AgR4") for v in values.values())  # suite 0x0478, base64 without line breaks
    services_proxy.reset_counts()
    secrets = aws.load_env(["DB_PASSWORD", "API_TOKEN", "env:EMPTY"], keyring=keyring, environ=values)
    assert secrets == {"DB_PASSWORD": "pw-1", "API_TOKEN": "tok-2", "env:EMPTY": ""}
    assert services_proxy.calls("Decrypt") == 1  # the shared data key is opened once


def test_lambda_context_is_required_in_lambda(keyring: envelope.KmsKeyring) -> None:
    mine = aws.encrypt_env({"A": "for orders"}, keyring=keyring, function=FUNCTION)
    other = aws.encrypt_env({"A": "for billing"}, keyring=keyring, function="billing")
    none = aws.encrypt_env({"A": "no function"}, keyring=keyring)
    in_lambda = {"AWS_LAMBDA_FUNCTION_NAME": FUNCTION}
    assert aws.load_env(["A"], keyring=keyring, environ={**in_lambda, **mine}) == {"A": "for orders"}
    for values in (other, none):
        with pytest.raises(envelope.ContextMismatchError, match="LambdaFunctionName"):
            aws.load_env(["A"], keyring=keyring, environ={**in_lambda, **values})
    # outside Lambda nothing is required by default; an explicit context is checked everywhere
    assert aws.load_env(["A"], keyring=keyring, environ=none) == {"A": "no function"}
    with pytest.raises(envelope.ContextMismatchError):
        aws.load_env(["A"], keyring=keyring, environ=none, context={"LambdaFunctionName": FUNCTION})
    assert aws.load_env(["A"], keyring=keyring, environ={**in_lambda, **none}, context={}) == {"A": "no function"}


def test_console_helper_value_decrypts_and_fails_with_another_function(
        services_env: ServicesEnv, key_arn: str, keyring: envelope.KmsKeyring, services_proxy: FaultProxy) -> None:
    value = _console_value(services_env, key_arn, b"console secret")
    assert not base64.b64decode(value).startswith((b"\x01", b"\x02"))  # moto's blob: the key id in ASCII
    esdk = aws.encrypt_env({"NEW": "migrated"}, keyring=keyring, function=FUNCTION)
    environ = {"AWS_LAMBDA_FUNCTION_NAME": FUNCTION, "OLD": value, **esdk}
    # one variable at a time: the console value and the ESDK message side by side
    assert aws.load_env(["OLD", "NEW"], keyring=keyring, environ=environ) == {"OLD": "console secret",
                                                                                "NEW": "migrated"}
    sent = [body for op, body in services_proxy.requests if op == "Decrypt" and "KeyId" in body]
    assert any(body["EncryptionContext"] == {"LambdaFunctionName": FUNCTION} and body["KeyId"] == key_arn
               for body in sent)
    aws.clear_cache()
    wrong = {**environ, "AWS_LAMBDA_FUNCTION_NAME": "billing"}
    with pytest.raises(envelope.KmsError, match=r"OLD: AWS KMS could not decrypt .*LambdaFunctionName") as caught:
        aws.load_env(["OLD"], keyring=keyring, environ=wrong)
    assert caught.value.code == "InvalidCiphertextException"
    assert "console secret" not in str(caught.value)


def test_console_value_needs_a_kms_keyring(services_env: ServicesEnv, key_arn: str,
                                           aes_keyring: envelope.RawAesKeyring) -> None:
    value = _console_value(services_env, key_arn, b"x")
    with pytest.raises(envelope.FormatError, match="needs a KMS keyring"):
        aws.load_env(["OLD"], keyring=aes_keyring, environ={"OLD": value, "AWS_LAMBDA_FUNCTION_NAME": FUNCTION})


def test_console_value_with_a_discovery_keyring(services_env: ServicesEnv, key_arn: str,
                                                services_proxy: FaultProxy) -> None:
    value = _console_value(services_env, key_arn, b"found by discovery")
    environ = {"OLD": value, "AWS_LAMBDA_FUNCTION_NAME": FUNCTION}
    assert aws.load_env(["OLD"], keyring=envelope.KmsDiscoveryKeyring(), environ=environ) == {
        "OLD": "found by discovery"}
    other_account = "0" * 12  # some account outside the filter (the repository spells out no id but moto's)
    outside = envelope.KmsDiscoveryKeyring(discovery_filter=envelope.DiscoveryFilter("aws", [other_account]))
    with pytest.raises(envelope.KmsError, match="outside the discovery filter"):
        aws.load_env(["OLD"], keyring=outside, environ=environ, max_age=0)


def test_a_damaged_message_is_never_sent_to_kms_as_a_raw_ciphertext(keyring: envelope.KmsKeyring,
                                                                   services_proxy: FaultProxy) -> None:
    message = base64.b64decode(aws.encrypt_env({"A": "value"}, keyring=keyring)["A"])
    truncated = base64.b64encode(message[:-20]).decode()
    services_proxy.reset_counts()
    with pytest.raises(envelope.FormatError, match=r"in A\)"):
        aws.load_env(["A"], keyring=keyring, environ={"A": truncated})
    # the data key was opened once (the ESDK path); no second Decrypt of the whole value as a KMS blob
    assert services_proxy.calls("Decrypt") == 1
    flipped = bytearray(message)
    flipped[-5] ^= 1
    with pytest.raises(envelope.AuthenticationError):
        aws.load_env(["A"], keyring=keyring, environ={"A": base64.b64encode(flipped).decode()})


def test_values_that_are_not_there_or_not_base64(keyring: envelope.KmsKeyring) -> None:
    with pytest.raises(envelope.StorageError, match="environment variable MISSING is not set") as caught:
        aws.load_env(["MISSING"], keyring=keyring, environ={})
    assert caught.value.code == "NotFound"
    with pytest.raises(envelope.FormatError, match="does not hold base64") as bad:
        aws.load_env(["A"], keyring=keyring, environ={"A": "plain text secret!"})
    assert "plain text secret" not in str(bad.value)
    with pytest.raises(envelope.UsageError):
        aws.load_env("DB_PASSWORD", keyring=keyring)  # type: ignore[arg-type]
    with pytest.raises(envelope.UsageError, match="is not a source"):
        aws.load_env(["s3://bucket/key"], keyring=keyring)


def test_lambda_function_configuration_round_trip(services_env: ServicesEnv, keyring: envelope.KmsKeyring,
                                                 key_arn: str) -> None:
    """encrypt-env output as a Lambda function's environment (moto's Lambda), read back and decrypted."""
    values = aws.encrypt_env({"DB_PASSWORD": "pw", "API_TOKEN": "tok"}, keyring=keyring, function=FUNCTION)
    values["LEGACY"] = _console_value(services_env, key_arn, b"legacy")
    services_env.lambda_function(FUNCTION, values, kms_key_arn=key_arn)
    config = services_env.lambda_().get_function_configuration(FunctionName=FUNCTION)
    environ = {**config["Environment"]["Variables"], "AWS_LAMBDA_FUNCTION_NAME": config["FunctionName"]}
    assert aws.load_env(["DB_PASSWORD", "API_TOKEN", "LEGACY"], keyring=keyring, environ=environ) == {
        "DB_PASSWORD": "pw", "API_TOKEN": "tok", "LEGACY": "legacy"}


# ---------------------------------------------------------------------------------------------------------
# SSM and Secrets Manager, batched


def test_ssm_and_secrets_are_fetched_in_batches(services_env: ServicesEnv, keyring: envelope.KmsKeyring,
                                               services_proxy: FaultProxy) -> None:
    ssm_names = [f"ssm:/app/p{i:02d}" for i in range(12)]
    secret_names = [f"secretsmanager:app/s{i}" for i in range(3)]
    messages = aws.encrypt_env({f"V{i}": f"value {i}" for i in range(15)}, keyring=keyring)  # one data key
    for i, name in enumerate(ssm_names + secret_names):
        aws.write_message(name, base64.b64decode(messages[f"V{i}"]))
    services_proxy.reset_counts()
    got = aws.load_env({f"V{i}": name for i, name in enumerate(ssm_names + secret_names)}, keyring=keyring)
    assert got == {f"V{i}": f"value {i}" for i in range(15)}
    assert services_proxy.calls("GetParameters") == 2  # 10 + 2
    assert services_proxy.calls("GetParameter") == 0
    assert services_proxy.calls("BatchGetSecretValue") == 1
    assert services_proxy.calls("GetSecretValue") == 0
    assert services_proxy.calls("Decrypt") == 1


def test_versions_through_load_env(services_env: ServicesEnv, keyring: envelope.KmsKeyring) -> None:
    aws.write_message("ssm:/app/v", envelope.encrypt(b"one", keyring=keyring))
    aws.write_message("ssm:/app/v", envelope.encrypt(b"two", keyring=keyring), force=True)
    got = aws.load_env(["ssm:/app/v:1", "ssm:/app/v", "ssm:/app/v:2"], keyring=keyring)
    assert got == {"ssm:/app/v:1": "one", "ssm:/app/v": "two", "ssm:/app/v:2": "two"}
    with pytest.raises(envelope.StorageError, match=r"ssm:/app/v:9 not found") as caught:
        aws.load_env(["ssm:/app/v:9"], keyring=keyring)
    assert caught.value.code == "ParameterVersionNotFound"
    with pytest.raises(envelope.StorageError, match="secretsmanager:nope not found"):
        aws.load_env(["secretsmanager:nope"], keyring=keyring)


def test_json_bundle_transform(services_env: ServicesEnv, keyring: envelope.KmsKeyring) -> None:
    bundle = b'{"db": {"host": "db.internal", "password": "pw"}, "port": 5432}'
    aws.write_message("secretsmanager:app/config", envelope.encrypt(bundle, keyring=keyring))
    got = aws.load_env(["secretsmanager:app/config"], keyring=keyring, transform="json")
    assert got["secretsmanager:app/config"] == {"db": {"host": "db.internal", "password": "pw"}, "port": 5432}
    raw = aws.load_env(["secretsmanager:app/config"], keyring=keyring, transform="binary")
    assert raw["secretsmanager:app/config"] == bundle
    aws.write_message("ssm:/app/not-json", envelope.encrypt(b"pw=1", keyring=keyring))
    with pytest.raises(envelope.UsageError, match="is not JSON") as caught:
        aws.load_env(["ssm:/app/not-json"], keyring=keyring, transform="json")
    assert "pw=1" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# the cache


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(_loadenv, "_clock", fake)
    return fake


def test_ttl_expiry_and_force_fetch_refetch(services_env: ServicesEnv, keyring: envelope.KmsKeyring,
                                            services_proxy: FaultProxy, clock: _Clock) -> None:
    aws.write_message("ssm:/app/db", envelope.encrypt(b"pw", keyring=keyring))
    names = ["ssm:/app/db"]

    def calls() -> tuple[int, int]:
        return services_proxy.calls("GetParameters"), services_proxy.calls("Decrypt")

    services_proxy.reset_counts()
    assert aws.load_env(names, keyring=keyring, max_age=60) == {"ssm:/app/db": "pw"}
    assert calls() == (1, 1)
    clock.now += 59
    assert aws.load_env(names, keyring=keyring, max_age=60) == {"ssm:/app/db": "pw"}
    assert calls() == (1, 1)  # served from the cache
    clock.now += 2  # past max_age
    aws.load_env(names, keyring=keyring, max_age=60)
    assert calls() == (2, 2)
    aws.load_env(names, keyring=keyring, max_age=60, force_fetch=True)
    assert calls() == (3, 3)
    # a new value shows after force_fetch, and the default max_age is 300 s (Powertools')
    aws.write_message("ssm:/app/db", envelope.encrypt(b"rotated", keyring=keyring), force=True)
    assert aws.load_env(names, keyring=keyring) == {"ssm:/app/db": "pw"}
    assert aws.load_env(names, keyring=keyring, force_fetch=True) == {"ssm:/app/db": "rotated"}
    clock.now += 299
    assert aws.load_env(names, keyring=keyring) == {"ssm:/app/db": "rotated"}
    before = calls()
    clock.now += 2
    aws.load_env(names, keyring=keyring)
    assert calls() == (before[0] + 1, before[1] + 1)


def test_cache_key_holds_context_transform_and_the_ciphertext(keyring: envelope.KmsKeyring,
                                                              services_proxy: FaultProxy, clock: _Clock) -> None:
    first = aws.encrypt_env({"A": '{"k": 1}'}, keyring=keyring, context={"app": "web"})
    second = aws.encrypt_env({"A": '{"k": 2}'}, keyring=keyring, context={"app": "web"})
    services_proxy.reset_counts()
    aws.load_env(["A"], keyring=keyring, environ=first)
    aws.load_env(["A"], keyring=keyring, environ=first)
    assert services_proxy.calls("Decrypt") == 1
    assert aws.load_env(["A"], keyring=keyring, environ=first, transform="json") == {"A": {"k": 1}}
    assert aws.load_env(["A"], keyring=keyring, environ=first, context={"app": "web"}) == {"A": '{"k": 1}'}
    assert services_proxy.calls("Decrypt") == 3  # another transform, another context: other entries
    assert aws.load_env(["A"], keyring=keyring, environ=second) == {"A": '{"k": 2}'}  # a new value: refetched
    with pytest.raises(envelope.ContextMismatchError):  # a context that does not match is never served
        aws.load_env(["A"], keyring=keyring, environ=first, context={"app": "api"})


def test_max_age_zero_does_not_cache(keyring: envelope.KmsKeyring, services_proxy: FaultProxy) -> None:
    values = aws.encrypt_env({"A": "x"}, keyring=keyring)
    services_proxy.reset_counts()
    for _ in range(3):
        aws.load_env(["A"], keyring=keyring, environ=values, max_age=0)
    assert services_proxy.calls("Decrypt") == 3


def test_cache_is_thread_safe(keyring: envelope.KmsKeyring, services_proxy: FaultProxy) -> None:
    from concurrent.futures import ThreadPoolExecutor

    values = aws.encrypt_env({f"V{i}": f"v{i}" for i in range(4)}, keyring=keyring)
    names = list(values)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: aws.load_env(names, keyring=keyring, environ=values), range(32)))
    assert all(r == {n: f"v{n[1:]}" for n in names} for r in results)
    assert services_proxy.calls("Decrypt") <= 8  # at most one per thread that missed at the same time


def test_stale_if_error_serves_an_expired_value_when_refreshing_fails(
        services_env: ServicesEnv, keyring: envelope.KmsKeyring, services_proxy: FaultProxy, clock: _Clock,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore does not retry; the budget's few tries all fail
    budget = aws.RetryBudget(attempts=2, base_delay=0.001, max_delay=0.001)
    aws.write_message("ssm:/app/db", envelope.encrypt(b"pw", keyring=keyring))
    aws.load_env(["ssm:/app/db"], keyring=keyring, max_age=10)
    services_proxy.throttle_operations = {"GetParameters"}
    services_proxy.throttle_share = 1.0
    clock.now += 11
    with pytest.raises(envelope.StorageError) as caught:  # off by default
        aws.load_env(["ssm:/app/db"], keyring=keyring, max_age=10, retry=budget)
    assert caught.value.code == "ThrottlingException"
    with caplog.at_level(logging.WARNING, logger="envelope.aws"):
        got = aws.load_env(["ssm:/app/db"], keyring=keyring, max_age=10, stale_if_error=30, retry=budget)
    assert got == {"ssm:/app/db": "pw"}
    assert "ssm:/app/db" in caplog.text and "ThrottlingException" in caplog.text and "pw" not in caplog.text
    clock.now += 31  # past max_age + stale_if_error
    with pytest.raises(envelope.StorageError):
        aws.load_env(["ssm:/app/db"], keyring=keyring, max_age=10, stale_if_error=30, retry=budget)


# ---------------------------------------------------------------------------------------------------------
# the retry budget


def test_retry_budget_outlasts_throttling(keyring: envelope.KmsKeyring, services_proxy: FaultProxy,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off, to see the budget alone
    values = aws.encrypt_env({"A": "x"}, keyring=keyring)
    sleeps: list[float] = []
    monkeypatch.setattr(_loadenv, "_sleep", sleeps.append)
    services_proxy.throttle_operations = {"Decrypt"}
    services_proxy.throttle_share = 0.75  # of every four Decrypts the first passes and the next three are throttled
    budget = aws.RetryBudget(attempts=6, base_delay=0.05, max_delay=0.4, deadline=30)
    aws.load_env(["A"], keyring=keyring, environ=values, retry=budget, max_age=0)
    services_proxy.reset_counts()
    assert aws.load_env(["A"], keyring=keyring, environ=values, retry=budget, max_age=0) == {"A": "x"}
    assert services_proxy.throttled["Decrypt"] == 3 and services_proxy.calls("Decrypt") == 1
    assert len(sleeps) == 3 and all(0 <= s <= min(0.4, 0.05 * 2**i) for i, s in enumerate(sleeps))
    with pytest.raises(envelope.KmsError, match="throttled") as caught:
        aws.load_env(["A"], keyring=keyring, environ=values, retry=aws.RetryBudget(attempts=1), max_age=0)
    assert caught.value.code == "ThrottlingException"


def test_retry_budget_deadline(keyring: envelope.KmsKeyring, services_proxy: FaultProxy,
                               monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    values = aws.encrypt_env({"A": "x"}, keyring=keyring)

    def sleep(seconds: float) -> None:
        clock.now += 5  # each pause costs 5 s of the deadline

    monkeypatch.setattr(_loadenv, "_sleep", sleep)
    services_proxy.throttle_operations = {"Decrypt"}
    services_proxy.throttle_share = 1.0
    services_proxy.reset_counts()
    with pytest.raises(envelope.KmsError):
        aws.load_env(["A"], keyring=keyring, environ=values, max_age=0,
                     retry=aws.RetryBudget(attempts=100, base_delay=0, max_delay=0, deadline=12))
    assert services_proxy.received["Decrypt"] == 3  # tries at 0 s, 5 s, 10 s; none starts after 12 s


def test_errors_that_are_not_transient_are_not_retried(services_env: ServicesEnv, keyring: envelope.KmsKeyring,
                                                       key_arn: str, services_proxy: FaultProxy) -> None:
    values = aws.encrypt_env({"A": "x"}, keyring=keyring, function=FUNCTION)
    services_proxy.reset_counts()
    with pytest.raises(envelope.ContextMismatchError):  # refused before any KMS call, and not tried again
        aws.load_env(["A"], keyring=keyring, environ={**values, "AWS_LAMBDA_FUNCTION_NAME": "billing"})
    assert services_proxy.received["Decrypt"] == 0
    console = _console_value(services_env, key_arn, b"x", function="billing")
    with pytest.raises(envelope.KmsError, match="InvalidCiphertextException"):
        aws.load_env(["B"], keyring=keyring, environ={"B": console, "AWS_LAMBDA_FUNCTION_NAME": FUNCTION})
    assert services_proxy.received["Decrypt"] == 1  # one try: InvalidCiphertextException is not transient


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"deadline": -1}, {"base_delay": float("inf")}])
def test_retry_budget_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(envelope.UsageError):
        aws.RetryBudget(**bad)
