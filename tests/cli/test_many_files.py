"""Issue 16: ``-r`` over many files, the worker processes fed in chunks. Every failure is reported, in plan order,
with the first one's exit code; a tampered file fails alone; the outputs are those of ``--workers 1``. The
default worker count runs a few small files in the one process (never slower than ``--workers 1``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import envelope, key_file
from helpers import read_tree

import envelope as lib
from envelope.batch import workers
from envelope.batch.planning import Task
from envelope.batch.workers import chunk_size, default_workers
from testkit.messages import flip_bit

FILES = 200  # several chunks per worker: chunk_size(200, 2) == 12
BAD_KEY, TAMPERED = (30,), (100, 171)  # exit 3 (no key opens it), exit 1 (fails to authenticate)


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    key_file(tmp_path)
    plain = {f"f{i:03d}.bin": os.urandom(i * 53) for i in range(FILES)}  # f000.bin is empty
    (tmp_path / "in").mkdir()
    for name, data in plain.items():
        (tmp_path / "in" / name).write_bytes(data)
    done = envelope("encrypt", "-r", "in", "-o", "enc", "-k", "k.key", "-c", "app=many", "--workers", "2",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    other = lib.RawAesKeyring("envelope", "other", os.urandom(32))
    for i in BAD_KEY:
        path = tmp_path / "enc" / f"f{i:03d}.bin.encrypted"
        path.write_bytes(lib.encrypt(plain[f"f{i:03d}.bin"], keyring=other, context={"app": "many"}))
    for i in TAMPERED:
        path = tmp_path / "enc" / f"f{i:03d}.bin.encrypted"
        path.write_bytes(flip_bit(path.read_bytes(), (len(path.read_bytes()) - 20) * 8))  # the last frame
    return tmp_path, plain


def test_the_plan_is_fed_in_several_chunks_per_worker() -> None:
    assert chunk_size(FILES, 2) == 12 and FILES // chunk_size(FILES, 2) > 8
    assert chunk_size(10_000, 2) == 64 and chunk_size(3, 2) == 1


@pytest.mark.parametrize("count", ["1", "2"])
def test_every_failure_is_reported_with_the_first_ones_code(encrypted: tuple[Path, dict[str, bytes]],
                                                            count: str) -> None:
    folder, plain = encrypted
    result = envelope("decrypt", "-r", "enc", "-o", f"dec{count}", "-k", "k.key", "-c", "app=many", "--workers",
                      count, cwd=folder)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 3, lines  # f030's (no key), the first failure in plan order
    failed = sorted(BAD_KEY + TAMPERED)
    assert len(lines) == len(failed), lines
    for line, i in zip(lines, failed, strict=True):
        assert line.startswith(f"envelope: error: {os.path.join('enc', f'f{i:03d}.bin.encrypted')}: "), line
    written = read_tree(folder / f"dec{count}")
    assert written == {name: data for name, data in plain.items() if int(name[1:4]) not in failed}


def test_two_workers_write_what_one_writes(encrypted: tuple[Path, dict[str, bytes]]) -> None:
    folder, _ = encrypted
    runs = [envelope("decrypt", "-r", "enc", "-o", f"out{n}", "-k", "k.key", "-c", "app=many", "--workers", n,
                     cwd=folder) for n in ("1", "2")]
    assert runs[0].stderr == runs[1].stderr and runs[0].returncode == runs[1].returncode == 3
    assert read_tree(folder / "out1") == read_tree(folder / "out2")


def _tasks(count: int, size: int | None, where: str = "/data") -> list[Task]:
    return [Task(f"{where}/in/f{i}", f"{where}/out/f{i}.encrypted", size) for i in range(count)]


def test_the_default_runs_little_work_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "cores", lambda: 2)
    assert default_workers() == 2  # nothing to judge: the cores
    assert default_workers(_tasks(20, 16 * 1024)) == 1  # a few small files: starting workers costs more
    assert default_workers(_tasks(10_000, 16 * 1024)) == 2
    assert default_workers(_tasks(40, 1024 * 1024)) == 2  # few files, but many bytes
    assert default_workers(_tasks(1, 1 << 30)) == 1  # one task runs in one process whatever its size
    assert default_workers(_tasks(20, None)) == 2  # sizes unknown: the cores
    assert default_workers(_tasks(20, 1024, "s3://bucket")) == 2  # remote objects: mostly waiting
    monkeypatch.setattr(workers, "cores", lambda: 1)
    assert default_workers(_tasks(10_000, 16 * 1024)) == 1



def test_a_forked_worker_links_through_its_own_descriptors(tmp_path: Path) -> None:
    """Unnamed outputs get their names through /proc/self/fd, opened once per process: a worker forked after
    this process opened it must not use the inherited one, which lists this process's descriptors."""
    from envelope.batch import tempfiles

    tempfiles._proc_fds()  # this process's, as after an inline run
    pid = os.fork()
    if pid == 0:  # the worker: a descriptor this process has and its parent never had
        code = 1
        try:
            fd = os.open(tmp_path, os.O_RDONLY)
            os.stat(str(fd), dir_fd=tempfiles._proc_fds())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_outputs_into_an_empty_folder_are_planned_from_one_listing(tmp_path: Path) -> None:
    """An empty or missing output folder is listed once instead of looking up each output; a folder with
    anything in it is asked name by name, so an existing output is still refused before any work."""
    from envelope.batch.files import LocalFiles

    kind = LocalFiles()
    (tmp_path / "empty").mkdir()
    names = [str(tmp_path / folder / f"f{i}") for folder in ("empty", "missing") for i in range(3)]
    planned = list(kind.plan_outputs(names))
    assert [p.exists for p in planned] == [False] * 6
    assert [p.identity for p in planned] == [kind.plan_output(n).identity for n in names]
    (tmp_path / "empty" / "f1").write_bytes(b"there")
    assert [p.exists for p in kind.plan_outputs(names[:3])] == [False, True, False]
    key_file(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a").write_bytes(b"a")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.encrypted").write_bytes(b"mine")
    refused = envelope("encrypt", "-r", "in", "-o", "out", "-k", "k.key", cwd=tmp_path)
    assert refused.returncode == 2 and b"already exists" in refused.stderr
    assert (tmp_path / "out" / "a.encrypted").read_bytes() == b"mine"
