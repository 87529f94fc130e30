"""The ``dask`` group: many small files through ``--dask`` against ``--workers 2`` on the same data, same run.

Three ways to run ``envelope encrypt -r`` / ``decrypt -r`` over the same set as ``many`` (``--files`` files of
64 KiB, a set of its own so that the ``many`` group can change): ``--workers 2``; ``--dask tcp://...`` against a
standing 2-worker ``LocalCluster`` (one thread each) that a helper process keeps up for the group, which gives
the per-task cost of the Dask path (submitting, shipping the run and the outcomes, the scheduler); and
``--dask local:2``, which also starts and stops its own cluster (what a one-off run pays). Encrypting one file
both ways gives the fixed cost (importing distributed, connecting). The notes under the table turn the medians
into the overhead per file against ``--workers 2``: in all, and at the margin ((N files - 1 file) per file).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import tools
from .report import fmt_size
from .tools import Run, Skip

if TYPE_CHECKING:
    from .harness import Bench

__all__ = ["group_dask"]

#: The helper: a LocalCluster made as --dask local:2 makes it, its address on stdout, up until stdin closes.
_CLUSTER = """
import sys
from envelope.batch.cluster import start_local
if __name__ == "__main__":
    cluster = start_local(2)
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
    cluster.close()
"""


def _standing_cluster(b: Bench) -> tuple[subprocess.Popen[bytes], str]:
    proc = tools._spawn([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, cwd=b.ws)
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    if not address.startswith("tcp://"):
        _stop(proc)
        raise Skip("the helper's LocalCluster did not start")
    return proc, address


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # the helper closes its cluster and exits
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
    tools._LIVE.pop(proc.pid, None)


def group_dask(b: Bench) -> None:
    from .harness import CONTEXT_ARG, Case

    try:
        exe = b.envelope_cli()
        import distributed

        b.tools["distributed"] = f"distributed {distributed.__version__}"
    except (Skip, ImportError) as exc:
        b.skip("dask", f"{exc} (pip install -e '.[bench]')")
        return
    key = b.key()
    count, each = b.args.files, 64 * 1024
    src = b.ws / "dask-in"
    if not src.exists():
        b.log(f"writing {count} files of {fmt_size(each)}")
        src.mkdir()
        for i in range(count):
            tools.write_random(src / f"f{i:05d}.bin", each)
    one = b.ws / "dask-one"
    if not one.exists():
        one.mkdir()
        tools.write_random(one / "f00000.bin", each)
    ct = b.ws / "ct" / "dask-ct"
    if not ct.exists():
        b.log(f"preparing {count} encrypted files")
        tools.run_command([exe, "encrypt", "-r", str(src), "-o", str(ct), "--key", f"file:{key}", "-c", CONTEXT_ARG])
    try:
        helper, address = _standing_cluster(b)
    except Skip as exc:
        b.skip("dask", str(exc))
        return
    try:
        ways = {"workers-2": ["--workers", "2"], "cluster-2": ["--dask", address], "local-2": ["--dask", "local:2"]}
        cases = []
        for way, flags in ways.items():
            for op, folder in (("encrypt", src), ("decrypt", ct)):
                if way == "local-2" and op == "decrypt":
                    continue  # its start-up cost is the same either way
                dst = b.out(f"dask-{op}-{way}")
                cmd = [exe, op, "-r", str(folder), "-o", str(dst), "--key", f"file:{key}", *flags,
                       *(["-c", CONTEXT_ARG] if op == "encrypt" else [])]
                cases.append(Case(f"dask/{way}/{op}", f"{op} -r {count} x {fmt_size(each)}, {' '.join(flags)}",
                                  "files/s", count, _runner(cmd, dst), b.removing(dst), _expect(dst, count), True,
                                  {"files": count, "file_size": each, "executor": way}))
            if way != "local-2":
                dst = b.out(f"dask-one-{way}")
                cmd = [exe, "encrypt", "-r", str(one), "-o", str(dst), "--key", f"file:{key}", *flags]
                cases.append(Case(f"dask/{way}/one", f"encrypt -r 1 x {fmt_size(each)}, {' '.join(flags)}", "ms", 1,
                                  _runner(cmd, dst), b.removing(dst), _expect(dst, 1), True,
                                  {"files": 1, "file_size": each, "executor": way}))
        b.measure(cases, b.args.reps)
    finally:
        _stop(helper)
    _note_overheads(b, count)


def _runner(cmd: list[str], dst: Path) -> Callable[[], Run]:
    def run() -> Run:
        dst.mkdir(parents=True, exist_ok=True)
        return tools.run_command(cmd)
    return run


def _expect(folder: Path, count: int) -> Callable[[], None]:
    def check() -> None:
        found = sum(1 for p in folder.rglob("*") if p.is_file())
        if found != count:
            raise ValueError(f"{folder.name} holds {found} files, expected {count}")
    return check


def _median(b: Bench, case: str) -> float | None:
    row = b.results.get(case)
    return statistics.median(row["seconds"]) if row else None


def _note_overheads(b: Bench, count: int) -> None:
    """Per file, against --workers 2: (median seconds of the Dask way - median of --workers 2) / files; and the
    marginal cost, without what one file costs either way (the fixed part: imports, connecting)."""
    values = {case: _median(b, f"dask/{case}") for case in
              ("workers-2/one", "cluster-2/one", "workers-2/encrypt", "cluster-2/encrypt")}
    if None not in values.values() and count > 1:
        v = {k: float(x or 0.0) for k, x in values.items()}
        fixed = v["cluster-2/one"] - v["workers-2/one"]
        marginal = ((v["cluster-2/encrypt"] - v["cluster-2/one"]) - (v["workers-2/encrypt"] - v["workers-2/one"]))
        b.notes.append(f"dask encrypt, cluster-2 vs --workers 2: fixed {fixed:+.2f} s per run (one file each "
                       f"way), then {marginal * 1e3 / (count - 1):+.2f} ms per further file")
    for op in ("encrypt", "decrypt"):
        base = b.results.get(f"dask/workers-2/{op}")
        for way in ("cluster-2", "local-2"):
            other = b.results.get(f"dask/{way}/{op}")
            if not base or not other:
                continue
            extra = statistics.median(other["seconds"]) - statistics.median(base["seconds"])
            spread = (max(other["seconds"]) - min(other["seconds"])) + (max(base["seconds"]) - min(base["seconds"]))
            b.notes.append(f"dask {op}, {way} vs --workers 2: {extra * 1e3 / count:+.2f} ms per file "
                           f"({extra:+.2f} s over {count} files; min-max spread of the two: {spread:.2f} s)")
