"""Tampering through the CLI: one matrix of cases given to ``envelope decrypt`` (issue 7), and a few real processes.

The cases:

- every hostile vector file in tests/vectors/hostile/, with its key and options (the library runs the same
  files in tests/api/test_tamper.py);
- messages written by ``envelope encrypt`` for 0x0478, 0x0578 and the v1 suite 0x0178 (two keys, so two
  EDKs; 64-byte frames: three regular frames and a final one), changed field by field: a flip in each header
  field, in our EDK and in the other one, in the header tag, a regular frame, the final frame and the
  signature; a cut at the start of every field (so at every frame boundary) and inside each one; trailing
  bytes; a second message appended; changed EDK provider info;
- half-signed messages (the ESDK framework's HalfSigningTampering) for 0x0478 and 0x0178.

Every case runs to a new destination and to an existing one (``--force``). A success writes the plaintext
(mode 0600) and nothing on stderr; a failure gives exit code 1, or 3 where the key cannot open the data key,
exactly one escaped ``envelope: error:`` line (at most 1,200 characters, printable, no traceback), no output
file and no temporary file, and leaves the existing destination byte-identical. The in-process runs use
typer's CliRunner (the same app, the same error boundary); real processes check the same through pipes and
stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from envelope_cli.app import app
from typer.testing import CliRunner

from envelope import _format as fmt
from testkit import vectors
from testkit.messages import field_map, flip

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("fast_cli")

CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
SUITES = ["0x0478", "0x0578", "0x0178"]
PLAINTEXT = bytes(range(256))[:200]  # 3 regular frames of 64 bytes and a final frame of 8
READ_ANY = ["--commitment-policy", "require-encrypt-allow-decrypt"]
#: Fields of an EDK: a change in *our* EDK leaves the key unable to open the data key (exit 3); a change in
#: the other EDK is caught by the header tag (exit 1).
EDK_FIELDS = {"key provider ID", "key provider info", "encrypted data key"}
OLD = b"the previous version of the destination"
VECTOR_KEY = vectors.Vector("", "success", "", b"", [
    ("key", f"raw-aes {vectors.KEY_NAMESPACE} {vectors.KEY_NAME} {vectors.KEY.hex()}")]).key_file


@dataclass(frozen=True)
class CliCase:
    """A message, the key and options to decrypt it with, and what the command must do."""

    name: str
    message: bytes
    key: Path | dict[str, str]  # a key file, or the JSON of one
    options: tuple[str, ...]
    code: int  # the exit code
    plaintext_sha256: str | None = None  # success: the output's digest
    words: str | None = None  # failure: text the error line must hold


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def check(case: CliCase, folder: Path) -> None:
    """The one check every case gets (see the module docstring); ``folder`` is the working directory."""
    if isinstance(case.key, Path):
        key = str(case.key)
    else:
        Path("k.key").write_text(json.dumps(case.key))
        Path("k.key").chmod(0o600)
        key = "k.key"
    Path("in.enc").write_bytes(case.message)
    for destination, extra in (("new.out", []), ("existing.out", ["--force"])):
        Path("existing.out").write_bytes(OLD)
        Path("new.out").unlink(missing_ok=True)
        before = _listing(folder)
        result = runner.invoke(app, ["decrypt", "in.enc", "-k", key, "-o", destination, *case.options, *extra])
        where = f"{case.name} -> {destination}"
        assert result.exit_code == case.code, (where, result.exit_code, result.stderr)
        if case.code == 0:
            output = Path(destination).read_bytes()
            assert hashlib.sha256(output).hexdigest() == case.plaintext_sha256, where
            assert stat.S_IMODE(Path(destination).stat().st_mode) == 0o600, where
            assert result.stderr == "", where
            continue
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("envelope: error: "), (where, lines)
        assert len(lines[0]) <= 1200 and lines[0].isprintable(), f"{where}: error line of {len(lines[0])} chars"
        assert case.words is None or case.words in lines[0], (where, lines[0])
        assert "Traceback" not in result.output, where
        assert _listing(folder) == before, where  # no output, no temporary file, existing file unchanged


# ---------------------------------------------------------------------------------------------------------
# the vector files


VECTORS = vectors.load_all()


def _vector_case(vector: vectors.Vector) -> CliCase:
    return CliCase(vector.name, vector.message, vector.key_file, tuple(vector.cli_options),
                   vectors.EXIT_CODES[vector.expect], vector.get("plaintext-sha256"))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector(vector: vectors.Vector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check(_vector_case(vector), tmp_path)


# ---------------------------------------------------------------------------------------------------------
# messages written by envelope encrypt, changed field by field


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    for name, namespace in (("mine", "tamper"), ("other", "elsewhere")):
        result = runner.invoke(app, ["keygen", "-o", str(folder / f"{name}.key"), "--name", name,
                                     "--namespace", namespace])
        assert result.exit_code == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def messages(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("messages")
    (folder / "plain").write_bytes(PLAINTEXT)
    out = {}
    for suite in SUITES:
        policy = "forbid-encrypt-allow-decrypt" if suite == "0x0178" else "require-encrypt-require-decrypt"
        target = folder / f"{suite}.enc"
        result = runner.invoke(app, ["encrypt", str(folder / "plain"), "-o", str(target), "-k", str(keys / "mine.key"),
                                     "-k", str(keys / "other.key"), "-c", "app=web", "--algorithm", suite,
                                     "--frame-size", "64", "--commitment-policy", policy])
        assert result.exit_code == 0, result.stderr
        out[suite] = target.read_bytes()
    return out


def _field_cases(message: bytes, suite: str, key: Path) -> list[CliCase]:
    """The changed messages, each with the exit code it must give."""
    fields = field_map(message)
    cases: list[tuple[str, bytes, int]] = []
    seen: dict[str, int] = {}
    for name, start, end in fields:
        occurrence = seen.get(name, 0)
        seen[name] = occurrence + 1
        # flips: the first occurrence of every field, and the second (other) EDK's fields
        if occurrence == 0 or (occurrence == 1 and name in EDK_FIELDS):
            if name == "encryption context":
                value_at = message.index(b"web", start, end)  # a user pair: the raw AES key binds the context
                cases.append(("flip in a context value", flip(message, value_at + 1), 3))
                if suite == "0x0578":
                    # the key's first base64 character: "A" (point tag 02 or 03) becomes "B" (tag 06 or 07), which
                    # no decoder accepts. (A flip further in may give another valid point: then the raw AES key,
                    # which binds the context, fails first, with exit 3.)
                    key_at = message.index(b"aws-crypto-public-key", start, end) + 21 + 2
                    assert message[key_at:key_at + 1] == b"A"
                    cases.append(("flip in the public key in the context", flip(message, key_at, 0x03), 1))
            else:
                ours = name in EDK_FIELDS and occurrence == 0
                label = f"flip in {name}" + (" (the other EDK)" if occurrence == 1 else "")
                cases.append((label, flip(message, end - 1), 3 if ours else 1))
        # truncation: at the start of every field (so at every frame boundary), and inside every field once
        cases.append((f"cut at the start of {name} #{occurrence}", message[:start], 1))
        if occurrence == 0 and end - start > 1:
            cases.append((f"cut inside {name}", message[:(start + end) // 2], 1))
    cases.append(("trailing zero byte", message + b"\x00", 1))
    cases.append(("a second message appended", message + message, 1))
    parsed = fmt.parse_message(message)
    changed = tuple(fmt.EncryptedDataKey(e.provider_id, b"changed provider info", e.ciphertext)
                    for e in parsed.header.encrypted_data_keys)
    h = parsed.header
    body = fmt.serialize_header_body(fmt.Header(h.version, h.suite, h.message_id, h.encryption_context, changed,
                                                h.content_type, h.frame_length, h.commitment))
    cases.append(("changed EDK provider info", body + message[len(h.raw):], 3))
    return [CliCase(f"{suite} {label}", data, key, tuple(READ_ANY), code) for label, data, code in cases]


@pytest.mark.parametrize("suite", SUITES)
def test_field_matrix(suite: str, messages: dict[str, bytes], keys: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    message = messages[suite]
    ok = runner.invoke(app, ["decrypt", "-k", str(keys / "mine.key"), *READ_ANY], input=message)
    assert ok.exit_code == 0 and ok.stdout_bytes == PLAINTEXT  # the untouched message decrypts, stdin to stdout
    monkeypatch.chdir(tmp_path)
    check(CliCase(f"{suite} untouched", message, keys / "mine.key", tuple(READ_ANY), 0,
                  hashlib.sha256(PLAINTEXT).hexdigest()), tmp_path)
    cases = _field_cases(message, suite, keys / "mine.key")
    assert {case.code for case in cases} == {1, 3} and len(cases) > 60
    for case in cases:
        check(case, tmp_path)


@pytest.mark.parametrize("suite", ["0x0478", "0x0178"])
def test_half_signed_message(suite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ESDK framework's half-signing: an unsigned suite whose (authenticated) context carries a public key."""
    monkeypatch.chdir(tmp_path)
    message = vectors.assemble(int(suite, 16), [PLAINTEXT], public_key=True)
    check(CliCase(f"{suite} half-signed", message, VECTOR_KEY, tuple(READ_ANY), 1, words="half-signed"), tmp_path)


def test_the_check_catches_what_it_checks(messages: dict[str, bytes], keys: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix is only worth running if a wrong answer fails it."""
    monkeypatch.chdir(tmp_path)
    message, key = messages["0x0478"], keys / "mine.key"
    with pytest.raises(AssertionError):  # the untouched message is no failure
        check(CliCase("untouched", message, key, tuple(READ_ANY), 1), tmp_path)
    with pytest.raises(AssertionError):  # nor the wrong exit code
        check(CliCase("cut", message[:-1], key, tuple(READ_ANY), 3), tmp_path)
    with pytest.raises(AssertionError):  # nor the wrong words
        check(CliCase("cut", message[:-1], key, tuple(READ_ANY), 1, words="half-signed"), tmp_path)


# ---------------------------------------------------------------------------------------------------------
# the same through real processes: pipes in, stdout out


def _cli(*args: str | Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *map(str, args)], input=stdin, capture_output=True, timeout=60, cwd=ROOT)


def _one_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    return lines[0]


def test_processes_piped_tampered_messages(messages: dict[str, bytes], keys: Path, tmp_path: Path) -> None:
    key = keys / "mine.key"
    fields = field_map(messages["0x0478"])
    final_tag = next(s for n, s, _ in fields if n == "final frame tag")
    existing = tmp_path / "existing.out"
    existing.write_bytes(OLD)
    result = _cli("decrypt", "-k", key, "-o", existing, "--force", stdin=flip(messages["0x0478"], final_tag))
    assert result.returncode == 1 and "final frame 4 failed to authenticate" in _one_line(result.stderr)
    assert existing.read_bytes() == OLD
    v1 = messages["0x0178"]
    boundary = [s for n, s, _ in field_map(v1) if n == "sequence number"][2]
    result = _cli("decrypt", "-k", key, "-o", tmp_path / "new.out", *READ_ANY, stdin=v1[:boundary])
    assert result.returncode == 1 and "truncated" in _one_line(result.stderr)
    edk = next(s for n, s, _ in field_map(v1) if n == "encrypted data key")
    result = _cli("decrypt", "-k", key, "-o", tmp_path / "new.out", *READ_ANY, stdin=flip(v1, edk + 5))
    assert result.returncode == 3 and "no key could open the data key" in _one_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.out"]


def test_process_signed_message_to_stdout_holds_back_the_final_frame(messages: dict[str, bytes], keys: Path) -> None:
    """To a pipe nothing can be taken back: the regular frames (authenticated) go out, the final frame waits
    for the signature, so a bad signature leaves the reader without the end of the data and with exit 1."""
    message = messages["0x0578"]
    signature = next(s for n, s, _ in field_map(message) if n == "signature")
    result = _cli("decrypt", "-k", keys / "mine.key", stdin=flip(message, signature + 10))
    assert result.returncode == 1 and "signature verification failed" in _one_line(result.stderr)
    assert result.stdout == PLAINTEXT[:192]  # the three regular frames, never the final one
    refused = _cli("decrypt", "-k", keys / "mine.key", "--unsigned-only", stdin=message)
    assert refused.returncode == 1 and refused.stdout == b"" and "unsigned-only" in _one_line(refused.stderr)


def test_error_lines_escape_control_characters_from_the_message(keys: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """EDK provider IDs come from the message: a hostile one must not reach the terminal as control codes."""
    monkeypatch.chdir(tmp_path)
    hostile = fmt.EncryptedDataKey("\x1b]0;pwned\x07\x1b[2J" + "x" * 5000, b"info\x1b[31m", b"ct")
    Path("in.enc").write_bytes(vectors.assemble(0x0478, [b"data"], extra_edks=[hostile]))
    result = runner.invoke(app, ["decrypt", "in.enc", "-k", str(keys / "mine.key"), "-o", "out"])
    assert result.exit_code == 3
    line = _one_line(result.stderr_bytes)
    assert "\x1b" not in line and "\x07" not in line and line.isprintable()
    assert "\\x1b]0;pwned" in line and len(line) < 1200
    assert not os.path.exists("out")


def test_no_key_error_names_at_most_ten_edks(keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    junk = [fmt.EncryptedDataKey(f"junk-{i}", b"i" * 3000, b"c") for i in range(30)]
    Path("in.enc").write_bytes(vectors.assemble(0x0478, [b"data"], extra_edks=junk))  # 32 EDKs
    import envelope

    with pytest.raises(envelope.KeyringError) as info:  # the library's message: ten EDKs, each part cut short
        envelope.decrypt(Path("in.enc").read_bytes(), keyring=envelope.load_keyring(keys / "mine.key"))
    text = str(info.value)
    assert "junk-7/" in text and "junk-8/" not in text and "and 22 more" in text and "... (3000 characters)" in text
    result = runner.invoke(app, ["decrypt", "in.enc", "-k", str(keys / "mine.key"), "-o", "out"])
    line = _one_line(result.stderr_bytes)  # the CLI's line: cut to 1,000 characters
    assert result.exit_code == 3 and line.endswith("more characters)") and len(line) < 1100
