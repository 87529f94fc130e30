"""``ssm:`` and ``secretsmanager:`` locations in the CLI (issue 14, "Sources and sinks"), over real HTTP against
the tests' own moto_server.

moto differs from AWS here, and these tests prove envelope's own behaviour rather than moto's:
* moto enforces **no size limit** (AWS: 4,096 characters per SSM standard parameter, 8,192 advanced, 65,536
  bytes per secret): ``test_moto_does_not_enforce_the_limits`` shows it, and the boundary tests show that
  envelope refuses one byte past each limit before anything is sent.
* moto stores an SSM ``SecureString`` as ``kms:<KeyId>:<value>`` and **never encrypts it** (AWS encrypts it with
  KMS): the tests check the parameter's type, which is what envelope decides.
* moto's IAM enforcement (a separate moto_server) checks actions, not resources, and answers with a 403 that
  botocore reads as code ``403`` (AWS: ``AccessDeniedException``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import (
    ACCOUNT,
    REGION,
    FaultProxy,
    MotoServer,
    ServicesEnv,
    iam_user,
    separate_moto_server,
    stop_moto_server,
)
from cli_support import key_file
from runner_support import ok, one_error_line, run

import envelope

pytestmark = pytest.mark.usefixtures("fast_cli", "services_env")

CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture
def key(tmp_path: Path) -> Path:
    return key_file(tmp_path)


@pytest.fixture
def keyring(key: Path) -> envelope.Keyring:
    return envelope.load_keyring(str(key))


def parameter(services: ServicesEnv, name: str, decrypt: bool = False) -> dict[str, Any] | None:
    try:
        return dict(services.ssm().get_parameter(Name=name, WithDecryption=decrypt)["Parameter"])
    except services.ssm().exceptions.ParameterNotFound:
        return None


def secret(services: ServicesEnv, name: str, **version: str) -> dict[str, Any] | None:
    try:
        return dict(services.secrets().get_secret_value(SecretId=name, **version))
    except services.secrets().exceptions.ResourceNotFoundException:
        return None


# ---------------------------------------------------------------------------------------------------------
# round trips


def test_ssm_round_trip_is_base64_in_a_string_parameter(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                                         keyring: envelope.Keyring) -> None:
    (tmp_path / "app.env").write_bytes(b"DB_PASSWORD=hunter2\n")
    ok("encrypt", tmp_path / "app.env", "-o", "ssm:/app/env", "-k", key, "-c", "app=web")
    stored = parameter(services_env, "/app/env")
    assert stored is not None and stored["Type"] == "String"
    message = base64.b64decode(stored["Value"], validate=True)
    assert envelope.decrypt(message, keyring=keyring).plaintext == b"DB_PASSWORD=hunter2\n"
    assert ok("decrypt", "ssm:/app/env", "-o", "-", "-k", key, "-c", "app=web").stdout_bytes == \
        b"DB_PASSWORD=hunter2\n"
    arn = f"ssm:arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/env"
    assert ok("decrypt", arn, "-o", "-", "-k", key).stdout_bytes == b"DB_PASSWORD=hunter2\n"
    assert json.loads(ok("inspect", "ssm:/app/env").stdout)["encryption_context"] == {"app": "web"}
    ok("decrypt", "ssm:/app/env", "-o", tmp_path / "back", "-k", key)
    assert (tmp_path / "back").read_bytes() == b"DB_PASSWORD=hunter2\n"
    assert (tmp_path / "back").stat().st_mode & 0o777 == 0o600


def test_secrets_manager_round_trip_is_secret_binary(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                                     keyring: envelope.Keyring) -> None:
    ok("encrypt", "-o", "secretsmanager:prod/api", "-k", key, input=b"token=abc")  # stdin -> a secret
    stored = secret(services_env, "prod/api")
    assert stored is not None and "SecretString" not in stored
    assert envelope.decrypt(stored["SecretBinary"], keyring=keyring).plaintext == b"token=abc"
    arn = stored["ARN"]
    for location in ("secretsmanager:prod/api", f"secretsmanager:{arn}"):
        assert ok("decrypt", location, "-o", "-", "-k", key).stdout_bytes == b"token=abc"
    assert json.loads(ok("inspect", f"secretsmanager:{arn}").stdout)["format_version"] == 2


def test_secret_string_holding_base64_is_read(services_env: ServicesEnv, key: Path, keyring: envelope.Keyring) -> None:
    message = envelope.encrypt(b"from SecretString", keyring=keyring)
    services_env.secrets().create_secret(Name="legacy", SecretString=base64.b64encode(message).decode() + "\n")
    assert ok("decrypt", "secretsmanager:legacy", "-k", key, "-o", "-").stdout_bytes == b"from SecretString"


def test_encrypt_reads_the_plaintext_value(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                           keyring: envelope.Keyring) -> None:
    """As an INPUT of encrypt, a parameter or secret holds plaintext (a SecureString is read decrypted)."""
    services_env.ssm().put_parameter(Name="/plain/db", Value="DB=secret", Type="SecureString")
    services_env.secrets().create_secret(Name="plain/api", SecretString="API=token")
    ok("encrypt", "ssm:/plain/db", "-o", tmp_path / "db.enc", "-k", key)
    assert envelope.decrypt((tmp_path / "db.enc").read_bytes(), keyring=keyring).plaintext == b"DB=secret"
    ok("encrypt", "secretsmanager:plain/api", "-k", key)  # beside it: secretsmanager:plain/api.encrypted
    stored = secret(services_env, "plain/api.encrypted")
    assert stored is not None
    assert envelope.decrypt(stored["SecretBinary"], keyring=keyring).plaintext == b"API=token"
    ok("encrypt", "ssm:/plain/db", "-k", key, "--suffix", ".enc")  # ssm:/plain/db.enc
    stored = parameter(services_env, "/plain/db.enc")
    assert stored is not None and stored["Type"] == "String"


def test_decrypting_into_ssm_or_secrets_manager_stores_a_secure_value(
        tmp_path: Path, services_env: ServicesEnv, key: Path, keyring: envelope.Keyring) -> None:
    """Decrypted values go where only their readers see them: an SSM SecureString, a secret (encrypted at rest
    by those services; moto does not really encrypt the SecureString, see the module docstring)."""
    (tmp_path / "v.enc").write_bytes(envelope.encrypt(b"DB=hunter2", keyring=keyring))
    ok("decrypt", tmp_path / "v.enc", "-o", "ssm:/out/db", "-k", key)
    stored = parameter(services_env, "/out/db", decrypt=True)
    assert stored is not None and (stored["Type"], stored["Value"]) == ("SecureString", "DB=hunter2")
    ok("decrypt", tmp_path / "v.enc", "-o", "secretsmanager:out/db", "-k", key)
    found = secret(services_env, "out/db")
    assert found is not None and found["SecretString"] == "DB=hunter2"
    (tmp_path / "bin.enc").write_bytes(envelope.encrypt(b"\xff\xfe binary", keyring=keyring))
    ok("decrypt", tmp_path / "bin.enc", "-o", "secretsmanager:out/bin", "-k", key)
    found = secret(services_env, "out/bin")
    assert found is not None and found["SecretBinary"] == b"\xff\xfe binary"
    one_error_line(run("decrypt", tmp_path / "bin.enc", "-o", "ssm:/out/bin", "-k", key), 2, "not UTF-8 text")
    assert parameter(services_env, "/out/bin") is None


def test_workers_write_parameters_from_their_own_clients(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                                         keyring: envelope.Keyring) -> None:
    """Planning (in the main process) asked SSM whether the outputs exist; forked workers make their own clients."""
    inputs = []
    for i in range(6):
        inputs.append(tmp_path / f"v{i}")
        inputs[-1].write_bytes(f"V{i}=value {i}\n".encode())
    ok("encrypt", *inputs, "-o", "ssm:/many/", "-k", key, "--workers", "2")
    for i in range(6):
        stored = parameter(services_env, f"/many/v{i}.encrypted")
        assert stored is not None
        assert envelope.decrypt(base64.b64decode(stored["Value"]), keyring=keyring).plaintext == \
            f"V{i}=value {i}\n".encode()


# ---------------------------------------------------------------------------------------------------------
# limits, checked by envelope at exactly the boundary


def _overhead(tmp_path: Path, key: Path) -> int:
    """Bytes of the message for an empty plaintext: each plaintext byte (in one frame) adds one."""
    (tmp_path / "empty").write_bytes(b"")
    ok("encrypt", tmp_path / "empty", "-o", tmp_path / "empty.enc", "-k", key)
    return (tmp_path / "empty.enc").stat().st_size


@pytest.mark.parametrize("location, tier, largest", [("ssm:/limit", [], 3072),
                                                     ("ssm:/limit", ["--ssm-tier", "advanced"], 6144),
                                                     ("secretsmanager:limit", [], 65536)],
                         ids=["ssm-standard", "ssm-advanced", "secretsmanager"])
def test_message_limits_at_exactly_the_boundary(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                                keyring: envelope.Keyring, location: str, tier: list[str],
                                                largest: int) -> None:
    """The largest message that fits passes (3,072 bytes are 4,096 characters of base64); one plaintext byte
    more is refused before anything is sent, with a message that suggests S3."""
    fits = os.urandom(largest - _overhead(tmp_path, key))
    (tmp_path / "fits").write_bytes(fits)
    (tmp_path / "over").write_bytes(fits + b"!")
    ok("encrypt", tmp_path / "fits", "-o", location, "-k", key, *tier)
    assert ok("decrypt", location, "-o", "-", "-k", key).stdout_bytes == fits
    if location.startswith("ssm:"):
        stored = parameter(services_env, "/limit")
        assert stored is not None and len(stored["Value"]) == largest // 3 * 4
    over = location + "-over"
    line = one_error_line(run("encrypt", tmp_path / "over", "-o", over, "-k", key, *tier), 4, over, "s3://")
    assert f"{largest + 1:,} bytes" in line
    assert (parameter(services_env, "/limit-over") if over.startswith("ssm:") else
            secret(services_env, "limit-over")) is None


@pytest.mark.parametrize("location, largest", [("ssm:/plain", 4096), ("secretsmanager:plain", 65536)])
def test_plaintext_limits_at_exactly_the_boundary(tmp_path: Path, services_env: ServicesEnv, key: Path,
                                                  keyring: envelope.Keyring, location: str, largest: int) -> None:
    (tmp_path / "fits.enc").write_bytes(envelope.encrypt(b"a" * largest, keyring=keyring))
    (tmp_path / "over.enc").write_bytes(envelope.encrypt(b"a" * (largest + 1), keyring=keyring))
    ok("decrypt", tmp_path / "fits.enc", "-o", location, "-k", key)
    one_error_line(run("decrypt", tmp_path / "over.enc", "-o", location + "-over", "-k", key), 4,
                   location + "-over", "s3://")
    assert (parameter(services_env, "/plain-over") if location.startswith("ssm:") else
            secret(services_env, "plain-over")) is None


def test_moto_does_not_enforce_the_limits(services_env: ServicesEnv) -> None:
    """Why the boundary tests matter: moto takes what AWS would refuse."""
    services_env.ssm().put_parameter(Name="/too-big", Value="x" * 4100, Type="String")
    services_env.secrets().create_secret(Name="too-big", SecretBinary=b"x" * 65537)


# ---------------------------------------------------------------------------------------------------------
# versions, --force, refusals


def test_versions_are_readable(tmp_path: Path, services_env: ServicesEnv, key: Path) -> None:
    for i, location in enumerate(["ssm:/v", "ssm:/v", "secretsmanager:v", "secretsmanager:v"]):
        force = ["--force"] if i % 2 else []
        ok("encrypt", "-o", location, "-k", key, *force, input=f"version {i % 2 + 1}".encode())
    assert ok("decrypt", "ssm:/v:1", "-o", "-", "-k", key).stdout_bytes == b"version 1"
    assert ok("decrypt", "ssm:/v:2", "-o", "-", "-k", key).stdout_bytes == b"version 2"
    assert ok("decrypt", "ssm:/v", "-o", "-", "-k", key).stdout_bytes == b"version 2"
    assert ok("decrypt", "secretsmanager:v", "-o", "-", "-k", key).stdout_bytes == b"version 2"
    assert ok("decrypt", "secretsmanager:v", "--version-stage", "AWSPREVIOUS", "-o", "-", "-k", key
              ).stdout_bytes == b"version 1"
    assert json.loads(ok("inspect", "secretsmanager:v", "--version-stage", "AWSPREVIOUS").stdout)["format_version"]
    one_error_line(run("decrypt", "ssm:/v:7", "-o", "-", "-k", key), 4, "ssm:/v:7", "not found")
    one_error_line(run("decrypt", "secretsmanager:v", "--version-stage", "NOPE", "-o", "-", "-k", key), 4,
                   "secretsmanager:v", "NOPE")


def test_overwrite_needs_force(services_env: ServicesEnv, key: Path, keyring: envelope.Keyring) -> None:
    for location in ("ssm:/taken", "secretsmanager:taken"):
        ok("encrypt", "-o", location, "-k", key, input=b"first")
        one_error_line(run("encrypt", "-o", location, "-k", key, input=b"second"), 2, location, "--force")
        assert ok("decrypt", location, "-o", "-", "-k", key).stdout_bytes == b"first"
        ok("encrypt", "-o", location, "-k", key, "--force", input=b"second")
        assert ok("decrypt", location, "-o", "-", "-k", key).stdout_bytes == b"second"


def test_refusals(tmp_path: Path, services_env: ServicesEnv, key: Path, keyring: envelope.Keyring) -> None:
    ok("encrypt", "-o", "ssm:/x", "-k", key, input=b"x")
    (tmp_path / "p").write_bytes(b"p")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "ssm:/x:1", "-k", key, "--force"), 2,
                   "can be read, not written")
    one_error_line(run("decrypt", "ssm:/x", "-o", f"ssm:arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/x", "-k", key,
                       "--force"), 2, "overwritten by its own output")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "ssm:/y", "-k", key, "--encode"), 2, "--encode")
    one_error_line(run("decrypt", "ssm:/x", "-o", "-", "-k", key, "--decode"), 2, "--decode")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "ssm:/bad name", "-k", key), 2, "parameter name")
    one_error_line(run("encrypt", tmp_path / "p", "-o", "ssm:/y", "-k", key, "--ssm-tier", "premium"), 2,
                   "--ssm-tier")
    assert parameter(services_env, "/y") is None


# ---------------------------------------------------------------------------------------------------------
# errors: one line naming the parameter or secret, never a value


def test_errors_name_the_location_and_never_a_value(tmp_path: Path, services_env: ServicesEnv, key: Path) -> None:
    one_error_line(run("decrypt", "ssm:/missing", "-o", "-", "-k", key), 4, "ssm:/missing", "not found")
    one_error_line(run("decrypt", "secretsmanager:missing", "-o", "-", "-k", key), 4, "secretsmanager:missing",
                   "not found")
    one_error_line(run("encrypt", "ssm:/missing", "-o", tmp_path / "x", "-k", key), 4, "ssm:/missing")
    services_env.ssm().put_parameter(Name="/plain", Value="hunter2 is not base64!", Type="String")
    services_env.secrets().create_secret(Name="plain", SecretString="hunter2 is not base64!")
    for location in ("ssm:/plain", "secretsmanager:plain"):
        line = one_error_line(run("decrypt", location, "-o", "-", "-k", key), 1, location, "base64")
        assert "hunter2" not in line
    assert not (tmp_path / "x").exists()


@pytest.mark.usefixtures("fast_throttle_backoff")
def test_throttled_exits_4_naming_the_location(services_proxy: FaultProxy, key: Path) -> None:
    services_proxy.throttle_share = 1.0
    services_proxy.throttle_operations = {"GetParameter", "PutParameter"}
    one_error_line(run("decrypt", "ssm:/t", "-o", "-", "-k", key), 4, "ssm:/t", "throttl")


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = separate_moto_server(tmp_path_factory.mktemp("moto-iam-stored") / "moto.log",
                                  {"INITIAL_NO_AUTH_ACTION_COUNT": "3"})  # the 3 IAM calls below
    try:
        yield server
    finally:
        stop_moto_server(server)


def test_access_denied_names_the_location(tmp_path: Path, iam_moto: MotoServer, key: Path,
                                          keyring: envelope.Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user who may write parameters and secrets but not read them (moto checks actions only)."""
    iam_moto.reset()
    key_id, secret_key = iam_user(iam_moto, "writer", ["ssm:PutParameter", "secretsmanager:CreateSecret"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    for name in ("AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.setenv(name, iam_moto.url)
    (tmp_path / "p").write_bytes(b"p")
    for location in ("ssm:/denied", "secretsmanager:denied"):
        # planning may not look whether the output exists: the write decides (and may write)
        ok("encrypt", tmp_path / "p", "-o", location, "-k", key)
        one_error_line(run("decrypt", location, "-o", "-", "-k", key), 4, location, "access denied")
        # ... and refuses an existing one by itself (PutParameter without Overwrite, CreateSecret)
        one_error_line(run("encrypt", tmp_path / "p", "-o", location, "-k", key), 4, location, "already exists")


def test_the_cli_as_a_process(tmp_path: Path, services_env: ServicesEnv, key: Path) -> None:
    """A real process: stdin to a parameter, the parameter to stdout."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    made = subprocess.run([*CLI, "encrypt", "-o", "ssm:/proc", "-k", str(key)], input=b"through a pipe",
                          capture_output=True, timeout=60, env=environment)
    assert made.returncode == 0, made.stderr
    back = subprocess.run([*CLI, "decrypt", "ssm:/proc", "-o", "-", "-k", str(key)], capture_output=True, timeout=60,
                          env=environment)
    assert (back.returncode, back.stdout) == (0, b"through a pipe"), back.stderr
