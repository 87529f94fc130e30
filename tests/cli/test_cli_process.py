"""The CLI as real processes: pipes, /dev/null and FIFOs, terminals, signals, worker processes, start-up.

Commands run as ``sys.executable -m envelope_cli.main`` (what the ``envelope`` console script calls), which works from
a fresh clone after ``pip install -e .``.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import partial_output_bytes, unnamed_files_work

import envelope

CLI = [sys.executable, "-m", "envelope_cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def envelope_cli(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *(str(a) for a in args)], capture_output=True, timeout=60, cwd=ROOT, input=input)


def one_error_line(stderr: bytes, words: str) -> None:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: ") and words in lines[0], lines


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "k.key"
    assert envelope_cli("keygen", "-o", path, "--name", "proc").returncode == 0
    return path


@pytest.fixture
def keyring(key: Path) -> envelope.Keyring:
    return envelope.load_keyring(key)


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("envelope")
    assert script.exists(), "pip install -e . creates the console script next to the interpreter"
    for command in ([str(script), "--version"], [*CLI, "--version"]):
        result = subprocess.run(command, capture_output=True, timeout=30, check=True)
        assert result.stdout.decode() == f"envelope {envelope.__version__}\n"


def test_pipe_round_trip(tmp_path: Path, key: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(5 * 1024 * 1024 + 123))  # several batches of the library's pipeline
    cli = " ".join(shlex.quote(part) for part in CLI)
    k = shlex.quote(str(key))
    pipeline = (f"set -o pipefail; cat {shlex.quote(str(data))} | {cli} encrypt --key file:{k} -c app=pipe "
                f"| {cli} decrypt --key file:{k} -c app=pipe | cmp - {shlex.quote(str(data))}")
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    encoded = (f"set -o pipefail; cat {shlex.quote(str(data))} | {cli} encrypt --key {k} --encode "
               f"| fold -w 64 | {cli} decrypt --decode --key {k} | cmp - {shlex.quote(str(data))}")
    result = subprocess.run(["bash", "-c", encoded], capture_output=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_dev_null_is_written_not_replaced(tmp_path: Path, key: Path, keyring: envelope.Keyring) -> None:
    message = tmp_path / "m.encrypted"
    message.write_bytes(envelope.encrypt(b"payload", keyring=keyring))
    assert envelope_cli("decrypt", message, "-k", key, "-o", "/dev/null").returncode == 0
    assert envelope_cli("encrypt", message, "-k", key, "-o", "/dev/null").returncode == 0
    bad = tmp_path / "bad.encrypted"
    bad.write_bytes(message.read_bytes()[:-1] + bytes([message.read_bytes()[-1] ^ 1]))
    result = envelope_cli("decrypt", bad, "-k", key, "-o", "/dev/null")
    assert result.returncode == 1
    one_error_line(result.stderr, "failed to authenticate")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # never unlinked or replaced
    assert [p.name for p in Path("/dev").glob(".null.*")] == []


def _read_fifo(fifo: Path) -> tuple[threading.Thread, io.BytesIO]:
    received = io.BytesIO()

    def reader() -> None:
        with open(fifo, "rb") as stream:
            received.write(stream.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, received


def _finish_fifo(fifo: Path, thread: threading.Thread) -> None:
    if thread.is_alive():  # the CLI never opened it: open it once so that the reader returns
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(10)


def test_fifo_destination_is_written_not_replaced(tmp_path: Path, key: Path, keyring: envelope.Keyring) -> None:
    message = tmp_path / "m.encrypted"
    payload = os.urandom(300_000)
    message.write_bytes(envelope.encrypt(payload, keyring=keyring))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args, code in ((["decrypt", message], 0), (["decrypt", message, "--force"], 0),
                       (["decrypt", "-", "--force"], 1)):
        thread, received = _read_fifo(fifo)
        result = envelope_cli(*args, "-k", key, "-o", fifo, input=b"junk")
        _finish_fifo(fifo, thread)
        assert result.returncode == code, result.stderr
        if code == 0:
            assert received.getvalue() == payload
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # even with --force and a failure: never replaced
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "k.key", "m.encrypted"]


def test_refuses_binary_ciphertext_on_a_terminal(tmp_path: Path, key: Path) -> None:
    import pty

    (tmp_path / "p.txt").write_bytes(b"secret")
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run([*CLI, "encrypt", "-k", str(key)], stdin=open(tmp_path / "p.txt", "rb"),
                                stdout=terminal, stderr=subprocess.PIPE, timeout=30, cwd=ROOT)
        assert result.returncode == 2
        one_error_line(result.stderr, "refusing to write binary ciphertext to a terminal")
        assert "--encode" in result.stderr.decode() and "-o" in result.stderr.decode()
        encoded = subprocess.run([*CLI, "encrypt", "-k", str(key), "--encode"],
                                 stdin=open(tmp_path / "p.txt", "rb"), stdout=terminal, stderr=subprocess.PIPE,
                                 timeout=30, cwd=ROOT)
        assert encoded.returncode == 0, encoded.stderr
        assert os.read(controller, 4).startswith(b"AgR4")
    finally:
        os.close(controller)
        os.close(terminal)


# ---------------------------------------------------------------------------------------------------------
# signals in the middle of a large decrypt


@pytest.fixture
def large_message(tmp_path: Path, keyring: envelope.Keyring) -> bytes:
    plaintext = os.urandom(1024 * 1024) * 24  # 24 MiB; several 4 MiB batches reach the output before the end
    return envelope.encrypt(plaintext, keyring=keyring, frame_length=64 * 1024)


@pytest.fixture
def stalled_decrypt(tmp_path: Path, key: Path, large_message: bytes, request: pytest.FixtureRequest
                    ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A decrypt reading from a pipe that has delivered half the message, stopped while it writes plaintext."""
    destination = tmp_path / "plain.out"
    if getattr(request, "param", "new") == "existing":
        destination.write_bytes(b"the previous version")
    process = subprocess.Popen([*CLI, "decrypt", "-k", str(key), "-o", str(destination), "--force"],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert process.stdin is not None
    half = len(large_message) // 2
    process.stdin.write(large_message[:half])
    process.stdin.flush()
    deadline = time.monotonic() + 30
    while partial_output_bytes(process.pid, tmp_path) == 0:  # until plaintext is in the temporary file
        if time.monotonic() > deadline:
            pytest.fail("the decrypt never started writing")
        time.sleep(0.02)
    yield process, destination
    if process.poll() is None:
        process.kill()
    process.wait(10)


@pytest.mark.parametrize("stalled_decrypt", ["new", "existing"], indirect=True)
def test_sigkill_mid_decrypt_leaves_the_destination_untouched(
        tmp_path: Path, stalled_decrypt: tuple[subprocess.Popen[bytes], Path]) -> None:
    process, destination = stalled_decrypt
    existed = destination.exists()
    process.send_signal(signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL
    if existed:
        assert destination.read_bytes() == b"the previous version"
    else:
        assert not destination.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".envelope-tmp")]
    if unnamed_files_work(tmp_path):
        assert leftovers == []  # the unnamed temporary file died with the process: no partial plaintext on disk
    else:  # a named temporary file stays behind; its partial plaintext is private
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in leftovers)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_remove_the_temporary_file(
        tmp_path: Path, stalled_decrypt: tuple[subprocess.Popen[bytes], Path], signum: int, code: int) -> None:
    process, destination = stalled_decrypt
    process.send_signal(signum)
    assert process.wait(10) == code
    assert process.stderr is not None
    stderr = process.stderr.read()
    one_error_line(stderr, "temporary files were removed")
    assert not destination.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".envelope-tmp")] == []


# ---------------------------------------------------------------------------------------------------------
# many files in worker processes


def test_workers_process_many_files(tmp_path: Path, key: Path) -> None:
    src = tmp_path / "src"
    files = {f"d{i % 3}/f{i:03d}": os.urandom(i * 97) for i in range(60)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    meta = tmp_path / "meta.jsonl"
    result = envelope_cli("encrypt", "-r", src, "-o", tmp_path / "enc", "-k", key, "--workers", "2",
                          "--metadata-output", meta)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in meta.read_text().splitlines()]
    assert sorted(r["input"] for r in records) == sorted(str(src / rel) for rel in files)
    (tmp_path / "enc" / "d1" / "f001.encrypted").write_bytes(b"not a message")
    result = envelope_cli("decrypt", "-r", tmp_path / "enc", "-o", tmp_path / "dec", "-k", key, "--workers", "2")
    assert result.returncode == 1
    one_error_line(result.stderr, "f001.encrypted: the input is not an ESDK message")
    got = {str(p.relative_to(tmp_path / "dec")): p.read_bytes() for p in (tmp_path / "dec").rglob("*")
           if p.is_file()}
    assert got == {rel: data for rel, data in files.items() if rel != "d1/f001"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "dec").rglob("f*"))


def test_sigterm_stops_the_workers_and_keeps_finished_files(tmp_path: Path, key: Path,
                                                            keyring: envelope.Keyring) -> None:
    inputs = []
    for i in range(12):
        inputs.append(tmp_path / f"f{i:02d}")
        inputs[-1].write_bytes(os.urandom(70_000))
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)  # nobody writes it: the worker that opens it waits, so the run is still going
    out = tmp_path / "out"
    process = subprocess.Popen([*CLI, "encrypt", *map(str, inputs), str(fifo), "-o", str(out), "-k", str(key),
                                "--workers", "2"], stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 30
    while len(list(out.glob("f*.encrypted"))) < len(inputs):
        if time.monotonic() > deadline:
            pytest.fail("the workers did not finish the regular files within 30 s")
        time.sleep(0.02)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 143
    assert process.stderr is not None
    one_error_line(process.stderr.read(), "terminated by SIGTERM; temporary files were removed")
    assert sorted(p.name for p in out.iterdir()) == [f"{p.name}.encrypted" for p in inputs]  # no temporary file
    for path in inputs:
        assert envelope.decrypt((out / f"{path.name}.encrypted").read_bytes(), keyring=keyring).plaintext \
            == path.read_bytes()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
                   for pid in workers)


def test_programs_the_cli_starts_get_the_signals_unblocked() -> None:
    """cli/envelope_cli/signals.py blocks SIGINT, SIGTERM and SIGHUP in the CLI's threads; a child started through
    subprocess.Popen (keywords, or arguments up to its 7th positional, preexec_fn) starts with them unblocked,
    and a caller's own preexec_fn is left alone."""
    probe = (
        "import subprocess, sys\nfrom envelope_cli import signals\nsignals.install()\n"
        "read = ['grep', 'SigBlk', '/proc/self/status']\n"
        "print(subprocess.run(read, capture_output=True).stdout.decode().split()[1])\n"
        "p = subprocess.Popen(read, -1, None, None, subprocess.PIPE, None)\n"
        "print(p.communicate()[0].decode().split()[1])\n"
        "p = subprocess.Popen(read, -1, None, None, subprocess.PIPE, None, None)\n"
        "print(p.communicate()[0].decode().split()[1])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    masks = [int(line, 16) for line in result.stdout.decode().split()]
    wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    assert [[s.name for s in wanted if mask & 1 << (s - 1)] for mask in masks] == [[], [], sorted(
        s.name for s in wanted)]  # the last passed preexec_fn=None positionally: nothing is added for it


# ---------------------------------------------------------------------------------------------------------
# start-up: heavy modules stay unimported


def _modules_after(*args: str, cwd: Path) -> set[str]:
    probe = ("import sys\nsys.argv = ['envelope', *sys.argv[1:]]\nfrom envelope_cli.main import run\n"
             "try:\n    run(exit_now=False)\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, timeout=60, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return set(result.stderr.decode().rsplit("MODULES ", 1)[1].split())


def _packages_after(*args: str, cwd: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules_after(*args, cwd=cwd)}


def test_start_up_imports_only_what_is_needed(tmp_path: Path, key: Path, keyring: envelope.Keyring) -> None:
    version = _packages_after("--version", cwd=tmp_path)
    assert "envelope_cli" in version and not version & {"typer", "envelope", "rich", "cryptography"}
    (tmp_path / "m").write_bytes(envelope.encrypt(b"x" * 1024, keyring=keyring))
    decrypt = _modules_after("decrypt", "m", "-k", str(key), "-o", "out", cwd=tmp_path)
    assert (tmp_path / "out").read_bytes() == b"x" * 1024
    packages = {name.split(".")[0] for name in decrypt}
    assert {"typer", "envelope", "envelope_cli"} <= packages
    assert not packages & {"rich", "boto3", "botocore", "pydantic", "aws_encryption_sdk", "multiprocessing"}, decrypt
    # file to file with file: keys needs none of the AWS side of the library (s3://, ssm:, KMS): ~10 ms a run
    aws_side = {"envelope.s3", "envelope.aws", "envelope._aws", "envelope._stored", "envelope._loadenv", "logging"}
    assert not decrypt & aws_side, decrypt & aws_side
    encrypt = _modules_after("encrypt", "out", "-k", str(key), "-o", "m2", "--algorithm", "0x0578", cwd=tmp_path)
    assert (tmp_path / "m2").exists() and not encrypt & aws_side, encrypt & aws_side
    rewrap = _modules_after("rewrap", "m2", "--old-key", str(key), "-k", str(key), "-o", "m3", cwd=tmp_path)
    assert (tmp_path / "m3").exists() and not rewrap & aws_side, rewrap & aws_side


def test_shell_completion() -> None:
    env = {**os.environ, "_ENVELOPE_COMPLETE": "complete_bash", "COMP_WORDS": "envelope enc", "COMP_CWORD": "1"}
    result = subprocess.run(CLI, capture_output=True, timeout=30, cwd=ROOT, env=env)
    assert result.returncode == 0 and result.stdout.split() == [b"encrypt", b"encrypt-env"], result
