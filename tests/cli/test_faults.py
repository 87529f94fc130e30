"""Faults while decrypting (issue 7): a disk that fills up or fails, a process that is killed or interrupted,
pipes closed at either end. Nothing is lost: the destination is untouched (absent if new, byte-identical if it
existed), the temporary file is removed, the exit code says what happened, and stderr has one line or, for a
reader that went away (``envelope decrypt ... | head``), nothing at all.

How the faults are made, without root: a file object that fails with ENOSPC or EIO after N bytes (the library
directly, and the CLI's temporary file through ``envelope.batch.tempfiles.open``); failing ``fsync`` / ``rename``;
``RLIMIT_FSIZE`` in a real process (writes past it fail with EFBIG); ``/dev/full`` as standard output; pipes.
SIGKILL, SIGTERM and SIGINT in the middle of a large decrypt are in test_cli_process.py; SIGHUP and an
interrupted encrypt are here.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from envelope_cli.app import app
from helpers import partial_output_bytes
from typer.testing import CliRunner

import envelope
import envelope.batch.tempfiles

CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]
KEYRING = envelope.RawAesKeyring("faults", "k", bytes(range(32)))
OLD = b"the previous version"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("fast_cli")


@pytest.fixture(scope="module")
def plaintext() -> bytes:
    return os.urandom(6 * 1024 * 1024 + 123)  # two 4 MiB batches of the library's pipeline


@pytest.fixture(scope="module")
def message(plaintext: bytes) -> bytes:
    return envelope.encrypt(plaintext, keyring=KEYRING, frame_length=64 * 1024)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: bytes) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.key").write_text('{"type": "raw-aes", "namespace": "faults", "name": "k", "key": "'
                                    'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}')
    (tmp_path / "k.key").chmod(0o600)  # a key file others can read gets a warning line (issue 12)
    (tmp_path / "m.enc").write_bytes(message)
    return tmp_path


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


class FailingRaw(io.RawIOBase):
    """A raw file that accepts ``limit`` bytes and then fails every write with ``err`` (a full or broken disk).

    Wraps a real descriptor, so fchmod / fsync on ``fileno()`` still work."""

    def __init__(self, inner: Any, limit: int, err: int) -> None:
        self.inner = inner
        self.limit = limit
        self.err = err
        self.written = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self.inner.fileno())

    def write(self, data: Any) -> int:
        room = self.limit - self.written
        if room <= 0:
            raise OSError(self.err, os.strerror(self.err))
        n = int(self.inner.write(memoryview(data)[:room]))
        self.written += n
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


# ---------------------------------------------------------------------------------------------------------
# the library: an OSError from the destination surfaces as is, and the pipeline stops cleanly


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("threads", [0, 2])
def test_library_passes_write_errors_through_and_stops(message: bytes, plaintext: bytes, err: int,
                                                       threads: int) -> None:
    for limit in (0, 100_000, 5 * 1024 * 1024, len(plaintext) - 1):
        sink = io.BytesIO()
        failing = FailingRaw(sink, limit, err)
        with pytest.raises(OSError) as info:
            envelope.decrypt_stream(io.BytesIO(message), failing, keyring=KEYRING,  # type: ignore[arg-type]
                                    threads=threads)
        assert info.value.errno == err and not isinstance(info.value, envelope.EnvelopeError)
        assert sink.getvalue() == plaintext[:limit]  # what went out before the failure, nothing after it
        deadline = time.monotonic() + 5
        while any(t.name.startswith("envelope-") for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not [t.name for t in threading.enumerate() if t.name.startswith("envelope-")]


@pytest.mark.parametrize("threads", [0, 2])
def test_library_encrypt_passes_write_errors_through(plaintext: bytes, threads: int) -> None:
    with pytest.raises(OSError) as info:
        envelope.encrypt_stream(io.BytesIO(plaintext), FailingRaw(io.BytesIO(), 5_000_000, errno.ENOSPC),  # type: ignore[arg-type]
                                keyring=KEYRING, frame_length=64 * 1024, threads=threads)
    assert info.value.errno == errno.ENOSPC


# ---------------------------------------------------------------------------------------------------------
# the CLI: the temporary file fails; the destination is untouched and the temporary file is gone


def _failing_temp_files(monkeypatch: pytest.MonkeyPatch, limit: int, err: int) -> None:
    """Make the temporary output files (opened from a descriptor in envelope/batch/tempfiles.py) fail after
    ``limit``."""
    real_open = builtins.open

    def fake_open(file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int) and "w" in mode:
            raw = FailingRaw(io.FileIO(file, "wb"), limit, err)
            return io.BufferedWriter(raw, buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE)
        return real_open(file, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(envelope.batch.tempfiles, "open", fake_open, raising=False)


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "No space left on device"), (errno.EIO, "Input/output error")])
def test_cli_disk_full_or_failing_mid_decrypt(work: Path, plaintext: bytes, err: int, words: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # 0: the first write fails; mid-way (several batches out); len - 10: only the final flush in commit fails
    for limit in (0, 3 * 1024 * 1024, len(plaintext) - 10):
        _failing_temp_files(monkeypatch, limit, err)
        for destination, extra in (("new.out", []), ("existing.out", ["--force"])):
            (work / "existing.out").write_bytes(OLD)
            before = _listing(work)
            result = runner.invoke(app, ["decrypt", "m.enc", "-k", "k.key", "-o", destination, *extra])
            lines = result.stderr.splitlines()
            assert result.exit_code == 4, (limit, destination, result.stderr)
            assert len(lines) == 1 and lines[0].startswith("envelope: error: ") and words in lines[0], lines
            assert _listing(work) == before, (limit, destination)  # untouched, and no temporary file left


def test_cli_close_failing_leaves_no_output(work: Path, plaintext: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write error reported only by close() (NFS and some FUSE file systems report late) must stop the output
    from appearing: the temporary file is closed before it gets any name."""
    real_open = builtins.open

    class LateFailure(FailingRaw):
        def close(self) -> None:
            super().close()
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    def fake_open(file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, int) and "w" in mode:
            return io.BufferedWriter(LateFailure(io.FileIO(file, "wb"), 1 << 40, errno.EIO), 1 << 16)
        return real_open(file, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(envelope.batch.tempfiles, "open", fake_open, raising=False)
    for destination, extra in (("new.out", []), ("existing.out", ["--force"])):
        (work / "existing.out").write_bytes(OLD)
        before = _listing(work)
        result = runner.invoke(app, ["decrypt", "m.enc", "-k", "k.key", "-o", destination, *extra])
        assert result.exit_code == 4 and "Input/output error" in result.stderr, (destination, result.stderr)
        assert _listing(work) == before, destination


def test_cli_fsync_or_rename_failing_leaves_the_old_file(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "existing.out").write_bytes(OLD)
    before = _listing(work)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    for name in ("fsync", "replace"):
        with monkeypatch.context() as patch:
            patch.setattr(os, name, fail)
            result = runner.invoke(app, ["decrypt", "m.enc", "-k", "k.key", "-o", "existing.out", "--force"])
        assert result.exit_code == 4 and "Input/output error" in result.stderr, (name, result.stderr)
        assert _listing(work) == before, name


@pytest.mark.parametrize("where", ["no /proc to link through", "no unnamed files"])
def test_cli_outputs_without_unnamed_temporary_files(work: Path, plaintext: bytes, monkeypatch: pytest.MonkeyPatch,
                                                     where: str) -> None:
    """Where an unnamed (O_TMPFILE) output cannot be linked into place, the CLI copies it to a named temporary
    file and carries on; where there are none, it writes a named temporary file from the start. Either way the
    output is complete, 0600, refuses to replace a file without --force, and leaves nothing else behind."""
    monkeypatch.setitem(envelope.batch.tempfiles._UNNAMED, "usable", where != "no unnamed files")
    monkeypatch.setattr(envelope.batch.tempfiles, "_PROC_FD", str(work / "no-such-proc"))
    (work / "existing.out").write_bytes(OLD)
    for destination, extra in (("new.out", []), ("existing.out", []), ("existing.out", ["--force"])):
        before = _listing(work)
        result = runner.invoke(app, ["decrypt", "m.enc", "-k", "k.key", "-o", destination, *extra])
        if destination == "existing.out" and not extra:
            assert result.exit_code == 2 and "already exists" in result.stderr, result.stderr
            assert _listing(work) == before
            continue
        assert result.exit_code == 0, result.stderr
        assert (work / destination).read_bytes() == plaintext  # the first one: copied from the unnamed file
        assert stat.S_IMODE((work / destination).stat().st_mode) == 0o600
    assert sorted(_listing(work)) == ["existing.out", "k.key", "m.enc", "new.out"]
    assert envelope.batch.tempfiles._UNNAMED["usable"] is False  # the first refused link: named files from now on


def _limit_file_size(size: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return apply


@pytest.mark.parametrize("command", ["decrypt", "encrypt"])
def test_process_with_a_file_size_limit(work: Path, plaintext: bytes, command: str) -> None:
    """A real kernel refusal: past RLIMIT_FSIZE every write fails with EFBIG (Python ignores SIGXFSZ)."""
    if command == "encrypt":
        (work / "plain").write_bytes(plaintext)
    source = "m.enc" if command == "decrypt" else "plain"
    for destination, extra in (("new.out", []), ("existing.out", ["--force"])):
        (work / "existing.out").write_bytes(OLD)
        before = _listing(work)
        result = subprocess.run([*CLI, command, source, "-k", "k.key", "-o", destination, *extra], cwd=work,
                                capture_output=True, timeout=60, preexec_fn=_limit_file_size(2 * 1024 * 1024),
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 4, result.stderr
        assert len(lines) == 1 and "File too large" in lines[0], lines
        assert _listing(work) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_stdout_on_a_full_device(work: Path) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*CLI, "decrypt", "m.enc", "-k", "k.key", "-o", "-"], cwd=work, stdout=full,
                                stderr=subprocess.PIPE, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 4 and len(lines) == 1 and "No space left on device" in lines[0], lines


# ---------------------------------------------------------------------------------------------------------
# pipes: a reader that goes away, a writer that stops early, descriptors that are closed


def _reader_goes_away(args: list[str], cwd: Path, take: int = 10) -> tuple[int, bytes, bytes]:
    """Run the CLI with stdout to a pipe, read ``take`` bytes, close the pipe (like ``| head -c 10``)."""
    process = subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None and process.stderr is not None
    head = process.stdout.read(take)
    process.stdout.close()
    stderr = process.stderr.read()
    return process.wait(30), head, stderr


@pytest.mark.parametrize("args", [["decrypt", "m.enc", "-k", "k.key", "-o", "-"],
                                  ["encrypt", "plain", "-k", "k.key", "-o", "-"],
                                  ["encrypt", "plain", "-k", "k.key", "-o", "-", "--encode"]],
                         ids=["decrypt", "encrypt", "encrypt-encode"])
def test_reader_closes_the_pipe_quietly_exit_141(work: Path, plaintext: bytes, args: list[str]) -> None:
    """``envelope decrypt ... | head -c 10``: exit 141 (128 + SIGPIPE, what a shell shows for any writer killed
    by SIGPIPE), nothing on stderr: no traceback, no error line."""
    (work / "plain").write_bytes(plaintext)
    code, head, stderr = _reader_goes_away(args, work)
    assert len(head) == 10 and (head == plaintext[:10] or args[0] == "encrypt")
    assert code == 141, stderr
    assert stderr == b""
    assert sorted(p.name for p in work.iterdir()) == ["k.key", "m.enc", "plain"]


def test_shell_pipeline_with_head(work: Path) -> None:
    cli = " ".join(CLI)
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {cli} decrypt m.enc -k k.key -o - | head -c 10 | wc -c"],
                            cwd=work, capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 141 and result.stdout.strip() == b"10" and result.stderr == b""


def test_writer_stops_early_is_a_truncated_message(work: Path, message: bytes) -> None:
    """Reading from a pipe whose writer went away mid-message: the message is incomplete, so decrypt fails
    (exit 1, one line) and the destination never appears. Silence here would hide a cut-off upload."""
    process = subprocess.Popen([*CLI, "decrypt", "-k", "k.key", "-o", "out"], cwd=work, stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(message[:len(message) // 2])
    process.stdin.close()
    lines = process.stderr.read().decode().splitlines()
    assert process.wait(30) == 1
    assert len(lines) == 1 and "truncated" in lines[0], lines
    assert sorted(p.name for p in work.iterdir()) == ["k.key", "m.enc"]


@pytest.mark.parametrize("redirect, words", [("<&-", "standard input is closed"),
                                             (">&-", "standard output is closed")])
def test_closed_standard_descriptors(work: Path, redirect: str, words: str) -> None:
    cli = " ".join(CLI)
    source = "" if redirect == "<&-" else "m.enc"
    result = subprocess.run(["bash", "-c", f"{cli} decrypt {source} -k k.key -o - {redirect}"], cwd=work,
                            capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 4 and len(lines) == 1 and words in lines[0], lines
    closed_stderr = subprocess.run(["bash", "-c", f"{cli} decrypt m.enc -k k.key -o out.txt 2>&-"], cwd=work,
                                   capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert closed_stderr.returncode == 0 and (work / "out.txt").exists()


# ---------------------------------------------------------------------------------------------------------
# SIGHUP, and a signal during encrypt (SIGINT / SIGTERM during decrypt: test_cli_process.py)


@pytest.mark.parametrize("command, signum", [("decrypt", signal.SIGHUP), ("encrypt", signal.SIGTERM)])
def test_signal_mid_run_removes_the_temporary_file(work: Path, message: bytes, plaintext: bytes, command: str,
                                                   signum: int) -> None:
    data = message if command == "decrypt" else plaintext
    (work / "existing.out").write_bytes(OLD)
    process = subprocess.Popen([*CLI, command, "-k", "k.key", "-o", "existing.out", "--force"], cwd=work,
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(data[:5 * 1024 * 1024])  # more than one 4 MiB batch of the pipeline, not all of it
    process.stdin.flush()
    deadline = time.monotonic() + 30
    while partial_output_bytes(process.pid, work) == 0:  # until output is in the temporary file
        if time.monotonic() > deadline:
            pytest.fail("no output reached the temporary file")
        time.sleep(0.02)
    process.send_signal(signum)
    assert process.wait(10) == 128 + signum
    lines = process.stderr.read().decode().splitlines()
    assert len(lines) == 1 and "temporary files were removed" in lines[0], lines
    process.stdin.close()
    assert (work / "existing.out").read_bytes() == OLD
    assert not [p for p in work.iterdir() if p.name.endswith(".envelope-tmp")]
