"""envelope.batch.encrypt_many / decrypt_many on this machine's cores: planned as ``envelope -r`` plans, run by
the CLI's own task runner (the Dask executor is in test_dask.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from envelope_cli.app import app
from helpers import read_tree, write_tree
from typer.testing import CliRunner

import envelope
import envelope.batch
from envelope.batch import BatchFailed, decrypt_many, encrypt_many
from testkit.messages import flip_bit

runner = CliRunner()


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "batch.key"
    envelope.write_key_file(str(path), envelope.generate_aes_key_file("envelope", "batch"))
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return write_tree(root, {"a.txt": b"alpha" * 100, "sub/b.bin": os.urandom(70_000), "sub/deeper/c": b"",
                             ".hidden": b"h"})


@pytest.mark.parametrize("workers", [1, 2])
def test_a_folder_round_trips_with_the_cli_names(tmp_path: Path, key: Path, workers: int) -> None:
    files = _tree(tmp_path / "in")
    report = encrypt_many(str(tmp_path / "in"), str(tmp_path / "enc"), keys=[f"file:{key}"],
                          context={"app": "batch"}, workers=workers)
    assert report.ok and len(report.done) == 4
    assert sorted(read_tree(tmp_path / "enc")) == sorted(f"{name}.encrypted" for name in files)
    # the CLI plans the same names for the same tree, and reads what the library wrote
    cli = runner.invoke(app, ["encrypt", "-r", str(tmp_path / "in"), "-o", str(tmp_path / "cli"), "-k", str(key),
                              "-c", "app=batch"])
    assert cli.exit_code == 0, cli.stderr
    assert sorted(read_tree(tmp_path / "cli")) == sorted(read_tree(tmp_path / "enc"))
    back = runner.invoke(app, ["decrypt", "-r", str(tmp_path / "enc"), "-o", str(tmp_path / "dec"), "-k", str(key),
                               "-c", "app=batch"])
    assert back.exit_code == 0, back.stderr
    assert read_tree(tmp_path / "dec") == files
    again = decrypt_many(str(tmp_path / "cli"), str(tmp_path / "dec2"), keys=[str(key)],
                         required_context={"app": "batch"}, workers=workers)
    assert read_tree(tmp_path / "dec2") == files and len(again.done) == 4
    result = next(r for r in again.results if r.source.endswith("b.bin.encrypted"))
    assert result.metadata["header"]["encryption_context"] == {"app": "batch"}
    assert result.metadata["bytes_out"] == 70_000
    assert (os.stat(tmp_path / "dec2" / "sub" / "b.bin").st_mode & 0o777) == 0o600


def test_pairs_and_a_failure_that_fails_alone(tmp_path: Path, key: Path) -> None:
    (tmp_path / "x").write_bytes(b"x" * 5000)
    (tmp_path / "y").write_bytes(b"y" * 5000)
    encrypt_many([(str(tmp_path / "x"), str(tmp_path / "out" / "x.e")), (str(tmp_path / "y"), str(tmp_path / "y.e"))],
                 keys=[f"file:{key}"])
    message = (tmp_path / "out" / "x.e").read_bytes()
    (tmp_path / "out" / "x.e").write_bytes(flip_bit(message, 8 * (len(message) - 20)))
    pairs = [(str(tmp_path / "out" / "x.e"), str(tmp_path / "dec" / "x")),
             (str(tmp_path / "y.e"), str(tmp_path / "dec" / "y"))]
    with pytest.raises(BatchFailed) as caught:
        decrypt_many(pairs, keys=[f"file:{key}"], workers=2)
    report = caught.value.report
    assert [r.ok for r in report.results] == [False, True]
    assert report.failed[0].code != 0 and "authenticate" in (report.failed[0].error or "")
    assert not (tmp_path / "dec" / "x").exists() and (tmp_path / "dec" / "y").read_bytes() == b"y" * 5000
    assert str(caught.value).startswith(str(tmp_path / "out" / "x.e"))
    unchecked = decrypt_many(pairs, keys=[f"file:{key}"], skip_existing=True, check=False)
    assert [(r.ok, r.skipped) for r in unchecked.results] == [(True, "the output exists"), (False, None)]


def test_planning_refuses_before_any_work(tmp_path: Path, key: Path) -> None:
    _tree(tmp_path / "in")
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "a.txt.encrypted").write_bytes(b"mine")
    with pytest.raises(envelope.UsageError, match="already exists"):
        encrypt_many(str(tmp_path / "in"), str(tmp_path / "enc"), keys=[f"file:{key}"])
    assert read_tree(tmp_path / "enc") == {"a.txt.encrypted": b"mine"}  # nothing else was written
    with pytest.raises(envelope.UsageError, match="give one of them"):
        encrypt_many(str(tmp_path / "in"), str(tmp_path / "enc"), keys=[f"file:{key}"], force=True,
                     skip_existing=True)
    with pytest.raises(envelope.UsageError, match="standard input"):
        encrypt_many([("-", str(tmp_path / "z"))], keys=[f"file:{key}"])
    resumed = encrypt_many(str(tmp_path / "in"), str(tmp_path / "enc"), keys=[f"file:{key}"], skip_existing=True)
    assert [r.destination for r in resumed.results if r.skipped] == [str(tmp_path / "enc" / "a.txt.encrypted")]
    assert len(resumed.done) == 3 and (tmp_path / "enc" / "a.txt.encrypted").read_bytes() == b"mine"


def test_the_cli_skips_existing_outputs_and_says_so(tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in")
    args = ["encrypt", "-r", str(tmp_path / "in"), "-o", str(tmp_path / "enc"), "-k", str(key)]
    assert runner.invoke(app, args).exit_code == 0
    (tmp_path / "enc" / "sub" / "b.bin.encrypted").unlink()
    before = {name: os.stat(tmp_path / "enc" / name).st_mtime_ns for name in read_tree(tmp_path / "enc")}
    result = runner.invoke(app, [*args, "--skip-existing", "-v", "--metadata-output", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum(line.startswith("envelope: skipped ") for line in lines) == 3
    assert [line for line in lines if line.startswith("envelope: wrote ")] == [
        f"envelope: wrote {str(tmp_path / 'enc' / 'sub' / 'b.bin.encrypted')!r} (70219 bytes)"]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == [str(tmp_path / "in" / "sub" / "b.bin")]
    assert {name: os.stat(tmp_path / "enc" / name).st_mtime_ns for name in before} == before
    assert len(read_tree(tmp_path / "enc")) == len(files)
    both = runner.invoke(app, [*args, "--skip-existing", "--force"])
    assert both.exit_code == 2 and "give one of them" in both.stderr


def test_the_library_does_not_import_the_cli() -> None:
    import subprocess
    import sys

    code = ("import sys, envelope.batch, envelope.batch.jobs, envelope.batch.planning, envelope.batch.workers\n"
            "print(sorted(m for m in sys.modules if m.startswith(('envelope_cli', 'dask', 'distributed', 'typer'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    assert envelope.batch.__all__ == ["BatchFailed", "BatchReport", "BatchResult", "decrypt_many", "encrypt_many"]
