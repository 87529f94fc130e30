"""Issue 12, key files: a warning for a secret key file others can read (``-q`` silences it), a public-only RSA
file refused by decrypt before any work, a message for passphrase-protected PEM, ``keygen --public-output``,
and keygen's own output rules (descriptors, symlinks)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cli_support import CLI, in_private_dev, key_file, shell
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope

pytestmark = pytest.mark.usefixtures("fast_cli")
runner = CliRunner()


def run(*args: str | Path, input: bytes | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input)


def lines_of(result: Any) -> list[str]:
    return str(result.stderr).splitlines()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    key_file(tmp_path)
    (tmp_path / "p.txt").write_bytes(b"plaintext\n")
    return tmp_path


@pytest.fixture(scope="module")
def rsa_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A private RSA key file (keygen) and its public-only file, written as the README shows it (mode 0644)."""
    folder = tmp_path_factory.mktemp("rsa")
    result = run("keygen", "--rsa", "2048", "--name", "r", "-o", folder / "r.key")
    assert result.exit_code == 0, result.stderr
    doc = json.loads((folder / "r.key").read_text())
    private = serialization.load_pem_private_key(doc.pop("private_key").encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    doc["public_key"] = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (folder / "r.public.key").write_text(json.dumps(doc))
    (folder / "r.public.key").chmod(0o644)
    return folder / "r.key", folder / "r.public.key"


@pytest.mark.parametrize("mode, readers", [(0o644, "group and others"), (0o640, "group"), (0o604, "others")])
def test_a_secret_key_file_others_can_read_gets_one_warning(work: Path, mode: int, readers: str) -> None:
    (work / "k.key").chmod(mode)
    result = run("encrypt", "p.txt", "-k", "k.key", "-o", "out")
    assert result.exit_code == 0
    assert lines_of(result) == [f"envelope: warning: key file 'k.key' holds a secret key and is readable by "
                                f"{readers} (mode {mode:04o}); make it private: chmod 600 k.key"]
    result = run("decrypt", "out", "-k", "k.key", "-o", "back", "-q")
    assert result.exit_code == 0 and lines_of(result) == []  # -q: no warnings


def test_the_warning_is_given_once_with_worker_processes(work: Path) -> None:
    import subprocess

    (work / "k.key").chmod(0o644)
    (work / "in").mkdir()
    for i in range(6):
        (work / "in" / f"f{i}").write_bytes(b"x" * i)
    result = subprocess.run([*CLI, "encrypt", "-r", "in", "-o", "out", "-k", "k.key", "--workers", "2"], cwd=work,
                            capture_output=True, timeout=120)
    assert result.returncode == 0
    assert result.stderr.decode().count("envelope: warning: key file") == 1


def test_no_warning_for_private_files_and_public_keys(work: Path, rsa_pair: tuple[Path, Path]) -> None:
    private, public = rsa_pair
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    result = run("encrypt", "p.txt", "-k", "k.key", "-k", public, "-o", "out")
    assert result.exit_code == 0 and lines_of(result) == []


def test_decrypt_refuses_a_public_only_key_file_before_any_work(work: Path, rsa_pair: tuple[Path, Path]) -> None:
    """Today: exit 3, after the message was read."""
    private, public = rsa_pair
    (work / "in").mkdir()
    assert run("encrypt", "p.txt", "-k", public, "-o", "in/m").exit_code == 0
    for keys in (["-k", public], ["-k", "k.key", "-k", public]):
        result = run("decrypt", "-r", "in", "-o", "out", *keys)
        [line] = lines_of(result)
        assert result.exit_code == 2 and "holds only an RSA public key: it can encrypt but not decrypt" in line
        assert not (work / "out").exists()
    assert run("decrypt", "in/m", "-k", private, "-o", "back").exit_code == 0
    assert (work / "back").read_bytes() == b"plaintext\n"


def test_a_passphrase_protected_pem_is_named_as_such(work: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"passphrase")).decode()
    (work / "enc.key").write_text(json.dumps({"type": "raw-rsa", "namespace": "n", "name": "r",
                                              "padding": "oaep-sha256", "private_key": pem}))
    (work / "enc.key").chmod(0o600)
    for command in ("encrypt", "decrypt"):
        result = run(command, "p.txt", "-k", "enc.key", "-o", "out")
        [line] = lines_of(result)
        assert result.exit_code == 2 and "key file 'enc.key'" in line
        assert "passphrase-protected (an encrypted PEM)" in line  # today: "not a readable RSA key in PEM"


def test_keygen_writes_the_public_only_file(work: Path) -> None:
    result = run("keygen", "--rsa", "2048", "--name", "r", "-o", "r.key", "--public-output", "r.public.key")
    assert result.exit_code == 0, result.stderr
    private, public = work / "r.key", work / "r.public.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    doc, pub = json.loads(private.read_text()), json.loads(public.read_text())
    assert set(pub) == {"type", "namespace", "name", "padding", "public_key"} and "PUBLIC KEY" in pub["public_key"]
    assert [pub[k] for k in ("type", "namespace", "name", "padding")] == [doc[k] for k in
                                                                          ("type", "namespace", "name", "padding")]
    keyring = envelope.load_keyring(public)
    assert isinstance(keyring, envelope.RawRsaKeyring) and not keyring.has_private_key
    message = envelope.encrypt(b"for the private key", keyring=keyring)
    assert envelope.decrypt(message, keyring=envelope.load_keyring(private)).plaintext == b"for the private key"
    printed = run("keygen", "--rsa", "2048", "-o", "x.key", "--public-output", "-")
    assert printed.exit_code == 0 and "public_key" in json.loads(printed.stdout)
    assert "private_key" in json.loads((work / "x.key").read_text())
    result = run("keygen", "-o", "aes.key", "--public-output", "aes.pub")
    assert result.exit_code == 2 and "add --rsa BITS" in result.stderr and not (work / "aes.key").exists()


def test_keygen_leaves_nothing_when_the_public_file_cannot_be_written(work: Path) -> None:
    result = run("keygen", "--rsa", "2048", "-o", "new.key", "--public-output", "nodir/new.pub")
    assert result.exit_code == 4 and "cannot write key file 'nodir/new.pub'" in result.stderr
    assert not (work / "new.key").exists()


def test_keygen_follows_the_output_rules(work: Path) -> None:
    """keygen -o a symlink with --force replaces the target; -o /dev/stdout writes through the descriptor (today,
    as root with --force: it replaced the private /dev/stdout link)."""
    (work / "real.key").write_text("old")
    (work / "link.key").symlink_to("real.key")
    assert run("keygen", "-o", "link.key", "--force", "--name", "via-link").exit_code == 0
    assert (work / "link.key").is_symlink() and json.loads((work / "real.key").read_text())["name"] == "via-link"
    assert stat.S_IMODE((work / "real.key").stat().st_mode) == 0o600
    script = (f"{shell(*CLI, 'keygen', '-o', '/dev/stdout', '--force', '--name', 'dev')} > printed.key; "
              "echo rc=$?; test -L /dev/stdout && echo link-kept")
    result = in_private_dev(script, cwd=work)
    assert result.stdout.decode().split() == ["rc=0", "link-kept"], result.stderr
    assert json.loads((work / "printed.key").read_text())["name"] == "dev"
    assert os.path.exists(work / "printed.key")
