"""The CLI with AWS KMS keys (issue 4, "CLI"), over real HTTP against the tests' own moto_server.

In-process runs (typer's CliRunner) cover the options and outcomes; subprocess runs cover what only a real
process shows: the retry settings taken from its environment (AWS_MAX_ATTEMPTS), throttling and an endpoint
that refuses connections. Every failure is checked for its exit code, one ``envelope: error:`` line, and that
no output (not even a temporary file) was left behind.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import CommitmentPolicy
from aws_fixtures import ACCOUNT, REGION, AwsEnv, FaultProxy, refused_endpoint
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope

OTHER_REGION = "eu-west-1"
PLAIN = b"db_password=hunter2\n" * 200
CONTEXT = ["-c", "app=web", "-c", "stage=prod"]
# "Some account outside the filter". Built at run time: the repository spells out no account id but moto's.
PLACEHOLDER_ACCOUNT = "0" * 12
CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def ok(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    result = run(*args, input=input, env=env)
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return result


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(stderr: str, *words: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def refused(code: int, words: str | tuple[str, ...], *args: str | Path, folder: Path) -> str:
    """Run a command that must fail with ``code``; nothing in ``folder`` may change."""
    before = files(folder)
    result = run(*args)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    line = one_error_line(result.stderr, *((words,) if isinstance(words, str) else words))
    assert files(folder) == before
    return line


def subprocess_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
                   input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The CLI as its own process; it inherits the AWS test environment (credentials, endpoint) from os.environ."""
    return subprocess.run([*CLI, *(str(a) for a in args)], capture_output=True, timeout=120, cwd=cwd, input=input,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def edk_arns(path: Path) -> list[str]:
    with path.open("rb") as stream:
        header, _, _ = envelope.read_header(stream)  # type: ignore[arg-type]
    return [edk.provider_info.decode() if edk.provider_id == "aws-kms" else edk.provider_id
            for edk in header.encrypted_data_keys]


def esdk() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain.txt").write_bytes(PLAIN)
    return tmp_path


@pytest.fixture
def file_key(work: Path) -> Path:
    ok("keygen", "-o", "local.key", "--name", "local")
    return work / "local.key"


# ---------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("form", ["arn", "alias", "key-id"])
def test_round_trip_with_each_identifier_form(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path,
                                              form: str) -> None:
    arn = aws_env.create_key(alias="alias/app")
    identifier = {"arn": arn, "alias": "alias/app", "key-id": arn.rsplit("/", 1)[1]}[form]
    ok("encrypt", "plain.txt", "-k", f"kms:{identifier}", *CONTEXT, "-o", "m.enc", "--metadata-output", "meta")
    # the EDK names the key ARN whatever identifier was given, and the context went to KMS
    assert edk_arns(work / "m.enc") == [arn]
    (sent,) = [body for operation, body in kms_proxy.requests if operation == "GenerateDataKey"]
    assert sent["KeyId"] == identifier and sent["EncryptionContext"] == {"app": "web", "stage": "prod"}
    record = json.loads((work / "meta").read_text())
    assert record["header"]["encrypted_data_keys"][0]["provider_info"] == arn
    assert "cache_stats" not in record  # no cache unless --cache-max-age

    # decrypt with the same identifier used to encrypt (an alias or key id is resolved to its ARN)
    ok("decrypt", "m.enc", "-k", f"kms:{identifier}", "-c", "app=web", "-o", "out.txt")
    assert (work / "out.txt").read_bytes() == PLAIN
    assert stat.S_IMODE((work / "out.txt").stat().st_mode) == 0o600
    assert [r[1]["KeyId"] for r in kms_proxy.requests if r[0] == "Decrypt"] == [arn]


def test_two_keys_in_two_regions(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    east = aws_env.create_key(alias="alias/app")
    west = aws_env.create_key(OTHER_REGION, alias="alias/app-west")
    ok("encrypt", "plain.txt", "-k", "kms:alias/app", "-k", f"kms:{west}", *CONTEXT, "-o", "m.enc")
    assert edk_arns(work / "m.enc") == [east, west]
    assert (kms_proxy.calls("GenerateDataKey"), kms_proxy.calls("Encrypt")) == (1, 1)  # one data key, wrapped twice

    # either key alone opens it: the west one by ARN, by alias with --region, and the east one by alias
    for i, keys in enumerate((["-k", f"kms:{west}"], ["-k", "kms:alias/app-west", "--region", OTHER_REGION],
                              ["-k", "kms:alias/app"])):
        ok("decrypt", "m.enc", *keys, "-o", f"out{i}")
        assert (work / f"out{i}").read_bytes() == PLAIN
    # --region names where non-ARN identifiers live: alias/app-west does not exist in us-east-1
    refused(3, ("not found", "alias/app-west (region us-east-1)"), "decrypt", "m.enc", "-k", "kms:alias/app-west",
            "-o", "nope", folder=work)


def test_file_and_kms_keys_mix(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path, file_key: Path) -> None:
    arn = aws_env.create_key(alias="alias/app")
    ok("encrypt", "plain.txt", "-k", "kms:alias/app", "-k", f"file:{file_key}", *CONTEXT, "-o", "kms-first.enc")
    ok("encrypt", "plain.txt", "-k", file_key, "-k", "kms:alias/app", *CONTEXT, "-o", "file-first.enc")
    assert edk_arns(work / "kms-first.enc") == [arn, "envelope"]
    assert edk_arns(work / "file-first.enc") == ["envelope", arn]
    # the first key makes the data key: KMS generated one, and wrapped the local key's data key once
    assert (kms_proxy.calls("GenerateDataKey"), kms_proxy.calls("Encrypt")) == (1, 1)

    kms_proxy.reset_counts()
    for name in ("kms-first.enc", "file-first.enc"):
        ok("decrypt", name, "-k", file_key, "-o", f"{name}.by-file")  # no KMS call at all
        ok("decrypt", name, "-k", "kms:alias/app", "-o", f"{name}.by-kms")
        assert (work / f"{name}.by-file").read_bytes() == (work / f"{name}.by-kms").read_bytes() == PLAIN
    assert kms_proxy.calls("Decrypt") == 2


def test_discovery_with_and_without_a_filter(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    east, west = aws_env.create_key(), aws_env.create_key(OTHER_REGION)
    ok("encrypt", "plain.txt", "-k", f"kms:{west}", "-k", f"kms:{east}", "-o", "m.enc")
    ok("decrypt", "m.enc", "--discovery", "-o", "any")
    ok("decrypt", "m.enc", "--discovery", "--discovery-account", ACCOUNT, "--discovery-partition", "aws",
       "-o", "filtered")
    ok("decrypt", "m.enc", "--discovery", "--discovery-account", PLACEHOLDER_ACCOUNT, "--discovery-account",
       ACCOUNT, "-o", "two-accounts")
    assert (work / "any").read_bytes() == (work / "filtered").read_bytes() == (work / "two-accounts").read_bytes() \
        == PLAIN
    # discovery takes the first EDK (the west key's, in its own region)
    assert [r[1]["KeyId"] for r in kms_proxy.requests if r[0] == "Decrypt"] == [west] * 3

    kms_proxy.reset_counts()
    line = refused(3, "outside the discovery filter", "decrypt", "m.enc", "--discovery", "--discovery-account",
                   PLACEHOLDER_ACCOUNT, "-o", "out", folder=work)
    assert east in line and west in line
    line = refused(3, "outside the discovery filter", "decrypt", "m.enc", "--discovery", "--discovery-account",
                   ACCOUNT, "--discovery-partition", "aws-cn", "-o", "out", folder=work)
    assert kms_proxy.received["Decrypt"] == 0  # refused before asking KMS
    refused(2, "exclude each other", "decrypt", "m.enc", "--discovery", "-k", "kms:alias/x", "-o", "out", folder=work)


def test_wrong_context_is_refused(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    arn = aws_env.create_key()
    ok("encrypt", "plain.txt", "-k", f"kms:{arn}", *CONTEXT, "-o", "m.enc")
    # a -c mismatch is refused from the header, before KMS is asked: exit 1
    refused(1, "encryption context key 'stage' has a different value", "decrypt", "m.enc", "-k", f"kms:{arn}",
            "-c", "stage=dev", "-o", "out", folder=work)
    assert kms_proxy.received["Decrypt"] == 0
    # a context changed in the message: KMS refuses the data key (InvalidCiphertext): exit 3, naming the key
    message = (work / "m.enc").read_bytes()
    field = b"\x00\x05stage\x00\x04prod"
    assert message.count(field) == 1
    (work / "changed.enc").write_bytes(message.replace(field, b"\x00\x05stage\x00\x04prox"))
    refused(3, ("encryption context differs", arn), "decrypt", "changed.enc", "-k", f"kms:{arn}", "-o", "out",
            folder=work)
    refused(3, ("encryption context differs", arn), "decrypt", "changed.enc", "--discovery", "-o", "out",
            folder=work)
    assert kms_proxy.calls("Decrypt") == 2


def test_unknown_and_deleted_keys_are_refused(aws_env: AwsEnv, work: Path) -> None:
    unknown = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-00000000abcd"
    refused(3, ("not found", unknown), "encrypt", "plain.txt", "-k", f"kms:{unknown}", "-o", "m.enc", folder=work)
    refused(3, ("not found", "alias/missing"), "encrypt", "plain.txt", "-k", "kms:alias/missing", "-o", "m.enc",
            folder=work)

    arn = aws_env.create_key(alias="alias/app")
    ok("encrypt", "plain.txt", "-k", "kms:alias/app", "-o", "m.enc")
    # moto keeps keys pending deletion (and disabled ones) usable; a reset removes every key, as a completed
    # deletion does
    aws_env.server.reset()
    refused(3, ("not found", arn), "decrypt", "m.enc", "-k", f"kms:{arn}", "-o", "out", folder=work)
    refused(3, ("not found", arn), "decrypt", "m.enc", "--discovery", "-o", "out", folder=work)
    line = refused(3, ("cannot resolve alias/app", "not found"), "decrypt", "m.enc", "-k", "kms:alias/app", "-o",
                   "out", folder=work)
    assert "no encrypted data key was wrapped" not in line  # unknown, since the alias could not be resolved


def test_grant_tokens_go_with_every_call(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    east, west = aws_env.create_key(), aws_env.create_key(OTHER_REGION)
    tokens = ["grant-token-one", "grant-token-two"]
    grants = [part for token in tokens for part in ("--grant-token", token)]
    ok("encrypt", "plain.txt", "-k", f"kms:{east}", "-k", f"kms:{west}", *grants, "-o", "m.enc")
    ok("decrypt", "m.enc", "-k", f"kms:{west}", *grants, "-o", "strict")
    ok("decrypt", "m.enc", "--discovery", *grants, "-o", "discovered")
    assert [op for op, _ in kms_proxy.requests] == ["GenerateDataKey", "Encrypt", "Decrypt", "Decrypt"]
    assert all(sent.get("GrantTokens") == tokens for _, sent in kms_proxy.requests)


def test_aws_profile_gives_credentials_and_region(aws_env: AwsEnv, work: Path, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    arn = aws_env.create_key(OTHER_REGION, alias="alias/profiled")
    (tmp_path / "aws-config").write_text(f"[profile envelope-test]\nregion = {OTHER_REGION}\n")
    (tmp_path / "aws-credentials").write_text("[envelope-test]\naws_access_key_id = profile-key\n"
                                              "aws_secret_access_key = profile-secret\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "envelope-test")
    ok("encrypt", "plain.txt", "-k", "kms:alias/profiled", "-o", "m.enc")  # the alias is in the profile's region
    assert edk_arns(work / "m.enc") == [arn]
    ok("decrypt", "m.enc", "-k", "kms:alias/profiled", "-o", "out")
    assert (work / "out").read_bytes() == PLAIN

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    refused(2, "no-such-profile", "decrypt", "m.enc", "-k", "kms:alias/profiled", "-o", "out2", folder=work)
    monkeypatch.delenv("AWS_PROFILE")  # now neither credentials nor a region
    refused(3, "no usable AWS credentials", "decrypt", "m.enc", "-k", f"kms:{arn}", "-o", "out2", folder=work)
    refused(2, "no AWS region", "decrypt", "m.enc", "-k", "kms:alias/profiled", "-o", "out2", folder=work)
    ok("decrypt", "m.enc", "-k", "kms:alias/profiled", "--region", OTHER_REGION, "-o", "out3",
       env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert (work / "out3").read_bytes() == PLAIN


def test_a_credential_process_starts_with_signals_unblocked(aws_env: AwsEnv, work: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI blocks SIGINT, SIGTERM and SIGHUP in its threads (envelope_cli/signals.py). A program botocore starts for
    credentials (``credential_process``) must not inherit that mask, or Ctrl-C and ``kill`` could not stop it."""
    arn = aws_env.create_key()
    helper, mask = tmp_path / "credentials.py", tmp_path / "mask"
    helper.write_text(
        "import json, pathlib\n"
        "status = pathlib.Path('/proc/self/status').read_text().splitlines()\n"
        f"pathlib.Path({str(mask)!r}).write_text(next(l for l in status if l.startswith('SigBlk:')).split()[1])\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': 'from-process', 'SecretAccessKey': 'process-secret'}))\n")
    (tmp_path / "aws-config").write_text(f"[default]\ncredential_process = {sys.executable} {helper}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    done = subprocess_cli("encrypt", "plain.txt", "-k", f"kms:{arn}", "-o", "m.enc", cwd=work)
    assert done.returncode == 0, done.stderr
    assert edk_arns(work / "m.enc") == [arn]  # the credentials came from the helper: no others are set
    blocked = int(mask.read_text(), 16)
    assert [s.name for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if blocked & 1 << (s - 1)] == []


# ---------------------------------------------------------------------------------------------------------
# faults, in real processes


def test_every_call_throttled_exits_3_without_output(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    arn = aws_env.create_key()
    ok("encrypt", "plain.txt", "-k", f"kms:{arn}", "-o", "m.enc")
    kms_proxy.throttle_share = 1.0
    kms_proxy.reset_counts()
    before = files(work)
    attempts = {"AWS_MAX_ATTEMPTS": "2"}  # one retry: the real (about 1 s) throttling backoff stays short
    for args in (["encrypt", "plain.txt", "-o", "new.enc"], ["decrypt", "m.enc", "-o", "new.txt"]):
        done = subprocess_cli(*args, "-k", f"kms:{arn}", cwd=work, env=attempts)
        assert done.returncode == 3, done.stderr
        one_error_line(done.stderr.decode(), "throttled after 2 attempts", arn)
        assert done.stdout == b""
    assert files(work) == before  # no output, no temporary file
    assert kms_proxy.throttled["GenerateDataKey"] == kms_proxy.throttled["Decrypt"] == 2
    assert kms_proxy.calls("GenerateDataKey") == kms_proxy.calls("Decrypt") == 0


def test_refused_endpoint_fails_fast_with_a_clear_message(aws_env: AwsEnv, work: Path) -> None:
    arn = aws_env.create_key()
    endpoint = refused_endpoint()
    started = time.monotonic()
    done = subprocess_cli("encrypt", "plain.txt", "-k", f"kms:{arn}", "-o", "m.enc", cwd=work,
                          env={"AWS_ENDPOINT_URL_KMS": endpoint})
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    one_error_line(done.stderr.decode(), f"could not reach AWS KMS at {endpoint} for GenerateDataKey with key {arn}",
                   "after 5 attempts", "refused")
    assert not (work / "m.enc").exists()
    # "within the timeout, not minutes" (not a speed benchmark): five refused connects with sub-second backoff
    assert elapsed < 60


# ---------------------------------------------------------------------------------------------------------
# interop with aws-encryption-sdk's KMS master key provider


def test_cli_and_esdk_kms_master_key_provider_read_each_other(aws_env: AwsEnv, work: Path) -> None:
    east = aws_env.create_key(alias="alias/app")
    west = aws_env.create_key(OTHER_REGION)

    # the CLI writes under two keys; the ESDK opens it with either one
    ok("encrypt", "plain.txt", "-k", "kms:alias/app", "-k", f"kms:{west}", *CONTEXT, "-o", "cli.enc")
    for arn in (east, west):
        provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn])
        plaintext, header = esdk().decrypt(source=(work / "cli.enc").read_bytes(), key_provider=provider)
        assert plaintext == PLAIN and header.encryption_context["stage"] == "prod"

    # the ESDK writes (signed, its default suite, and two keys); the CLI opens it with the alias, and discovery
    message, _ = esdk().encrypt(source=PLAIN, encryption_context={"app": "web"},
                                key_provider=aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[east, west]))
    (work / "esdk.enc").write_bytes(message)
    ok("decrypt", "esdk.enc", "-k", "kms:alias/app", "-c", "app=web", "-o", "from-esdk")
    ok("decrypt", "esdk.enc", "--discovery", "--discovery-account", ACCOUNT, "-o", "from-esdk-discovery")
    assert (work / "from-esdk").read_bytes() == (work / "from-esdk-discovery").read_bytes() == PLAIN
    header, _, _ = envelope.read_header(io.BytesIO(message))
    assert header.suite.signed
