"""Issue 12, "Outputs never destroy what they don't own": descriptors, symlinks, a run's own inputs, what a
failed run leaves, folders as -o, /dev/stdin as an input.

The tests that name ``/dev/stdout`` or create names in ``/dev`` run in a private mount namespace with its own
``/dev`` (``cli_support.in_private_dev``): on today's code, ``-o /dev/stdout --force`` run as root replaced the
machine's ``/dev/stdout`` link, and ``envelope encrypt /dev/stdin`` created ``/dev/stdin.encrypted``; here that
could only touch the private copy. ``/proc/self/fd/1`` and ``/dev/fd/1`` are tested in a process whose stdout
is a regular file, where no bug can reach anything but that file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cli_support import CLI, envelope, in_private_dev, key_file, one_error, private_dev_works, shell

import envelope as lib

PLAIN = b"issue 12: lose nothing\n" * 1000
OLD = b"the previous version"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    key_file(tmp_path)
    (tmp_path / "p.txt").write_bytes(PLAIN)
    return tmp_path


def keyring(work: Path) -> lib.Keyring:
    return lib.load_keyring(work / "k.key")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


# ---------------------------------------------------------------------------------------------------------
# descriptors: written through, never created, renamed over or removed


def test_the_private_dev_works(tmp_path: Path) -> None:
    assert private_dev_works(tmp_path), "unshare -rm with a tmpfs over /dev must work for the tests below"


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_dev_stdout_is_written_through_and_stays_a_link(work: Path, name: str, force: list[str]) -> None:
    """Today: exit 2 ("already exists") without --force; with it (as root) exit 0, out.enc empty and the
    private /dev/stdout replaced by a regular file holding the ciphertext."""
    script = (f"{shell(*CLI, 'encrypt', 'p.txt', '-k', 'k.key', '-o', name, *force)} > out.enc; echo rc=$?; "
              "test -L /dev/stdout && echo link-kept; ls -A /dev")
    result = in_private_dev(script, cwd=work)
    out = result.stdout.decode().split()
    assert "rc=0" in out, result.stderr
    assert "link-kept" in out
    assert sorted(out[out.index("link-kept") + 1:]) == [".private-dev", "fd", "full", "null", "random", "stderr",
                                                        "stdin", "stdout", "urandom", "zero"]  # nothing new
    assert lib.decrypt((work / "out.enc").read_bytes(), keyring=keyring(work)).plaintext == PLAIN


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("name", ["/proc/self/fd/1", "/dev/fd/1"])
def test_proc_self_fd_and_dev_fd_write_through_the_descriptor(work: Path, name: str, force: list[str]) -> None:
    """Safe on the real machine: stdout is a regular file. Today both fail with exit 4."""
    message = work / "m.enc"
    message.write_bytes(lib.encrypt(PLAIN, keyring=keyring(work)))
    with open(work / "out.enc", "wb") as out:
        result = envelope("encrypt", "p.txt", "-k", "k.key", "-o", name, *force, cwd=work, stdout=out)
    assert result.returncode == 0, result.stderr
    assert lib.decrypt((work / "out.enc").read_bytes(), keyring=keyring(work)).plaintext == PLAIN
    with open(work / "plain.out", "wb") as out:
        result = envelope("decrypt", "m.enc", "-k", "k.key", "-o", name, *force, cwd=work, stdout=out)
    assert result.returncode == 0, result.stderr
    assert (work / "plain.out").read_bytes() == PLAIN


def test_another_open_descriptor_is_written_through(work: Path) -> None:
    """``-o /dev/fd/3``: the descriptor the caller opened, at its offset; today exit 4."""
    target = work / "three.out"
    target.write_bytes(b"header line\n")
    result = subprocess.run(["sh", "-c", shell(*CLI, "encrypt", "p.txt", "-k", "k.key", "-o", "/dev/fd/3")
                             + " 3>> three.out"], cwd=work, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = target.read_bytes()
    assert data.startswith(b"header line\n")
    assert lib.decrypt(data[len(b"header line\n"):], keyring=keyring(work)).plaintext == PLAIN
    result = envelope("encrypt", "p.txt", "-k", "k.key", "-o", "/dev/fd/9", cwd=work)  # not open: before work
    one_error(result, 4, "cannot write '/dev/fd/9'", "Bad file descriptor")


def test_nothing_is_created_in_dev_and_dev_stdin_reads_stdin(work: Path) -> None:
    """``encrypt /dev/stdin`` with no -o reads stdin and writes stdout (today: it created /dev/stdin.encrypted);
    a process-substitution input (/dev/fd/N) with no -o writes stdout too; -o naming a new file in /dev is
    refused (today, as root: created there)."""
    script = "; ".join([
        f"{shell(*CLI, 'encrypt', '/dev/stdin', '-k', 'k.key')} < p.txt > a.enc; echo rc-a=$?",
        f"{shell(*CLI, 'encrypt', '/dev/fd/3', '-k', 'k.key')} 3< p.txt > b.enc; echo rc-b=$?",
        f"{shell(*CLI, 'encrypt', 'p.txt', '-k', 'k.key', '-o', '/dev/new.enc', '--force')} 2> c.err; echo rc-c=$?",
        f"{shell(*CLI, 'decrypt', '-', '-k', 'k.key', '-o', '/dev/stdin.out')} < a.enc 2> d.err; echo rc-d=$?",
        "ls -A /dev"])
    result = in_private_dev(script, cwd=work)
    out = result.stdout.decode().split()
    assert out[:4] == ["rc-a=0", "rc-b=0", "rc-c=2", "rc-d=2"], (out, result.stderr)
    assert sorted(out[4:]) == [".private-dev", "fd", "full", "null", "random", "stderr", "stdin", "stdout",
                               "urandom", "zero"]
    for name in ("a.enc", "b.enc"):
        assert lib.decrypt((work / name).read_bytes(), keyring=keyring(work)).plaintext == PLAIN
    for name in ("c.err", "d.err"):
        line = (work / name).read_text()
        assert line.startswith("envelope: error: ") and "never creates or replaces files in /dev" in line, line


def test_files_in_proc_are_never_replaced(work: Path) -> None:
    result = envelope("encrypt", "p.txt", "-k", "k.key", "-o", "/proc/self/comm", "--force", cwd=work)
    one_error(result, 2, "never creates or replaces files in /dev or /proc")


# ---------------------------------------------------------------------------------------------------------
# symlinks


def test_force_replaces_the_file_a_symlink_points_to(work: Path) -> None:
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "real.out").write_bytes(OLD)
    (work / "m.enc").write_bytes(lib.encrypt(PLAIN, keyring=keyring(work)))
    (work / "out.link").symlink_to(elsewhere / "real.out")
    result = envelope("decrypt", "m.enc", "-k", "k.key", "-o", "out.link", cwd=work)
    one_error(result, 2, "'out.link' already exists (add --force")
    assert (elsewhere / "real.out").read_bytes() == OLD
    result = envelope("decrypt", "m.enc", "-k", "k.key", "-o", "out.link", "--force", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "out.link").is_symlink()  # today: the link was replaced by a regular file
    assert os.readlink(work / "out.link") == str(elsewhere / "real.out")
    assert (elsewhere / "real.out").read_bytes() == PLAIN
    assert stat.S_IMODE((elsewhere / "real.out").stat().st_mode) == 0o600
    assert sorted(p.name for p in elsewhere.iterdir()) == ["real.out"]  # no temporary file left anywhere
    assert sorted(p.name for p in work.iterdir()) == ["elsewhere", "k.key", "m.enc", "out.link", "p.txt"]


def test_a_dangling_symlink_is_not_written_through(work: Path) -> None:
    (work / "dangling").symlink_to(work / "missing" / "x")
    for extra in ([], ["--force"]):
        result = envelope("encrypt", "p.txt", "-k", "k.key", "-o", "dangling", *extra, cwd=work)
        one_error(result, 2, "'dangling' is a symlink to", "does not write through a dangling symlink")
        assert (work / "dangling").is_symlink() and not (work / "missing").exists()


# ---------------------------------------------------------------------------------------------------------
# a run never writes over its own inputs


def test_decrypt_r_force_never_replaces_another_input(work: Path) -> None:
    """Today: x.encrypted.encrypted decrypts into x.encrypted, which is another input, and replaces it."""
    folder = work / "d"
    folder.mkdir()
    (folder / "x.encrypted").write_bytes(lib.encrypt(b"first", keyring=keyring(work)))
    (folder / "x.encrypted.encrypted").write_bytes(lib.encrypt(b"second", keyring=keyring(work)))
    before = files(work)
    result = envelope("decrypt", "-r", "d", "-k", "k.key", "--force", cwd=work)
    line = one_error(result, 2, "would overwrite the input")
    assert "'d/x.encrypted.encrypted'" in line and "'d/x.encrypted'" in line  # both paths named
    assert files(work) == before


def test_two_inputs_that_map_to_each_others_names(work: Path) -> None:
    (work / "a").write_bytes(b"alpha")
    (work / "a.encrypted").write_bytes(b"beta")
    before = files(work)
    one_error(envelope("encrypt", "a", "a.encrypted", "-o", ".", "-k", "k.key", "--force", cwd=work), 2,
              "'a.encrypted'", "would overwrite the input")
    assert files(work) == before


def test_an_output_that_is_an_input_by_another_name(work: Path) -> None:
    os.link(work / "p.txt", work / "hard")
    (work / "soft").symlink_to("p.txt")
    for name in ("hard", "soft", "./sub/../p.txt"):
        (work / "sub").mkdir(exist_ok=True)
        one_error(envelope("encrypt", "p.txt", "-o", name, "-k", "k.key", "--force", cwd=work), 2,
                  "would be overwritten by its own output")
    assert (work / "p.txt").read_bytes() == PLAIN


@pytest.mark.parametrize("where", ["the input", "the output"])
def test_metadata_output_may_not_name_an_input_or_an_output(work: Path, where: str) -> None:
    """Today: the JSON line was appended to the plaintext input; or the log created the output file, which the
    output check then reported as existing."""
    (work / "sub").mkdir()
    log = "p.txt" if where == "the input" else "./sub/../out.enc"
    before = files(work)
    line = one_error(envelope("encrypt", "p.txt", "-o", "out.enc", "-k", "k.key", "--metadata-output", log,
                              cwd=work), 2, "--metadata-output")
    assert f"is {where}" in line and "'p.txt'" in line
    assert files(work) == before


def test_no_output_may_overwrite_a_key_file_the_run_reads(work: Path) -> None:
    """Key files are inputs of the run too: today -o k.key --force replaced the key with the ciphertext."""
    key = (work / "k.key").read_bytes()
    one_error(envelope("encrypt", "p.txt", "-k", "k.key", "-o", "k.key", "--force", cwd=work), 2,
              "would overwrite the key file 'k.key'")
    one_error(envelope("encrypt", "p.txt", "-k", "file:k.key", "-o", "out", "--metadata-output", "./k.key",
                       cwd=work), 2, "--metadata-output './k.key' is the key file 'k.key'")
    assert (work / "k.key").read_bytes() == key and not (work / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# a failed run leaves nothing it did not have before


def test_a_failed_run_leaves_no_metadata_log_it_created(work: Path) -> None:
    (work / "junk.enc").write_bytes(b"not a message")
    one_error(envelope("decrypt", "junk.enc", "-o", "out", "-k", "k.key", "--metadata-output", "log.jsonl",
                       cwd=work), 1, "not an ESDK message")
    assert not (work / "log.jsonl").exists() and not (work / "out").exists()  # today: the log stayed
    (work / "log.jsonl").write_text('{"earlier": true}\n')  # an existing log is appended to, failure or not
    envelope("decrypt", "junk.enc", "-o", "out", "-k", "k.key", "--metadata-output", "log.jsonl", cwd=work)
    lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert lines[0] == {"earlier": True} and lines[1]["exit_code"] == 1


def test_a_failed_run_removes_the_folders_it_created(work: Path) -> None:
    """Today: decrypting a folder of bad messages left the empty output folders behind."""
    (work / "in" / "deep").mkdir(parents=True)
    (work / "in" / "deep" / "bad.encrypted").write_bytes(b"not a message")
    (work / "in" / "good.encrypted").write_bytes(lib.encrypt(b"good", keyring=keyring(work)))
    result = envelope("decrypt", "-r", "in", "-o", "out", "-k", "k.key", "--workers", "1", cwd=work)
    assert result.returncode == 1
    assert files(work / "out") == {"good": b"good"} and not (work / "out" / "deep").exists()
    (work / "in" / "good.encrypted").unlink()
    result = envelope("decrypt", "-r", "in", "-o", "out2", "-k", "k.key", "--workers", "2", cwd=work)
    assert result.returncode == 1 and not (work / "out2").exists()


# ---------------------------------------------------------------------------------------------------------
# -o DIR with one input


def test_one_input_into_an_existing_folder_or_a_name_ending_in_a_slash(work: Path) -> None:
    """As the ESDK CLI does; today: a usage error for the folder, an I/O error for 'new/'."""
    (work / "existing").mkdir()
    assert envelope("encrypt", "p.txt", "-k", "k.key", "-o", "existing", cwd=work).returncode == 0
    assert envelope("encrypt", "p.txt", "-k", "k.key", "-o", "new/", cwd=work).returncode == 0
    for folder in ("existing", "new"):
        message = (work / folder / "p.txt.encrypted").read_bytes()
        assert lib.decrypt(message, keyring=keyring(work)).plaintext == PLAIN
    result = envelope("decrypt", "new/p.txt.encrypted", "-k", "k.key", "-o", "plain/", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "plain" / "p.txt").read_bytes() == PLAIN
    one_error(envelope("encrypt", "-k", "k.key", "-o", "existing", cwd=work, input=b"x"), 2,
              "with stdin as the input, -o names the output file")
