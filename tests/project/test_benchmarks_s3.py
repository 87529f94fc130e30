"""Smoke test for the benchmark's s3 group: it runs against its own moto_server, measures envelope.s3 beside
boto3's own transfers, judges the issue-13 ratios, and cleans up. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_s3_group(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    cmd = [sys.executable, "-m", "benchmarks", "--groups", "s3", "--size", "3.5MiB", "--reps", "1", "--tmp",
           str(work), "--out", str(out), "--no-plot", "--no-install"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["skipped"] == []
    results = doc["results"]
    ids = {"s3/boto3/upload", "s3/envelope/encrypt", "s3/boto3/download", "s3/envelope/decrypt", "s3/envelope/range"}
    assert set(results) == ids
    for rid in ids:
        assert results[rid]["value"] > 0
        assert results[rid]["rss_mib"] > 0  # each run's own peak RSS
    assert results["s3/envelope/range"]["unit"] == "ms"
    # 1 MiB from the middle of 3.5 MiB (1 MiB frames): the header's first read, then the two frames it spans
    extra = results["s3/envelope/range"]["extra"]
    assert "fetched 2.0 MiB in 2 requests to decrypt 1 MiB from a 3.5 MiB object" in extra
    ratios = {r["label"]: r for r in doc["ratios"]}
    for label in ("S3 encrypt local -> S3: envelope.s3 / boto3 upload_file (no encryption)",
                  "S3 decrypt S3 -> local: envelope.s3 / boto3 download_file (no encryption)"):
        assert ratios[label]["status"] in ("PASS", "MISS")
        assert ratios[label]["target"] == ">= 0.8x"
    rss = ratios["peak RSS, every envelope.s3 run (64 MiB + 2 part buffers of 8 MiB)"]
    assert rss["status"] in ("PASS", "MISS") and rss["value"] > 0
    assert "== s3" in done.stdout
    assert list(work.iterdir()) == []
