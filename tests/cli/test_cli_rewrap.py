"""``envelope rewrap`` (issue 15): new keys for messages without decrypting them, through the CLI's sources and
sinks (files, pipes, -r folders, every registered location kind), with atomic outputs and --force as elsewhere.

Every failure is checked as in test_cli.py: its exit code, one ``envelope: error:`` line, and no new or changed
file. KMS runs against the tests' own moto_server (through the counting proxy).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from aws_fixtures import AwsEnv, FaultProxy
from helpers import esdk_aes_key, esdk_decrypt
from runner_support import ok, run

import envelope
from testkit.messages import flip

PLAIN = os.urandom(300_000)
CLI = [sys.executable, "-m", "envelope_cli.main"]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(code: int, words: str, *args: str | Path, folder: Path, input: bytes | None = None) -> str:
    before = listing(folder)
    result = run(*args, input=input)
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    assert words.lower() in lines[0].lower(), lines
    assert listing(folder) == before
    return str(lines[0])


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    ok("keygen", "-o", "old.key", "--name", "old")
    ok("keygen", "-o", "new.key", "--name", "new")
    ok("keygen", "-o", "spare.key", "--name", "spare")
    (tmp_path / "plain").write_bytes(PLAIN)
    return tmp_path


def encrypt(work: Path, name: str = "m", *options: str) -> Path:
    ok("encrypt", work / "plain", "-o", work / name, "-k", "file:old.key", "-c", "app=web", "--frame-size", "65536",
       *options)
    return work / name


def decrypts(path: Path, key: str, *options: str) -> bool:
    result = run("decrypt", path, "-o", "-", "-k", key, *options)
    if result.exit_code == 0:
        assert result.stdout_bytes == PLAIN
    return bool(result.exit_code == 0)


def test_rewrap_a_file(work: Path) -> None:
    message = encrypt(work)
    os.chmod(message, 0o640)
    ok("rewrap", message, "-o", "m.new", "--old-key", "file:old.key", "--key", "file:new.key")
    new = work / "m.new"
    assert decrypts(new, "file:new.key", "-c", "app=web")
    assert not decrypts(new, "file:old.key")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # keeps the input's mode, as an encrypted file does
    header = json.loads(ok("inspect", new).stdout)
    assert [e["key_name"] for e in header["encrypted_data_keys"]] == ["new"]
    assert header["message_id"] == json.loads(ok("inspect", message).stdout)["message_id"]
    assert message.read_bytes()[-1000:] == new.read_bytes()[-1000:]  # the body is the same bytes


def test_add_a_recovery_key_then_drop_the_old_one(work: Path) -> None:
    message = encrypt(work)
    ok("rewrap", message, "-o", "both", "--old-key", "old.key", "-k", "new.key", "-k", "spare.key")
    assert decrypts(work / "both", "new.key") and decrypts(work / "both", "spare.key")
    ok("rewrap", "both", "-o", "spare-only", "--old-key", "new.key", "-k", "spare.key")
    assert decrypts(work / "spare-only", "spare.key") and not decrypts(work / "spare-only", "new.key")


def test_rewrap_a_folder_recursively_in_workers(work: Path) -> None:
    (work / "in" / "sub").mkdir(parents=True)
    for name in ("a", "sub/b", "sub/.hidden"):
        encrypt(work, f"in/{name}")
    ok("rewrap", "-r", "in", "-o", "out", "--old-key", "old.key", "-k", "new.key", "--workers", "2",
       "--metadata-output", "meta")
    assert sorted(listing(work / "out")) == ["a", "sub/.hidden", "sub/b"]  # the same names
    for name in ("a", "sub/b", "sub/.hidden"):
        assert decrypts(work / "out" / name, "new.key")
    records = [json.loads(line) for line in (work / "meta").read_text().splitlines()]
    assert {r["mode"] for r in records} == {"rewrap"} and all(r["bytes_in"] == r["bytes_out"] for r in records)


def test_pipes(work: Path) -> None:
    message = encrypt(work).read_bytes()
    out = ok("rewrap", "--old-key", "old.key", "-k", "new.key", input=message).stdout_bytes
    assert envelope.decrypt(out, keyring=envelope.load_keyring("new.key")).plaintext == PLAIN
    # a real pipe in and out, through the console script
    result = subprocess.run([*CLI, "rewrap", "--old-key", "old.key", "-k", "new.key"], input=message,
                            capture_output=True, cwd=work, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert envelope.decrypt(result.stdout, keyring=envelope.load_keyring("new.key")).plaintext == PLAIN
    # a file into a pipe: the body goes through sendfile (copy_file_range cannot write to a pipe)
    result = subprocess.run([*CLI, "rewrap", "m", "--old-key", "old.key", "-k", "new.key", "-o", "-"],
                            capture_output=True, cwd=work, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert envelope.decrypt(result.stdout, keyring=envelope.load_keyring("new.key")).plaintext == PLAIN
    # a file into a file opened for appending (a shell's >>): copied through a buffer, after what was there
    with open(work / "log", "wb") as log:
        log.write(b"previous run\n")
    with open(work / "log", "ab") as log:
        result = subprocess.run([*CLI, "rewrap", "m", "--old-key", "old.key", "-k", "new.key", "-o", "-"],
                                stdout=log, stderr=subprocess.PIPE, cwd=work, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    appended = (work / "log").read_bytes()
    assert appended.startswith(b"previous run\n")
    rewrapped = appended[len(b"previous run\n"):]
    assert envelope.decrypt(rewrapped, keyring=envelope.load_keyring("new.key")).plaintext == PLAIN


def test_signed_messages_are_verified_by_default_and_always_re_signed(work: Path) -> None:
    message = encrypt(work, "m", "--algorithm", "0x0578")
    ok("rewrap", message, "-o", "m.new", "--old-key", "old.key", "-k", "new.key")
    assert decrypts(work / "m.new", "new.key")
    old_key = json.loads(ok("inspect", message).stdout)["encryption_context"]["aws-crypto-public-key"]
    new_key = json.loads(ok("inspect", "m.new").stdout)["encryption_context"]["aws-crypto-public-key"]
    assert old_key != new_key
    (work / "bad").write_bytes(flip(message.read_bytes(), len(message.read_bytes()) - 10))
    for verify in ("--verify", "--no-verify"):
        fails(1, "signature", "rewrap", "bad", "-o", "bad.new", "--old-key", "old.key", "-k", "new.key", verify,
              folder=work)


def test_verify_catches_a_changed_frame_of_an_unsigned_message(work: Path) -> None:
    data = encrypt(work).read_bytes()
    (work / "bad").write_bytes(flip(data, 2000))  # inside frame 1
    fails(1, "frame 1 failed to authenticate", "rewrap", "bad", "-o", "bad.new", "--old-key", "old.key",
          "-k", "new.key", "--verify", folder=work)
    ok("rewrap", "bad", "-o", "bad.new", "--old-key", "old.key", "-k", "new.key")  # default: walked, not opened
    result = run("decrypt", "bad.new", "-o", "-", "-k", "new.key")
    assert result.exit_code == 1 and "frame 1 failed" in result.stderr


def test_required_context_and_the_esdk_cli_spellings(work: Path) -> None:
    message = encrypt(work, "m", "--encryption-context", "tenant=acme", "--required-context-key", "tenant",
                      "--frame-length", "4096")
    fails(3, "must be reproduced", "rewrap", "m", "-o", "m.new", "--old-key", "old.key", "-k", "new.key",
          folder=work)
    fails(1, "'tenant' is missing", "rewrap", "m", "-o", "m.new", "--old-key", "old.key", "-k", "new.key",
          "-c", "tenant=other", folder=work)
    ok("rewrap", "-i", message, "-o", "m.new", "--old-key", "old.key", "-k", "new.key", "-c", "tenant=acme",
       "--encryption-context", "app")
    assert decrypts(work / "m.new", "new.key", "--encryption-context", "tenant=acme", "-c", "app")
    assert json.loads(ok("inspect", "m.new").stdout)["frame_length"] == 4096


def test_refusals_leave_nothing_behind(work: Path) -> None:
    message = encrypt(work)
    (work / "existing").write_bytes(b"keep me")
    fails(2, "needs -o OUTPUT", "rewrap", message, "--old-key", "old.key", "-k", "new.key", folder=work)
    fails(2, "give the new keys", "rewrap", message, "-o", "x", "--old-key", "old.key", folder=work)
    fails(2, "--old-key SPEC", "rewrap", message, "-o", "x", "-k", "new.key", folder=work)
    fails(2, "exclude each other", "rewrap", message, "-o", "x", "--old-key", "old.key", "--discovery",
          "-k", "new.key", folder=work)
    fails(2, "already exists", "rewrap", message, "-o", "existing", "--old-key", "old.key", "-k", "new.key",
          folder=work)
    fails(2, "overwritten by its own output", "rewrap", message, "-o", message, "--old-key", "old.key",
          "-k", "new.key", "--force", folder=work)
    fails(2, "would overwrite the key file", "rewrap", message, "-o", "new.key", "--old-key", "old.key",
          "-k", "new.key", "--force", folder=work)
    fails(3, "no key could open the data key", "rewrap", message, "-o", "existing", "--old-key", "spare.key",
          "-k", "new.key", "--force", folder=work)
    (work / "short").write_bytes(message.read_bytes()[:-7])
    fails(1, "truncated", "rewrap", "short", "-o", "existing", "--old-key", "old.key", "-k", "new.key",
          "--force", folder=work)
    ok("rewrap", message, "-o", "existing", "--old-key", "old.key", "-k", "new.key", "--force")
    assert decrypts(work / "existing", "new.key")


def test_an_esdk_message_rewrapped_by_the_cli_opens_in_the_esdk(work: Path) -> None:
    from helpers import esdk_encrypt

    doc = json.loads((work / "old.key").read_text())
    import base64

    key = base64.b64decode(doc["key"])
    message = esdk_encrypt(PLAIN, esdk_aes_key("envelope", "old", key), 0x0578, context={"app": "web"},
                           frame_length=4096)
    (work / "esdk.enc").write_bytes(message)
    ok("rewrap", "esdk.enc", "-o", "esdk.new", "--old-key", "old.key", "-k", "new.key")
    new_key = base64.b64decode(json.loads((work / "new.key").read_text())["key"])
    plaintext, context = esdk_decrypt((work / "esdk.new").read_bytes(), esdk_aes_key("envelope", "new", new_key))
    assert plaintext == PLAIN and context["app"] == "web"


# ---------------------------------------------------------------------------------------------------------
# AWS KMS on moto


def test_kms_to_kms_uses_decrypt_then_encrypt(aws_env: AwsEnv, kms_proxy: FaultProxy, work: Path) -> None:
    old_arn, new_arn = aws_env.create_key(alias="alias/old"), aws_env.create_key(alias="alias/new")
    ok("encrypt", "plain", "-o", "m", "-k", "kms:alias/old", "-c", "app=web")
    kms_proxy.reset_counts()
    ok("rewrap", "m", "-o", "m.new", "--old-key", "kms:alias/old", "-k", "kms:alias/new", "-c", "app=web")
    assert kms_proxy.calls("Decrypt") == 1 and kms_proxy.calls("Encrypt") == 1
    assert kms_proxy.calls("GenerateDataKey") == 0  # the same data key, wrapped anew
    header = json.loads(ok("inspect", "m.new").stdout)
    assert [e["provider_info"] for e in header["encrypted_data_keys"]] == [new_arn]
    assert envelope.decrypt((work / "m.new").read_bytes(), keyring=envelope.KmsKeyring(new_arn)).plaintext == PLAIN
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt((work / "m.new").read_bytes(), keyring=envelope.KmsKeyring(old_arn))
    # discovery on the old side, a local recovery key added on the new side
    ok("rewrap", "m", "-o", "m.mixed", "--discovery", "-k", "kms:alias/new", "-k", "file:spare.key")
    assert decrypts(work / "m.mixed", "spare.key")


def test_the_body_of_a_file_is_copied_without_being_read(work: Path) -> None:
    """Through the CLI's own input meter and output writer: the body is copied in the kernel (the meter saw the
    header's read and then one jump over the body, yet counted every byte), and the size rule still holds."""
    from envelope.batch.streams import InputMeter, OutputWriter

    message = encrypt(work)
    size = message.stat().st_size
    reads: list[int] = []
    with open(message, "rb") as raw, open(work / "out", "wb") as dst:
        meter = InputMeter(raw, reads.append, location="m", size=size)
        envelope.rewrap_stream(meter, OutputWriter(dst, "out"), old=envelope.load_keyring("old.key"),  # type: ignore[arg-type]
                               new=envelope.load_keyring("new.key"))
    assert meter.count == size and sum(reads) == size
    assert max(reads) == size - sum(reads[:-1]) and len(reads) <= 3  # the header read, then one jump
    assert decrypts(work / "out", "new.key")
    with open(message, "rb") as raw, open(work / "out2", "wb") as dst:
        meter = InputMeter(raw, location="m", size=size - 1)  # the file "changed" since it was opened
        with pytest.raises(OSError, match="changed while being read"):
            envelope.rewrap_stream(meter, OutputWriter(dst, "out2"), old=envelope.load_keyring("old.key"),  # type: ignore[arg-type]
                                   new=envelope.load_keyring("new.key"))
