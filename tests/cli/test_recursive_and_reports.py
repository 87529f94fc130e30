"""Issue 12: ``-r`` reports what it skips and does not follow links out of the folder unless
``--follow-symlinks``; hidden files are included; ``-v`` prints one line per output, ``-q`` silences
warnings; ``--metadata-output`` lines carry ``message_id`` and ``frame_length``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from cli_support import key_file
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope

pytestmark = pytest.mark.usefixtures("fast_cli")
runner = CliRunner()


def run(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """in/: a file, a hidden file, a FIFO, a socket, a dangling link, a link to a file inside, a link to a file
    outside, a link to a folder inside."""
    monkeypatch.chdir(tmp_path)
    key_file(tmp_path)
    (tmp_path / "outside.txt").write_bytes(b"outside")
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / ".hidden").write_bytes(b"hidden")
    (src / "sub" / "b.txt").write_bytes(b"beta")
    os.mkfifo(src / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(src / "sock"))
    server.close()
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    (src / "inside-link").symlink_to("a.txt")
    (src / "outside-link").symlink_to(tmp_path / "outside.txt")
    (src / "folder-link").symlink_to("sub")
    return tmp_path


def test_r_reports_every_skip_and_stays_inside_the_folder(tree: Path) -> None:
    """Today: the FIFO, socket and dangling link were skipped silently and the outside link was followed."""
    result = run("encrypt", "-r", "in", "-o", "out", "-k", "k.key", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert outputs(tree / "out") == [".hidden.encrypted", "a.txt.encrypted", "inside-link.encrypted",
                                     "sub/b.txt.encrypted"]  # hidden files are included
    skipped = sorted(line.split("'")[1] for line in result.stderr.splitlines())
    assert skipped == ["in/dangling", "in/fifo", "in/folder-link", "in/outside-link", "in/sock"]
    lines = result.stderr.splitlines()
    assert all(line.startswith("envelope: warning: skipped 'in/") for line in lines), lines
    words = " ".join(lines)
    for what in ("a FIFO", "a socket", "a dangling symlink", "a symlink that leads outside 'in'",
                 "a symlink to a folder in 'in'", "add --follow-symlinks"):
        assert what in words, what
    quiet = run("encrypt", "-r", "in", "-o", "out-quiet", "-k", "k.key", "--workers", "1", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""  # -q silences the reports


def test_follow_symlinks_follows_them_wherever_they_lead(tree: Path) -> None:
    (tree / "in" / "null").symlink_to("/dev/null")
    (tree / "in" / "sub" / "loop").symlink_to("..")
    result = run("encrypt", "-r", "in", "-o", "out", "-k", "k.key", "--workers", "1", "--follow-symlinks")
    assert result.exit_code == 0, result.stderr
    assert outputs(tree / "out") == [".hidden.encrypted", "a.txt.encrypted", "folder-link/b.txt.encrypted",
                                     "inside-link.encrypted", "outside-link.encrypted", "sub/b.txt.encrypted"]
    # a folder reached by two names is processed under both, as find -L does
    keyring = envelope.load_keyring(tree / "k.key")
    outside = (tree / "out" / "outside-link.encrypted").read_bytes()
    assert envelope.decrypt(outside, keyring=keyring).plaintext == b"outside"
    words = result.stderr
    assert "'in/null': a device" in words and "'in/sub/loop': a symlink loop" in words
    assert "'in/folder-link/loop': a symlink loop" in words and "'in/folder-link':" not in words
    result = run("encrypt", "in/a.txt", "-k", "k.key", "--follow-symlinks")
    assert result.exit_code == 2 and "applies to -r" in result.stderr


def test_verbose_prints_one_line_per_output(tree: Path) -> None:
    result = run("encrypt", "-r", "in/sub", "in/a.txt", "-o", "out", "-k", "k.key", "--workers", "1", "-v", "-q")
    assert result.exit_code == 0, result.stderr
    sizes = {p.name: p.stat().st_size for p in (tree / "out").rglob("*") if p.is_file()}
    assert sorted(result.stderr.splitlines()) == sorted(
        f"envelope: wrote {str(path)!r} ({sizes[os.path.basename(path)]} bytes)"
        for path in (os.path.join("out", "b.txt.encrypted"), os.path.join("out", "a.txt.encrypted")))
    message = (tree / "out" / "a.txt.encrypted").read_bytes()
    result = runner.invoke(app, ["decrypt", "-k", "k.key", "-v"], input=message)
    assert result.stdout_bytes == b"alpha" and result.stderr == "envelope: wrote stdout (5 bytes)\n"
    (tree / "k.key").chmod(0o644)  # -q silences the warning, -v still reports the output
    both = run("encrypt", "in/a.txt", "-k", "k.key", "-o", "both.enc", "-v", "-q")
    assert both.stderr == f"envelope: wrote 'both.enc' ({(tree / 'both.enc').stat().st_size} bytes)\n"


def test_metadata_lines_carry_the_message_id_and_frame_length(tree: Path) -> None:
    result = run("encrypt", "in/a.txt", "-o", "a.enc", "-k", "k.key", "--frame-size", "4096",
                 "--metadata-output", "-")
    record = json.loads(result.stdout)
    inspected = json.loads(run("inspect", "a.enc").stdout)
    assert record["header"]["message_id"] == inspected["message_id"] and len(record["header"]["message_id"]) == 64
    assert record["header"]["frame_length"] == 4096 == inspected["frame_length"]
    record = json.loads(run("decrypt", "a.enc", "-o", "back", "-k", "k.key", "--metadata-output", "-").stdout)
    assert record["header"]["message_id"] == inspected["message_id"] and record["header"]["frame_length"] == 4096
