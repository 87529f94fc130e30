"""Smoke test for the benchmark harness (benchmarks/): it runs, writes results.json, and cleans up.

No timing is asserted: figures from a tiny input on a shared machine mean nothing. What is asserted is the
shape of the output, that the measured runs really did their work, and the logic that judges the targets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.harness import parse_size

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path, Path]:
    base = tmp_path_factory.mktemp("bench")
    work, out = base / "work", base / "out"
    work.mkdir()
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--size", "64KiB", "--reps", "1", "--groups",
           "limits,suites", "--tmp", str(work), "--out", str(out), "--no-plot", "--no-install"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "results.json").read_text()), done.stdout, work, out


def test_results_json_has_the_documented_keys(quick_run: tuple[dict, str, Path, Path]) -> None:
    doc, _, _, _ = quick_run
    for key in ("schema", "date", "duration_seconds", "machine", "tools", "config", "results", "ratios",
                "skipped", "notes"):
        assert key in doc, key
    machine = doc["machine"]
    for key in ("cpu", "cores", "python", "filesystem", "libraries", "temp_folder"):
        assert key in machine, key
    assert machine["filesystem"]["type"]
    assert doc["config"]["groups"] == ["limits", "suites"]
    assert doc["config"]["size"] == 64 * 1024
    assert doc["config"]["quick"] is True


def test_every_case_of_the_chosen_groups_was_measured(quick_run: tuple[dict, str, Path, Path]) -> None:
    doc, _, _, _ = quick_run
    results = doc["results"]
    expected = {f"limits/bare-memory/{op}" for op in ("encrypt", "decrypt")}
    expected |= {f"limits/bare-file/{op}" for op in ("encrypt", "decrypt")}
    expected |= {f"suites/0x{suite:04x}-{frame}/{op}" for suite in (0x0478, 0x0578)
                 for frame in ("4KiB", "64KiB", "1MiB") for op in ("encrypt", "decrypt")}
    assert expected <= set(results), sorted(expected - set(results))
    assert doc["skipped"] == []
    for rid in expected:
        row = results[rid]
        assert row["unit"] == "MB/s"
        assert row["bytes"] == 64 * 1024
        assert row["value"] > 0
        assert len(row["seconds"]) == 1
    # envelope runs are in child processes whose own peak RSS was read
    assert all(results[r]["envelope"] and results[r]["rss_mib"] > 0 for r in expected if r.startswith("suites/"))
    # groups not chosen were not run
    assert not any(r.startswith(("files/", "pipes/", "startup/", "many/", "kms/")) for r in results)


def test_ratios_are_judged_and_printed(quick_run: tuple[dict, str, Path, Path]) -> None:
    doc, stdout, _, _ = quick_run
    statuses = {r["label"]: r["status"] for r in doc["ratios"]}
    assert set(statuses.values()) <= {"PASS", "MISS", "info", "n/a"}
    # the envelope CLI was not part of this run: its ratios are n/a, not a PASS
    assert statuses["file encrypt: envelope CLI / ESDK CLI"] == "n/a"
    assert "== ratios and targets" in stdout
    assert "bare AES-GCM encrypt, in memory" in stdout
    assert "ext" in stdout or doc["machine"]["filesystem"]["type"] in stdout


def test_temporary_files_are_removed(quick_run: tuple[dict, str, Path, Path]) -> None:
    _, _, work, out = quick_run
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_report_mode_rerenders_a_results_file(quick_run: tuple[dict, str, Path, Path], tmp_path: Path) -> None:
    _, _, _, out = quick_run
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--report", str(out / "results.json"), "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== ratios and targets" in done.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in done.stdout
        assert not (tmp_path / "benchmark.png").exists()
    else:
        assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parse_size() -> None:
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("64M") == 64 << 20
    assert parse_size("256MiB") == 256 << 20
    assert parse_size("1048576") == 1 << 20
    assert parse_size("2KB") == 2000
    with pytest.raises(Exception, match="not a size"):
        parse_size("lots")


def test_targets_pass_and_miss() -> None:
    """The judging logic on made-up numbers: >= 10x the ESDK CLI, <= half its start-up, RSS <= 64 MiB."""
    size = 1 << 30

    def row(rid: str, value: float, **extra: object) -> dict:
        return {"id": rid, "value": value, **extra}

    results = {
        "files/envelope-cli/encrypt": row("files/envelope-cli/encrypt", 2000.0, envelope=True, rss_mib=40.0,
                                          bytes=size),
        "files/esdk-cli/encrypt": row("files/esdk-cli/encrypt", 150.0),
        "files/envelope-cli/decrypt": row("files/envelope-cli/decrypt", 1000.0, envelope=True, rss_mib=80.0,
                                          bytes=size),
        "files/esdk-cli/decrypt": row("files/esdk-cli/decrypt", 150.0),
        "startup/envelope/decrypt-local": row("startup/envelope/decrypt-local", 100.0),
        "startup/esdk-cli/decrypt-kms": row("startup/esdk-cli/decrypt-kms", 800.0),
    }
    ratios = {r["label"]: r for r in report.compute_ratios(results, 1 << 20, size)}
    assert ratios["file encrypt: envelope CLI / ESDK CLI"]["status"] == "PASS"
    assert ratios["file encrypt: envelope CLI / ESDK CLI"]["value"] == pytest.approx(2000 / 150, rel=1e-3)
    assert ratios["file decrypt: envelope CLI / ESDK CLI"]["status"] == "MISS"
    startup = ratios["start-up: envelope decrypt 1 KiB, local key / ESDK CLI decrypt 1 KiB, KMS (time)"]
    assert (startup["value"], startup["status"]) == (0.125, "PASS")
    rss = next(r for r in ratios.values() if r["label"].startswith("peak RSS, every envelope run at full size"))
    assert (rss["value"], rss["status"], rss["numerator"]) == (80.0, "MISS", "files/envelope-cli/decrypt")
    assert ratios["pipe encrypt: envelope CLI / cat | cat"]["status"] == "n/a"


def test_no_benchmark_dependency_in_core_or_test_extras() -> None:
    text = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+; the package supports 3.10

    def block(name: str) -> str:
        found = re.search(rf"^{name} = \[(.*?)^\]", text, re.S | re.M)
        assert found, name
        return found.group(1)

    assert "matplotlib" not in block("dependencies")
    assert "matplotlib" not in block("test")
    assert "matplotlib" in block("bench")
    assert os.path.isfile(ROOT / "benchmarks" / "__main__.py")


def test_a_pipe_run_counts_the_cpu_of_every_process_in_it(tmp_path: Path) -> None:
    """The CPU line under the pipe rows is what shows a pipeline is CPU-bound on 2 cores: it must include the
    middle command's CPU (here 0.3 s of busy work), not only the parent's, and the bytes must flow through."""
    from benchmarks import tools

    source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(os.urandom(256 * 1024))
    busy = ("import sys, time\n"
            "data = sys.stdin.buffer.read()\n"
            "end = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\n"
            "sys.stdout.buffer.write(data)\n")
    run = tools.run_pipe([sys.executable, "-c", busy], source, destination)
    assert destination.read_bytes() == source.read_bytes()
    assert run.cpu is not None and run.cpu >= 0.3
    line = tools.pipeline_cpu(run)
    assert f"{run.cpu:.2f} s CPU" in line and "cores busy" in line
