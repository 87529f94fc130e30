"""Issue 12, "Every line a user reads is true, escaped and in the CLI's own words": escaping in every mode,
option names instead of library arguments, I/O errors that name the file and the operation, ``--help``, the
``-c a=b c=d`` hint, ``--frame-size`` above what decrypt reads by default, the exit-code list."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import typer.main
from cli_support import envelope as run_process
from cli_support import key_file, one_error
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope

pytestmark = pytest.mark.usefixtures("fast_cli")
runner = CliRunner()
#: a file name that drives a terminal (ESC sequences, BEL), forges a second line, and reverses text (bidi)
HOSTILE = "bad\x1b]0;owned\x07\x1b[31m\nenvelope: error: forged\u202e.encrypted"
COMMANDS = ["encrypt", "decrypt", "rewrap", "inspect", "keygen", "encrypt-env", "exec"]


def run(*args: str | Path, input: bytes | None = None, env: dict[str, str | None] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def lines_of(result: Any) -> list[str]:
    return str(result.stderr).splitlines()


def assert_clean(line: str) -> None:
    assert line.isprintable(), [c for c in line if not c.isprintable()]  # no ESC, BEL, newline, bidi control


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    key_file(tmp_path)
    (tmp_path / "p.txt").write_bytes(b"plaintext\n" * 100)
    return tmp_path


def keyring(work: Path) -> envelope.Keyring:
    return envelope.load_keyring(work / "k.key")


# ---------------------------------------------------------------------------------------------------------
# escaping, in every mode


@pytest.mark.parametrize("mode", ["several inputs", "-r", "-r --workers 2"])
def test_error_lines_escape_hostile_file_names(work: Path, mode: str) -> None:
    """Today the input path was printed raw before the (escaped) error: a forged second envelope: line."""
    folder = work / "in"
    folder.mkdir()
    (folder / "good.encrypted").write_bytes(envelope.encrypt(b"good", keyring=keyring(work)))
    (folder / HOSTILE).write_bytes(b"junk that is no message")
    if mode == "several inputs":
        args = [folder / "good.encrypted", folder / HOSTILE, "-o", "out", "--workers", "1"]
    else:
        args = ["-r", folder, "-o", "out", *mode.split()[1:]]
    result = run_process("decrypt", *args, "-k", "k.key", cwd=work)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert_clean(lines[0])
    assert "\\x1b]0;owned\\x07\\x1b[31m\\nenvelope: error: forged\\u202e" in lines[0]
    assert "not an ESDK message" in lines[0]


def test_keygen_and_warning_and_verbose_lines_are_escaped(work: Path) -> None:
    result = run("keygen", "-o", "new.key", "--name", "n\x1b[2Jame\u202e")
    assert result.exit_code == 0, result.stderr
    [line] = lines_of(result)
    assert_clean(line)
    assert "n\\x1b[2Jame\\u202e" in line  # today: the name went to the terminal raw
    (work / HOSTILE).write_text((work / "k.key").read_text())
    (work / HOSTILE).chmod(0o644)
    result = run("encrypt", "p.txt", "-k", str(work / HOSTILE), "-o", HOSTILE + ".out", "-v")
    assert result.exit_code == 0, result.stderr
    warning, wrote = lines_of(result)
    assert warning.startswith("envelope: warning: ") and wrote.startswith("envelope: wrote ")
    for line in (warning, wrote):
        assert_clean(line)
        assert "forged\\u202e" in line


def test_context_keys_from_the_command_line_are_escaped(work: Path) -> None:
    (work / "m").write_bytes(envelope.encrypt(b"x", keyring=keyring(work)))
    result = run("decrypt", "m", "-k", "k.key", "-c", "\x1b[31mkey\u202e=v", "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 1 and "is missing" in line
    assert_clean(line)


# ---------------------------------------------------------------------------------------------------------
# the CLI's own words


def test_refusals_name_cli_options_not_library_arguments(work: Path) -> None:
    (work / "signed").write_bytes(envelope.encrypt(b"x", keyring=keyring(work), algorithm=0x0578))
    [line] = lines_of(run("decrypt", "signed", "-k", "k.key", "--unsigned-only", "-o", "out"))
    assert "refused by --unsigned-only" in line and "option" not in line  # today: "the unsigned-only option"
    (work / "big-frames").write_bytes(envelope.encrypt(b"x" * 5000, keyring=keyring(work), frame_length=4096))
    [line] = lines_of(run("decrypt", "big-frames", "-k", "k.key", "--max-frame-length", "1024", "-o", "out"))
    assert "(raise --max-frame-length to read it)" in line and "max_frame_length" not in line


def test_a_header_above_the_limit_names_no_library_argument(work: Path) -> None:
    class ManyKeys:
        def wrap(self, suite: Any, context: Any, data_key: bytes | None = None) -> Any:
            key = data_key or os.urandom(suite.key_length)
            return key, [envelope.EncryptedDataKey(f"p{i}", b"i" * 60_000, b"c") for i in range(20)]

        def unwrap(self, suite: Any, context: Any, edks: Any) -> bytes:
            raise NotImplementedError

    (work / "huge-header").write_bytes(envelope.encrypt(b"x", keyring=ManyKeys()))
    result = run("decrypt", "huge-header", "-k", "k.key", "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 1 and "longer than the limit of 1048576 bytes" in line
    assert "max_header_length" not in line  # today: "(raise max_header_length to read it)"


def test_kms_without_a_region_names_the_option(work: Path, tmp_path: Path) -> None:
    (tmp_path / "empty-config").write_text("")
    env: dict[str, str | None] = {"AWS_REGION": None, "AWS_DEFAULT_REGION": None, "AWS_PROFILE": None,
                                  "AWS_CONFIG_FILE": str(tmp_path / "empty-config"),
                                  "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "empty-config")}
    result = run("encrypt", "p.txt", "-k", "kms:alias/app", "-o", "out", env=env)
    [line] = lines_of(result)
    assert result.exit_code == 2 and "give --region or set AWS_REGION" in line, line
    assert "region=" not in line  # today: "pass region= (CLI --region)"


@pytest.mark.parametrize("args, words", [
    (["--cache-max-messages", str(2**32 + 1)], "--cache-max-messages 4294967297: must be between 1 and 2^32"),
    (["--cache-max-bytes", str(2**63)], "--cache-max-bytes 9223372036854775808: must be between 0 and 2^63 - 1"),
])
def test_cache_limits_are_checked_in_option_words(work: Path, args: list[str], words: str) -> None:
    [line] = lines_of(run("encrypt", "p.txt", "-k", "k.key", "--cache-max-age", "60", *args, "-o", "out"))
    assert words in line and "max_messages" not in line and "max_bytes" not in line  # today: library words


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999"])
def test_cache_max_age_infinite_or_nan_says_what_is_allowed(work: Path, value: str) -> None:
    result = run("encrypt", "p.txt", "-k", "k.key", "--cache-max-age", value, "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 2 and "more than 0 seconds and finite, such as 300 or 0.5" in line


# ---------------------------------------------------------------------------------------------------------
# I/O errors name the file and the operation


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_names_the_output(work: Path) -> None:
    [line] = lines_of(run("encrypt", "p.txt", "-k", "k.key", "-o", "/dev/full"))
    assert "cannot write '/dev/full': No space left on device" in line  # today: only the reason
    with open("/dev/full", "wb") as full:
        result = run_process("encrypt", "p.txt", "-k", "k.key", "-o", "-", cwd=work, stdout=full)
    one_error(result, 4, "cannot write stdout: No space left on device")


def test_a_missing_output_folder_is_named(work: Path) -> None:
    result = run("encrypt", "p.txt", "-k", "k.key", "-o", "nodir/x")
    [line] = lines_of(result)
    assert result.exit_code == 4
    assert "cannot write 'nodir/x': No such file or directory (the folder 'nodir' does not exist)" in line


def test_a_read_error_names_the_input(work: Path) -> None:
    """Reading /proc/self/mem at offset 0 fails with EIO: today the line said only "Input/output error"."""
    result = run("encrypt", "/proc/self/mem", "-k", "k.key", "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 4 and "cannot read input '/proc/self/mem': Input/output error" in line
    assert not (work / "out").exists()


def test_permission_errors_as_an_ordinary_user(tmp_path: Path) -> None:
    """As root these succeed (root reads and writes anything), so this runs without root's capabilities."""
    key_file(tmp_path)
    (tmp_path / "p.txt").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.chmod(tmp_path / "secret.txt", 0)
    os.chmod(tmp_path / "locked", 0o555)
    one_error(run_process("encrypt", "p.txt", "-k", "k.key", "-o", "locked/x", cwd=tmp_path, user=True), 4,
              "cannot write 'locked/x': Permission denied")
    one_error(run_process("encrypt", "secret.txt", "-k", "k.key", "-o", "x", cwd=tmp_path, user=True), 4,
              "cannot read input 'secret.txt': Permission denied")
    assert sorted(p.name for p in (tmp_path / "locked").iterdir()) == []
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------------
# --help


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    return str(result.stdout)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_type_names_or_range_noise(command: str) -> None:
    text = _help(command)
    for noise in ("<list[str]>", "<str>", "<int>", "[[", "x>=", "x<=", "INTEGER", "TEXT"):
        assert noise not in text, (command, noise)


def test_help_summaries_are_whole_sentences() -> None:
    listed = _help().split("Commands:", 1)[1]
    summaries = [line.split(None, 1)[1] for line in listed.strip().splitlines()]
    assert len(summaries) == len(COMMANDS)
    for summary in summaries:
        assert summary.endswith(".") and not summary.endswith("..."), summary


def _option_help(command: str, option: str) -> str:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    [param] = [p for p in click_command.params if option in p.opts]
    return str(param.help)


def test_each_option_describes_its_own_command() -> None:
    assert "decrypt" not in _option_help("encrypt", "--max-encrypted-data-keys")  # today: "decrypt default"
    assert "--discovery" not in _option_help("encrypt", "--region")  # today: encrypt has no --discovery
    assert "on decrypt" not in _option_help("encrypt", "--key") and "on encrypt" not in _option_help("decrypt",
                                                                                                      "--key")
    assert "decrypt:" not in _option_help("encrypt", "--suffix") and "encrypt:" not in _option_help("decrypt",
                                                                                                    "--suffix")


@pytest.mark.parametrize("command", [None, "encrypt", "decrypt"])
def test_the_exit_code_list_is_complete(command: str | None) -> None:
    text = " ".join(_help(*([command] if command else [])).split())
    codes = re.search(r"Exit codes: (.*)", text)
    assert codes is not None
    for code in ("0 success", "1 ", "2 usage error", "3 no key", "4 I/O error", "70 ", "129", "130", "141",
                 "143"):
        assert code in codes.group(1), code


def test_ranges_are_still_checked(work: Path) -> None:
    [line] = lines_of(run("encrypt", "p.txt", "-k", "k.key", "--workers", "0"))
    assert "0 is below the minimum of 1" in line


# ---------------------------------------------------------------------------------------------------------
# -c a=b c=d, --frame-size


def test_the_esdk_cli_context_spelling_gets_a_hint(work: Path) -> None:
    result = run("encrypt", "p.txt", "-k", "k.key", "-c", "a=b", "c=d", "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 2, line  # today: exit 4, "cannot read input 'c=d'"
    assert "'c=d' does not exist and looks like a context pair: repeat -c for each pair (-c a=b -c c=d)" in line
    assert not (work / "out").exists()


def test_frame_sizes_above_what_decrypt_reads_need_to_be_meant(work: Path) -> None:
    big = str(64 * 1024 * 1024 + 1)
    result = run("encrypt", "p.txt", "-k", "k.key", "--frame-size", big, "-o", "out")
    [line] = lines_of(result)
    assert result.exit_code == 2 and "--max-frame-length 67108865" in line and "--allow-large-frames" in line
    assert not (work / "out").exists()  # today: written, and envelope decrypt then refused it
    assert run("encrypt", "p.txt", "-k", "k.key", "--frame-size", big, "--allow-large-frames",
               "-o", "out").exit_code == 0
    assert run("decrypt", "out", "-k", "k.key", "--max-frame-length", big, "-o", "back").exit_code == 0
    assert (work / "back").read_bytes() == (work / "p.txt").read_bytes()
    [line] = lines_of(run("encrypt", "p.txt", "-k", "k.key", "--frame-size", str(2**31), "--allow-large-frames",
                          "-o", "out2"))
    assert "--frame-size 2147483648: must be between 1 and 2^31 - 1 bytes" in line
    assert stat.S_ISREG((work / "out").stat().st_mode)
