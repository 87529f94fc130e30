"""The CLI through typer's CliRunner: options, outputs, and every failure the CLI issue lists.

Every failure is checked the same way (:func:`fails`): its exit code, exactly one stderr line starting
``envelope: error:`` with the expected words, no traceback, no new file in the folder, and an existing
destination left byte-identical. Subprocess behaviour (pipes, signals, terminals) is in test_cli_process.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope
from envelope.batch.streams import Base64Reader, Base64Writer

runner = CliRunner()


def run(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def ok(*args: str | Path, input: bytes | None = None) -> Any:
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return result


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(code: int, words: str, *args: str | Path, folder: Path, input: bytes | None = None,
          env: dict[str, str] | None = None) -> str:
    """Run a command that must fail; check code, one error line, and that ``folder`` did not change."""
    before = listing(folder)
    result = run(*args, input=input, env=env)
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("envelope: error: "), lines
    assert words.lower() in lines[0].lower(), lines
    assert "Traceback" not in result.output
    assert listing(folder) == before  # nothing new (no temporary file either), nothing changed
    return str(lines[0])


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def key(work: Path) -> Path:
    path = work / "app.key"
    ok("keygen", "-o", path, "--name", "app")
    return path


@pytest.fixture
def other_key(work: Path) -> Path:
    path = work / "other.key"
    ok("keygen", "-o", path, "--name", "other", "--namespace", "elsewhere")
    return path


@pytest.fixture
def plain(work: Path) -> Path:
    path = work / "config.txt"
    path.write_bytes(os.urandom(3000) + b"db_password=hunter2\n")
    path.chmod(0o640)
    return path


@pytest.fixture
def message(work: Path, key: Path, plain: Path) -> Path:
    ok("encrypt", plain, "-o", work / "config.txt.encrypted", "--key", f"file:{key}", "-c", "app=web",
       "-c", "stage=prod", "--frame-size", "1024")
    return work / "config.txt.encrypted"


# ---------------------------------------------------------------------------------------------------------
# keygen


def test_keygen_writes_a_private_key_file_of_the_pinned_shape(work: Path) -> None:
    result = ok("keygen", "-o", "k.key", "--namespace", "ns", "--name", "deploy", "--bits", "128")
    doc = json.loads((work / "k.key").read_text())
    assert set(doc) == {"type", "namespace", "name", "key"}
    assert (doc["type"], doc["namespace"], doc["name"]) == ("raw-aes", "ns", "deploy")
    assert len(base64.b64decode(doc["key"])) == 16
    assert stat.S_IMODE((work / "k.key").stat().st_mode) == 0o600
    assert doc["key"] not in result.output  # never printed unless asked with -o -
    assert isinstance(envelope.load_keyring(work / "k.key"), envelope.RawAesKeyring)


def test_keygen_defaults_and_printing(work: Path) -> None:
    printed = json.loads(ok("keygen", "-o", "-").stdout)
    assert printed["type"] == "raw-aes" and printed["namespace"] == "envelope"
    assert len(base64.b64decode(printed["key"])) == 32 and printed["name"].startswith("key-")
    ok("keygen", "--name", "named")
    assert json.loads((work / "named.key").read_text())["name"] == "named"
    assert stat.S_IMODE((work / "named.key").stat().st_mode) == 0o600


def test_keygen_rsa(work: Path) -> None:
    ok("keygen", "--rsa", "2048", "-o", "r.key", "--name", "r")
    doc = json.loads((work / "r.key").read_text())
    assert doc["type"] == "raw-rsa" and doc["padding"] == "oaep-sha256" and "PRIVATE KEY" in doc["private_key"]
    assert isinstance(envelope.load_keyring(work / "r.key"), envelope.RawRsaKeyring)


def test_keygen_refuses_to_overwrite_without_force(work: Path, key: Path) -> None:
    fails(2, "already exists (add --force", "keygen", "-o", key, folder=work)
    old = key.read_bytes()
    ok("keygen", "-o", key, "--force", "--name", "app")
    assert key.read_bytes() != old and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_keygen_usage_errors(work: Path) -> None:
    fails(2, "--bits", "keygen", "--bits", "256", "--rsa", "2048", "-o", "x.key", folder=work)
    fails(2, "128, 192 or 256", "keygen", "--bits", "100", "-o", "x.key", folder=work)
    (work / "d").mkdir()
    fails(2, "is a folder", "keygen", "-o", "d", folder=work)
    os.mkfifo(work / "fifo")
    fails(2, "not a regular file; use -o -", "keygen", "-o", "fifo", "--force", folder=work)
    assert stat.S_ISFIFO((work / "fifo").stat().st_mode)


# ---------------------------------------------------------------------------------------------------------
# encrypt / decrypt of files


def test_file_round_trip_modes_and_default_names(work: Path, key: Path, plain: Path) -> None:
    ok("encrypt", plain, "--key", f"file:{key}", "-c", "app=web")
    encrypted = work / "config.txt.encrypted"
    assert stat.S_IMODE(encrypted.stat().st_mode) == 0o640  # keeps the input's mode
    plain.rename(work / "original.txt")
    ok("decrypt", encrypted, "--key", str(key), "-c", "app=web")  # a bare path works as a key spec
    assert (work / "config.txt").read_bytes() == (work / "original.txt").read_bytes()
    assert stat.S_IMODE((work / "config.txt").stat().st_mode) == 0o600
    (work / "blob").write_bytes(encrypted.read_bytes())
    ok("decrypt", "blob", "--key", key)  # no .encrypted suffix: NAME.decrypted
    assert (work / "blob.decrypted").read_bytes() == (work / "original.txt").read_bytes()


def test_suffix_and_stdout(work: Path, key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-k", key, "--suffix", ".enc")
    assert (work / "config.txt.enc").exists()
    result = ok("decrypt", "config.txt.enc", "-k", key, "-o", "-")
    assert result.stdout_bytes == plain.read_bytes()
    ok("decrypt", "config.txt.enc", "-k", key, "--suffix", ".enc", "--force")
    assert (work / "config.txt").read_bytes() == plain.read_bytes()


def test_stdin_to_stdout(key: Path, plain: Path) -> None:
    ciphertext = ok("encrypt", "-k", key, "-c", "a=b", input=plain.read_bytes()).stdout_bytes
    assert ciphertext[:1] == b"\x02"
    assert ok("decrypt", "-", "-k", key, "-c", "a=b", input=ciphertext).stdout_bytes == plain.read_bytes()


def test_force_replaces_an_existing_file(work: Path, key: Path, message: Path, plain: Path) -> None:
    target = work / "out.txt"
    target.write_bytes(b"old")
    ok("decrypt", message, "-k", key, "-o", target, "--force")
    assert target.read_bytes() == plain.read_bytes()
    assert [p.name for p in work.iterdir() if p.name.endswith(".envelope-tmp")] == []


def test_several_keys_make_a_multi_keyring(work: Path, key: Path, other_key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-o", "two.enc", "-k", key, "-k", f"file:{other_key}")
    header = json.loads(ok("inspect", "two.enc").stdout)
    assert [e["provider_id"] for e in header["encrypted_data_keys"]] == ["envelope", "elsewhere"]
    for k in (key, other_key):
        assert ok("decrypt", "two.enc", "-k", k, "-o", "-").stdout_bytes == plain.read_bytes()


@pytest.mark.parametrize("algorithm", ["0x0578", "0578", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"])
def test_algorithm_by_id_or_name(work: Path, key: Path, plain: Path, algorithm: str) -> None:
    ok("encrypt", plain, "-o", "s.enc", "-k", key, "--algorithm", algorithm)
    header = json.loads(ok("inspect", "s.enc").stdout)
    assert header["suite"] == {"id": "0x0578", "name": "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
                               "committing": True, "signed": True}
    assert ok("decrypt", "s.enc", "-k", key, "-o", "-").stdout_bytes == plain.read_bytes()


def test_commitment_policies(work: Path, key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-o", "v1.enc", "-k", key, "--algorithm", "0x0178",
       "--commitment-policy", "forbid-encrypt-allow-decrypt")
    fails(1, "does not commit", "decrypt", "v1.enc", "-k", key, "-o", "x", folder=work)
    ok("decrypt", "v1.enc", "-k", key, "-o", "x", "--commitment-policy", "require-encrypt-allow-decrypt")
    assert (work / "x").read_bytes() == plain.read_bytes()
    fails(2, "unknown commitment policy", "decrypt", "v1.enc", "-k", key, "--commitment-policy", "lax",
          folder=work)


def test_encode_and_decode_base64(work: Path, key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-o", "m.b64", "-k", key, "--encode")
    text = (work / "m.b64").read_bytes()
    assert b"\n" not in text and text.startswith(b"AgR4")
    wrapped = "\r\n  ".join(textwrap.wrap(text.decode(), 76)).encode() + b"\n\n"
    (work / "wrapped.b64").write_bytes(wrapped)
    ok("decrypt", "wrapped.b64", "-k", key, "--decode", "-o", "back.txt")
    assert (work / "back.txt").read_bytes() == plain.read_bytes()
    assert json.loads(ok("inspect", "wrapped.b64", "--decode").stdout)["format_version"] == 2
    (work / "bad.b64").write_bytes(text[:40] + b"*" + text[40:])
    fails(1, "not a base64 character", "decrypt", "bad.b64", "-k", key, "--decode", "-o", "x", folder=work)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 1000, 65537])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_streaming_base64_matches_the_standard_library(size: int, chunk: int) -> None:
    import io

    data = os.urandom(size)
    out = io.BytesIO()
    writer = Base64Writer(out)
    for i in range(0, size, chunk):
        writer.write(memoryview(data)[i:i + chunk])
    writer.finish()
    assert out.getvalue() == base64.b64encode(data)
    spaced = b"\n".join(base64.b64encode(data)[i:i + 5] for i in range(0, len(out.getvalue()), 5)) + b" \n"
    reader = Base64Reader(io.BytesIO(spaced))
    reader.CHUNK = 3  # tiny reads: groups and padding split across chunks
    reader._chunk = bytearray(3)
    got = bytearray()
    buf = bytearray(chunk)
    while n := reader.readinto(buf):
        got += buf[:n]
    assert bytes(got) == data


def test_inspect_prints_the_header_as_json(work: Path, message: Path) -> None:
    header = json.loads(ok("inspect", message).stdout)
    assert header["format_version"] == 2
    assert header["suite"]["id"] == "0x0478" and header["suite"]["name"] == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
    assert len(header["message_id"]) == 64 and int(header["message_id"], 16) >= 0
    assert header["content_type"] == "framed" and header["frame_length"] == 1024
    assert header["encryption_context"] == {"app": "web", "stage": "prod"}
    [edk] = header["encrypted_data_keys"]
    assert edk["provider_id"] == "envelope" and edk["ciphertext_length"] == 48
    assert edk["provider_info_encoding"] == "hex" and bytes.fromhex(edk["provider_info"]).startswith(b"app")
    assert edk["key_name"] == "app"  # read from the raw-AES provider info (name, tag bits, IV length, IV)
    assert json.loads(ok("inspect", input=message.read_bytes()).stdout) == header


def test_inspect_shows_text_provider_info(work: Path) -> None:
    class TextInfo:
        def wrap(self, suite: Any, context: Any, data_key: bytes | None = None) -> Any:
            key = data_key or os.urandom(suite.key_length)
            return key, [envelope.EncryptedDataKey("aws-kms", b"arn:aws:kms:us-east-1:123456789012:key/k",
                                                   b"\x01" * 10)]

        def unwrap(self, suite: Any, context: Any, edks: Any) -> bytes:
            raise NotImplementedError

    (work / "m").write_bytes(envelope.encrypt(b"x", keyring=TextInfo()))
    [edk] = json.loads(ok("inspect", "m").stdout)["encrypted_data_keys"]
    assert edk == {"provider_id": "aws-kms", "provider_info": "arn:aws:kms:us-east-1:123456789012:key/k",
                   "provider_info_encoding": "utf-8", "ciphertext_length": 10}


def test_inspect_and_metadata_escape_unprintable_text_from_the_message(work: Path, key: Path) -> None:
    # a hostile context: ANSI (C0) and 8-bit CSI (C1) escapes, a bidi override, a line separator, a zero-width
    # joiner; printable non-ASCII text stays readable
    hostile = {"\u009b31mkey": "\x1b[2J\u202egpj.exe", "line": "a\u2028b\u200d", "ok": "café ☕ 😀"}
    keyring = envelope.load_keyring(str(key))
    (work / "m").write_bytes(envelope.encrypt(b"payload", keyring=keyring, context=hostile))
    inspected = ok("inspect", "m").stdout
    metadata = ok("decrypt", "m", "-o", "out", "-k", key, "--metadata-output", "-").stdout
    for text in (inspected, metadata):
        assert all(c.isprintable() or c == "\n" for c in text), [c for c in text if not c.isprintable()]
        assert "\\u009b31mkey" in text and "\\u202e" in text and "\\u2028" in text and "café ☕ 😀" in text
    # the same values once parsed
    assert json.loads(inspected)["encryption_context"] == hostile
    assert json.loads(metadata)["header"]["encryption_context"] == hostile


def test_recursive_folders_keep_their_structure(work: Path, key: Path) -> None:
    src = work / "conf"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.txt": os.urandom(5000), "sub/deeper/c": b""}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    ok("encrypt", "-r", src, "-o", "enc", "-k", key, "--workers", "1")
    assert sorted(listing(work / "enc")) == ["a.txt.encrypted", "sub/b.txt.encrypted", "sub/deeper/c.encrypted"]
    ok("decrypt", "-r", "enc", "-o", "dec", "-k", key, "--workers", "1")
    assert listing(work / "dec") == files
    ok("encrypt", src / "a.txt", src / "sub" / "b.txt", "-o", "flat", "-k", key, "--workers", "1")
    assert sorted(listing(work / "flat")) == ["a.txt.encrypted", "b.txt.encrypted"]


def test_metadata_output(work: Path, key: Path, plain: Path, message: Path) -> None:
    ok("decrypt", message, "-o", "out.txt", "-k", key, "--metadata-output", "meta.jsonl")
    ok("encrypt", plain, "-o", "again.enc", "-k", key, "-c", "x=y", "--metadata-output", "meta.jsonl")
    first, second = (json.loads(line) for line in (work / "meta.jsonl").read_text().splitlines())
    assert first["mode"] == "decrypt" and first["input"] == str(message) and first["output"] == "out.txt"
    assert first["bytes_in"] == message.stat().st_size and first["bytes_out"] == plain.stat().st_size
    assert first["header"]["suite"]["id"] == "0x0478"
    assert first["header"]["encryption_context"] == {"app": "web", "stage": "prod"}
    assert first["header"]["encrypted_data_keys"][0]["provider_id"] == "envelope"
    assert second["mode"] == "encrypt" and second["bytes_in"] == plain.stat().st_size
    assert second["bytes_out"] == (work / "again.enc").stat().st_size and second["seconds"] >= 0
    to_stdout = ok("inspect", message).stdout  # sanity: stdout is free here
    assert to_stdout
    result = ok("decrypt", message, "-o", "x2", "-k", key, "--metadata-output", "-")
    assert json.loads(result.stdout)["output"] == "x2"
    fails(2, "--metadata-output", "decrypt", message, "-o", "-", "-k", key, "--metadata-output", "-",
          folder=work)


# ---------------------------------------------------------------------------------------------------------
# failures: exit code, one line, nothing left behind, existing destination unchanged


def _flip(path: Path, offset: int) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    bad = path.with_name("bad.encrypted")
    bad.write_bytes(bytes(data))
    return bad


def test_tampered_message_leaves_no_output(work: Path, key: Path, message: Path) -> None:
    bad = _flip(message, message.stat().st_size - 5)  # inside the last frame
    fails(1, "failed to authenticate", "decrypt", bad, "-k", key, "-o", "new.txt", folder=work)
    (work / "existing.txt").write_bytes(b"keep me")
    fails(1, "failed to authenticate", "decrypt", bad, "-k", key, "-o", "existing.txt", "--force", folder=work)
    assert (work / "existing.txt").read_bytes() == b"keep me"


def test_truncated_message(work: Path, key: Path, message: Path) -> None:
    (work / "short.encrypted").write_bytes(message.read_bytes()[:-100])
    fails(1, "truncated", "decrypt", "short.encrypted", "-k", key, "-o", "new.txt", folder=work)


def test_wrong_or_missing_context(work: Path, key: Path, message: Path) -> None:
    line = fails(1, "'app' has a different value", "decrypt", message, "-k", key, "-c", "app=api", "-o", "n",
                 folder=work)
    assert "web" not in line  # never print a value the user did not pass
    fails(1, "'region' is missing", "decrypt", message, "-k", key, "-c", "region=eu", "-o", "n", folder=work)


def test_not_an_esdk_message_and_the_base64_hint(work: Path, key: Path, message: Path) -> None:
    (work / "notes.txt").write_bytes(b"hello, this is not encrypted\n")
    fails(1, "not an ESDK message", "decrypt", "notes.txt", "-k", key, "-o", "n", folder=work)
    fails(1, "not an ESDK message", "inspect", "notes.txt", folder=work)
    (work / "m.b64").write_bytes(base64.b64encode(message.read_bytes()))
    for command in (["decrypt", "m.b64", "-k", str(key), "-o", "n"], ["inspect", "m.b64"]):
        line = fails(1, "add --decode", *command, folder=work)
        assert "AY, AgR4 or AgV4" in line


def test_empty_input(work: Path, key: Path) -> None:
    (work / "empty").write_bytes(b"")
    fails(1, "the input is empty", "decrypt", "empty", "-k", key, "-o", "n", folder=work)
    fails(1, "the input is empty", "decrypt", "-k", key, folder=work, input=b"")
    fails(1, "the input is empty", "inspect", "empty", folder=work)


def test_key_file_missing_or_malformed(work: Path, message: Path) -> None:
    fails(2, "does not exist", "decrypt", message, "-k", "file:nope.key", "-o", "n", folder=work)
    fails(2, "does not exist", "decrypt", message, "-k", "nope.key", "-o", "n", folder=work)
    (work / "bad.key").write_text('{"type": "raw-aes", "namespace": "envelope", "name": "x", "key": "c2hvcnQ="}')
    fails(2, "'key' must decode to 16, 24 or 32 bytes", "decrypt", message, "-k", "bad.key", "-o", "n",
          folder=work)
    (work / "bad.key").write_text("not json")
    fails(2, "not a JSON key file", "encrypt", message, "-k", "bad.key", "-o", "n", folder=work)
    fails(2, "unknown scheme 'vault:'", "encrypt", message, "-k", "vault:abc", "-o", "n", folder=work)
    fails(2, "give at least one --key", "encrypt", message, "-o", "n", folder=work)


def test_wrong_key_names_the_keys_present(work: Path, other_key: Path, message: Path) -> None:
    line = fails(3, "no key could open the data key", "decrypt", message, "-k", other_key, "-o", "n",
                 folder=work)
    assert "envelope/app (raw AES)" in line  # the EDK present: provider id / the raw AES key name


def test_kms_and_cache_options_are_checked_before_any_work(work: Path, key: Path, message: Path) -> None:
    # no AWS call is needed to refuse these (KMS itself is tested against moto in test_cli_kms.py)
    fails(2, "exclude each other", "decrypt", message, "--discovery", "-k", key, "-o", "n", folder=work)
    fails(2, "add --discovery", "decrypt", message, "-k", key, "--discovery-account", "1" * 12, "-o", "n",
          folder=work)
    fails(2, "12 digits", "decrypt", message, "--discovery", "--discovery-account", "12", "-o", "n", folder=work)
    fails(2, "needs at least one --discovery-account", "decrypt", message, "--discovery",
          "--discovery-partition", "aws", "-o", "n", folder=work)
    fails(2, "--region applies to AWS KMS keys", "decrypt", message, "-k", key, "--region", "us-east-1",
          "-o", "n", folder=work)
    fails(2, "--grant-token applies to AWS KMS keys", "encrypt", message, "-k", key, "--grant-token", "t",
          "-o", "n", folder=work)
    fails(2, "kms:alias/", "encrypt", message, "-k", key, "-k", "kms:alias/", "-o", "n", folder=work)
    fails(2, "needs a key", "encrypt", message, "-k", "kms:", "-o", "n", folder=work)
    fails(2, "--cache-max-age", "encrypt", message, "-k", key, "--cache-max-messages", "5", "-o", "n",
          folder=work)
    fails(2, "more than 0 seconds", "encrypt", message, "-k", key, "--cache-max-age", "0", "-o", "n",
          folder=work)
    fails(2, "expected a number of seconds", "decrypt", message, "-k", key, "--cache-max-age", "soon", "-o", "n",
          folder=work)


def test_destination_exists(work: Path, key: Path, plain: Path, message: Path) -> None:
    fails(2, "already exists (add --force", "encrypt", plain, "-k", key, "-o", message, folder=work)
    fails(2, "already exists (add --force", "encrypt", plain, "-k", key, folder=work)  # the default name
    fails(2, "would be overwritten by its own output", "encrypt", plain, "-k", key, "-o", plain, "--force",
          folder=work)


def test_folder_where_a_file_is_expected(work: Path, key: Path, plain: Path, message: Path) -> None:
    (work / "dir").mkdir()
    (work / "dir" / "f").write_bytes(b"x")
    fails(2, "is a folder, where a file is expected (add -r", "encrypt", "dir", "-k", key, folder=work)
    (work / "config.txt.enc").mkdir()  # the default output name is a folder
    fails(2, "is a folder, where a file is expected", "encrypt", plain, "-k", key, "--suffix", ".enc",
          folder=work)
    fails(2, "must be a folder", "encrypt", plain, message, "-k", key, "-o", plain, "--force", folder=work)
    # issue 12: with one input, -o naming an existing folder writes into it (as the ESDK CLI does)
    ok("encrypt", plain, "-k", key, "-o", "dir")
    ok("decrypt", "dir/config.txt.encrypted", "-k", key, "-o", "dir")
    assert (work / "dir" / "config.txt").read_bytes() == plain.read_bytes()


def test_io_errors(work: Path, key: Path, message: Path) -> None:
    fails(4, "cannot read input 'missing.txt': No such file", "encrypt", "missing.txt", "-k", key, folder=work)
    fails(4, "No such file or directory", "decrypt", message, "-k", key, "-o", "no/such/folder/x",
          folder=work)
    if os.path.exists("/dev/full"):  # a full disk: writes fail with ENOSPC
        fails(4, "No space left on device", "decrypt", message, "-k", key, "-o", "/dev/full", folder=work)


def test_usage_errors_are_one_line(work: Path, key: Path, plain: Path) -> None:
    fails(2, "No such option: --bogus", "encrypt", plain, "--bogus", folder=work)
    fails(2, "'x' is not a whole number", "encrypt", plain, "-k", key, "--workers", "x", folder=work)
    fails(2, "below the minimum of 1", "encrypt", plain, "-k", key, "--frame-size", "0", folder=work)
    fails(2, "expected KEY=VALUE", "encrypt", plain, "-k", key, "-c", "novalue", folder=work)
    fails(2, "unknown algorithm suite", "encrypt", plain, "-k", key, "--algorithm", "0x9999", folder=work)
    fails(2, "reserved", "encrypt", plain, "-k", key, "-c", "aws-crypto-public-key=x", "-o", "n", folder=work)
    fails(2, "No such command", "encrpyt", folder=work)


def test_policy_refusals(work: Path, key: Path, other_key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-o", "signed.enc", "-k", key, "--algorithm", "0x0578")
    fails(1, "unsigned-only", "decrypt", "signed.enc", "-k", key, "--unsigned-only", "-o", "n", folder=work)
    ok("encrypt", plain, "-o", "two.enc", "-k", key, "-k", other_key)
    fails(1, "limit", "decrypt", "two.enc", "-k", key, "--max-encrypted-data-keys", "1", "-o", "n", folder=work)
    fails(2, "limit", "encrypt", plain, "-k", key, "-k", other_key, "--max-encrypted-data-keys", "1", "-o", "n",
          folder=work)


def test_max_frame_length_bounds_what_decrypt_holds_in_memory(work: Path, key: Path, plain: Path) -> None:
    ok("encrypt", plain, "-o", "big.enc", "-k", key, "--frame-size", "4096")
    fails(1, "--max-frame-length", "decrypt", "big.enc", "-k", key, "--max-frame-length", "4095", "-o", "n",
          folder=work)
    ok("decrypt", "big.enc", "-k", key, "--max-frame-length", "4096", "-o", "back")
    assert (work / "back").read_bytes() == plain.read_bytes()


def test_unexpected_errors_print_one_line_and_hide_details(work: Path, key: Path, plain: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal detail that must not be shown")

    monkeypatch.setattr(envelope, "encrypt_stream", broken)
    line = fails(70, "unexpected RuntimeError; run with ENVELOPE_DEBUG=1", "encrypt", plain, "-k", key,
                 folder=work)
    assert "internal detail" not in line
    result = run("encrypt", plain, "-k", key, env={"ENVELOPE_DEBUG": "1"})
    assert result.exit_code == 70 and "Traceback" in result.stderr and "internal detail" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("envelope: error: unexpected RuntimeError")
    assert not (work / "config.txt.encrypted").exists()


def test_many_inputs_report_each_failure_and_finish_the_rest(work: Path, key: Path, message: Path) -> None:
    (work / "in").mkdir()
    (work / "in" / "good.encrypted").write_bytes(message.read_bytes())
    (work / "in" / "junk.encrypted").write_bytes(b"junk")
    result = run("decrypt", "-r", "in", "-o", "out", "-k", key, "-c", "app=web", "--workers", "1")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("envelope: error: ") and "junk.encrypted" in line and "not an ESDK message" in line
    assert listing(work / "out") == {"good": (work / "config.txt").read_bytes()}


def test_planning_refuses_colliding_outputs(work: Path, key: Path) -> None:
    for folder in ("a", "b"):
        (work / folder).mkdir()
        (work / folder / "same.txt").write_bytes(b"x")
    fails(2, "would both be written", "encrypt", "a/same.txt", "b/same.txt", "-o", "out", "-k", key, folder=work)
    fails(2, "'-' (stdin) cannot be combined", "encrypt", "-", "a/same.txt", "-k", key, folder=work)
