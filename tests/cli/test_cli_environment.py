"""``envelope encrypt-env`` and ``envelope exec``, with bundles from files, stdin, environment variables, SSM and
Secrets Manager (moto_server), and ``--key ssm:`` / ``--key secretsmanager:`` key files.

Most tests run the CLI in this process (typer's CliRunner) with ``exec``'s last step captured: they check which
environment COMMAND would get. The process semantics of exec (exit codes, signals, signal masks, a tampered
bundle running nothing) are tested with real processes.

moto stores an SSM SecureString without encrypting it (``kms:<KeyId>:<value>``); the key-file tests rely only on
"read with decryption gives the value back", which AWS also does.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import FaultProxy, ServicesEnv
from envelope_cli import environment
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope
import envelope.aws

CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def process(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *(str(a) for a in args)], capture_output=True, timeout=60, cwd=ROOT, input=input)


def one_error_line(stderr: str | bytes, words: str) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: ") and words in lines[0], lines
    return lines[0]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.key"
    from envelope._keyrings.keyfile import generate_aes_key_file, write_key_file

    write_key_file(path, generate_aes_key_file("envelope", "app"))
    return path


@pytest.fixture
def keyring(key_file: Path) -> envelope.Keyring:
    return envelope.load_keyring(key_file)


class Captured:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, command: list[str], env: dict[str, str]) -> int:
        self.calls.append((command, env))
        return 0

    @property
    def env(self) -> dict[str, str]:
        assert len(self.calls) == 1
        return self.calls[0][1]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, fast_cli: None) -> Captured:
    """exec's last step (signals restored, os.execvpe) replaced by a recorder: this is the test process."""
    recorder = Captured()
    monkeypatch.setattr(environment, "_exec", recorder)
    return recorder


def bundle(tmp_path: Path, keyring: envelope.Keyring, name: str, text: str, *, encode: bool = False,
           context: dict[str, str] | None = None) -> Path:
    message = envelope.encrypt(text.encode(), keyring=keyring, context=context)
    path = tmp_path / name
    path.write_bytes(base64.b64encode(message) + b"\n" if encode else message)
    return path


# ---------------------------------------------------------------------------------------------------------
# exec: the environment COMMAND gets


def test_later_sources_override_and_nested_json_flattens(tmp_path: Path, key_file: Path, keyring: envelope.Keyring,
                                                         captured: Captured) -> None:
    base = bundle(tmp_path, keyring, "base.env.enc", "# defaults\nDB__HOST=localhost\nLEVEL=info\n"
                  'MULTI="two\\nlines"\nexport QUOTED=\'a # b\'\n')
    prod = bundle(tmp_path, keyring, "prod.json.enc",
                  json.dumps({"DB": {"HOST": "db.internal", "PORT": 5432}, "LEVEL": "warn"}), encode=True)
    result = invoke("exec", "--key", f"file:{key_file}", base, f"file:{prod}", "--", "server", "--port", "1")
    assert result.exit_code == 0, result.stderr
    command, env = captured.calls[0]
    assert command == ["server", "--port", "1"]
    assert env["DB__HOST"] == "db.internal" and env["DB__PORT"] == "5432" and env["LEVEL"] == "warn"
    assert env["MULTI"] == "two\nlines" and env["QUOTED"] == "a # b"
    assert env["PATH"] == os.environ["PATH"]  # envelope's environment is kept without --pristine


def test_pristine_stdin_and_env_sources(key_file: Path, keyring: envelope.Keyring, captured: Captured) -> None:
    first = envelope.encrypt(b"A=from stdin\nB=stdin", keyring=keyring)
    second = base64.b64encode(envelope.encrypt(b'{"B": "from env"}', keyring=keyring)).decode()
    result = invoke("exec", "--pristine", "--key", key_file, "-", "env:BUNDLE", "--", "env", input=first,
                    env={"BUNDLE": second, "PARENT_ONLY": "x"})
    assert result.exit_code == 0, result.stderr
    assert captured.env == {"A": "from stdin", "B": "from env"}  # nothing of envelope's own environment


def test_remote_sources(services_env: ServicesEnv, key_file: Path, keyring: envelope.Keyring,
                        captured: Captured) -> None:
    envelope.aws.write_message("ssm:/app/env", envelope.encrypt(b"A=ssm\nB=ssm", keyring=keyring))
    envelope.aws.write_message("secretsmanager:app/env", envelope.encrypt(b'{"B": "secret"}', keyring=keyring))
    result = invoke("exec", "--key", key_file, "ssm:/app/env", "secretsmanager:app/env", "--", "env")
    assert result.exit_code == 0, result.stderr
    assert (captured.env["A"], captured.env["B"]) == ("ssm", "secret")


def test_kms_key_and_required_context(services_env: ServicesEnv, tmp_path: Path, captured: Captured) -> None:
    arn = services_env.aws.create_key()
    source = bundle(tmp_path, envelope.KmsKeyring(arn), "b.enc", "A=kms", context={"stage": "prod"})
    assert invoke("exec", "--key", f"kms:{arn}", "-c", "stage=prod", source, "--", "env").exit_code == 0
    assert captured.env["A"] == "kms"
    wrong = invoke("exec", "--key", f"kms:{arn}", "-c", "stage=dev", source, "--", "env")
    assert wrong.exit_code == 1 and len(captured.calls) == 1
    one_error_line(wrong.stderr, "stage")


@pytest.mark.parametrize(("text", "words"), [("1BAD=x", "not a valid environment variable name"),
                                             ('{"A-B": "x"}', "not a valid environment variable name"),
                                             ('{"A": "x\\u0000y"}', "NUL"),
                                             ("A=1\nA=2", "A is given twice"),
                                             ("[1, 2]", "expected NAME=VALUE")])
def test_invalid_bundles_run_nothing(tmp_path: Path, key_file: Path, keyring: envelope.Keyring, text: str,
                                     words: str, captured: Captured) -> None:
    result = invoke("exec", "--key", key_file, bundle(tmp_path, keyring, "b.enc", text), "--", "env")
    assert result.exit_code == 1 and captured.calls == []
    one_error_line(result.stderr, words)


def test_exec_usage_and_io_errors(tmp_path: Path, key_file: Path, keyring: envelope.Keyring,
                                  captured: Captured) -> None:
    source = bundle(tmp_path, keyring, "b.enc", "A=1")
    for args, code, words in [((source,), 2, "give the command after --"),
                              ((source, "--"), 2, "no COMMAND after --"),
                              (("s3://", "--", "env"), 2, "malformed S3 URL"),  # s3:// works: test_cli_s3.py
                              (("-", "-", "--", "env"), 2, "once"),
                              (("env:", "--", "env"), 2, "env:NAME"),
                              (("ssm:/bad name", "--", "env"), 2, "parameter name"),
                              ((tmp_path / "none.enc", "--", "env"), 4, "none.enc"),
                              (("env:NOT_SET_HERE", "--", "env"), 4, "NOT_SET_HERE is not set")]:
        result = invoke("exec", "--key", key_file, *args)
        assert result.exit_code == code, (args, result.stderr)
        one_error_line(result.stderr, words)
    assert captured.calls == []


# ---------------------------------------------------------------------------------------------------------
# exec: real processes


def test_exec_passes_variables_and_the_exit_code(tmp_path: Path, key_file: Path, keyring: envelope.Keyring) -> None:
    source = bundle(tmp_path, keyring, "b.enc", '{"DB": {"PASSWORD": "pw"}}')
    probe = "import os, sys; print(os.environ['DB__PASSWORD']); sys.exit(7)"
    result = process("exec", "--key", key_file, source, "--", sys.executable, "-c", probe)
    assert (result.returncode, result.stdout, result.stderr) == (7, b"pw\n", b"")
    missing = process("exec", "--key", key_file, source, "--", "no-such-command-here")
    assert missing.returncode == 127
    one_error_line(missing.stderr, "not found")


def test_exec_sigterm_reaches_the_command(tmp_path: Path, key_file: Path, keyring: envelope.Keyring) -> None:
    source = bundle(tmp_path, keyring, "b.enc", "A=1")
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(42)))\n"
             "print('ready', flush=True)\n"
             "time.sleep(30)\n")
    running = subprocess.Popen([*CLI, "exec", "--key", str(key_file), str(source), "--", sys.executable, "-c",
                                child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert running.stdout is not None
        assert running.stdout.readline() == b"ready\n"
        running.send_signal(signal.SIGTERM)  # to "envelope": exec made it the command itself
        assert running.wait(timeout=30) == 42
        assert running.stdout.read() == b"got SIGTERM\n"
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()


def _signal_masks(status: bytes) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in status.decode().splitlines() if ":" in line)
    return {name: int(fields[name].strip(), 16) for name in ("SigBlk", "SigIgn")}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal masks from /proc (Linux)")
def test_exec_gives_the_command_the_signal_dispositions_envelope_got(tmp_path: Path, key_file: Path,
                                                                     keyring: envelope.Keyring) -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and the CLI blocks SIGINT/SIGTERM/SIGHUP; both survive exec, so envelope
    undoes them: cat(1), exec'd straight away, sees the same masks as when started without envelope."""
    source = bundle(tmp_path, keyring, "b.enc", "A=1")
    direct = subprocess.run(["cat", "/proc/self/status"], capture_output=True, check=True, timeout=30)
    result = process("exec", "--key", key_file, source, "--", "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    through = _signal_masks(result.stdout)
    assert through == _signal_masks(direct.stdout)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not through["SigIgn"] & (1 << (number - 1))
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert not through["SigBlk"] & (1 << (number - 1))


def test_tampered_bundle_runs_nothing(tmp_path: Path, key_file: Path, keyring: envelope.Keyring) -> None:
    good = bundle(tmp_path, keyring, "good.enc", "A=1")
    bad = tmp_path / "bad.enc"
    data = bytearray(good.read_bytes())
    data[-3] ^= 0x01
    bad.write_bytes(bytes(data))
    marker = tmp_path / "ran"
    result = process("exec", "--key", key_file, good, bad, "--", sys.executable, "-c",
                     f"open({str(marker)!r}, 'w').close()")
    assert result.returncode == 1 and result.stdout == b""
    one_error_line(result.stderr, "")
    assert not marker.exists()


def test_spawn_and_wait_forwards_sigterm() -> None:
    """The path for platforms where exec does not replace the process (Windows), run here by hand: envelope
    waits for COMMAND, passes SIGTERM on, and exits with COMMAND's code."""
    child = ("import signal, sys, time; "
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42)); print('ready', flush=True); time.sleep(30)")
    driver = ("import os, signal, sys\n"
              "from envelope_cli import environment, signals\n"
              "signal.signal(signal.SIGTERM, signals._raise)  # what signals.install does without sigwait\n"
              f"sys.exit(environment.spawn_and_wait([sys.executable, '-c', {child!r}], dict(os.environ)))\n")
    running = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert running.stdout is not None
        assert running.stdout.readline() == b"ready\n"
        time.sleep(0.1)  # the driver is in wait() by now
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 42
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()


# ---------------------------------------------------------------------------------------------------------
# encrypt-env


def _dotenv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_encrypt_env_output_is_read_by_load_env(services_env: ServicesEnv, services_proxy: FaultProxy,
                                               fast_cli: None) -> None:
    arn = services_env.aws.create_key(alias="alias/app")
    result = invoke("encrypt-env", "DB_PASSWORD=correct horse battery staple", "API_TOKEN", "--key", "kms:alias/app",
                    "--function", "orders", env={"API_TOKEN": "from my environment"})
    assert result.exit_code == 0, result.stderr
    values = _dotenv(result.stdout)
    assert list(values) == ["DB_PASSWORD", "API_TOKEN"] and "horse" not in result.stdout
    assert services_proxy.calls("GenerateDataKey") == 1
    keyring = envelope.KmsKeyring(arn)
    got = envelope.aws.load_env(["DB_PASSWORD", "API_TOKEN"], keyring=keyring,
                                environ={**values, "AWS_LAMBDA_FUNCTION_NAME": "orders"})
    assert got == {"DB_PASSWORD": "correct horse battery staple", "API_TOKEN": "from my environment"}
    assert services_proxy.calls("Decrypt") == 1
    header = envelope.decrypt(base64.b64decode(values["DB_PASSWORD"]), keyring=keyring).header
    assert header.encryption_context == {"LambdaFunctionName": "orders"} and header.suite.id == 0x0478
    as_json = invoke("encrypt-env", "A=1", "--key", "kms:alias/app", "--format", "json", "-c", "app=web")
    assert as_json.exit_code == 0 and list(json.loads(as_json.stdout)) == ["A"]


def test_encrypt_env_refusals(key_file: Path, fast_cli: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    for args, words in [(("1BAD=x",), "not a valid environment variable name"),
                        (("NOT_SET_ANYWHERE",), "NOT_SET_ANYWHERE"),
                        (("A=1", "A=2"), "given twice"),
                        (("A=1", "--format", "yaml"), "--format")]:
        result = invoke("encrypt-env", *args, "--key", key_file)
        assert result.exit_code == 2 and result.stdout == ""
        one_error_line(result.stderr, words)
    big = invoke("encrypt-env", f"A={'x' * 5000}", "--key", key_file)
    assert big.exit_code == 0 and "holds 4,096 in all" in big.stderr


# ---------------------------------------------------------------------------------------------------------
# --key ssm: / --key secretsmanager:


def test_key_file_kept_in_ssm_and_secrets_manager(services_env: ServicesEnv, tmp_path: Path, key_file: Path,
                                                  fast_cli: None) -> None:
    text = key_file.read_text()
    services_env.ssm().put_parameter(Name="/keys/app", Value=text, Type="SecureString")
    services_env.secrets().create_secret(Name="keys/app", SecretString=text)
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"no key on disk")
    encrypted = tmp_path / "plain.txt.encrypted"
    assert invoke("encrypt", plain, "--key", "ssm:/keys/app").exit_code == 0
    result = invoke("decrypt", encrypted, "-o", "-", "--key", "secretsmanager:keys/app")
    assert result.exit_code == 0 and result.stdout_bytes == b"no key on disk"
    assert envelope.decrypt(encrypted.read_bytes(), keyring=envelope.load_keyring(key_file)).plaintext == \
        b"no key on disk"


def test_key_file_errors_name_the_parameter(services_env: ServicesEnv, tmp_path: Path, key_file: Path,
                                            fast_cli: None) -> None:
    plain = tmp_path / "p.txt"
    plain.write_bytes(b"x")
    missing = invoke("encrypt", plain, "--key", "ssm:/keys/none")
    assert missing.exit_code == 4
    one_error_line(missing.stderr, "ssm:/keys/none not found")
    services_env.ssm().put_parameter(Name="/keys/plain", Value=key_file.read_text(), Type="String")
    refused = invoke("encrypt", plain, "--key", "ssm:/keys/plain")
    assert refused.exit_code == 2
    line = one_error_line(refused.stderr, "SecureString")
    assert json.loads(key_file.read_text())["key"] not in line
    assert not (tmp_path / "p.txt.encrypted").exists()
    unknown = invoke("encrypt", plain, "--key", "ssm:bad name")
    assert unknown.exit_code == 2
