"""The ``many`` group (issue 16): ``envelope encrypt -r`` / ``decrypt -r`` over many files, by worker count.

Two sets, each its own folder of random files: ``10 x --files`` files of 16 KiB (10,000 by default), where the
per-file cost dominates, and ``--files`` files of 1 MiB (1,000), where the bytes do. Each set is encrypted and
decrypted with ``--workers 1``, ``--workers 2`` and the default worker count (no ``--workers``), and copied with
``cp -r`` beside them, all round-robin in the same run. One run over a single 16 KiB file gives the fixed cost of
a command (start-up, planning), so the notes can split each figure into that and the cost per file:

    seconds = fixed + files x (per_file + bytes x per_byte)

solved from the two sets (same fixed cost, same per-file and per-byte cost): the per-file overhead in µs is
what a file costs besides its bytes (open, header, key wrap, temporary file, link, close). Each run's CPU
seconds (user + system, the command and its worker processes) go beside its wall time, in results.json
(``cpu_seconds``) and the notes: on a shared machine they show the work when the wall clock shows the load.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from . import tools
from .report import fmt_size
from .tools import CommandFailed, Run, Skip

if TYPE_CHECKING:
    from .harness import Bench, Case

__all__ = ["SETS", "group_many"]


class FileSet(NamedTuple):
    name: str  # the id part: many/<name>/...
    scale: int  # files = scale x --files
    size: int  # bytes per file


SETS = (FileSet("16k", 10, 16 * 1024), FileSet("1m", 1, 1024 * 1024))
#: (id part, flags): --workers 1, --workers 2, and the default (no --workers)
WAYS = (("workers-1", ["--workers", "1"]), ("workers-2", ["--workers", "2"]), ("default", []))


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def _expect(folder: Path, count: int) -> Callable[[], None]:
    def check() -> None:
        found = _files(folder)
        if found != count:
            raise ValueError(f"{folder.name} holds {found} files, expected {count}")
    return check


def _source(b: Bench, name: str, count: int, size: int) -> Path:
    src = b.ws / f"many-{name}-in"
    if not src.exists():
        b.log(f"writing {count} files of {fmt_size(size)}")
        src.mkdir()
        for i in range(count):
            tools.write_random(src / f"f{i:05d}.bin", size)
    return src


def group_many(b: Bench) -> None:
    from .harness import CONTEXT_ARG, Case

    try:
        exe = b.envelope_cli()
    except Skip as exc:
        b.skip("many files", str(exc))
        return
    key = b.key()
    keys = ["--key", f"file:{key}"]
    cases: list[Case] = []
    counts: dict[str, tuple[int, int]] = {}
    for fs in SETS:
        count = fs.scale * b.args.files
        counts[fs.name] = (count, fs.size)
        src = _source(b, fs.name, count, fs.size)
        ct = b.ws / "ct" / f"many-{fs.name}-ct"
        if not ct.exists():
            b.log(f"preparing {count} encrypted files of {fmt_size(fs.size)}")
            try:
                tools.run_command([exe, "encrypt", "-r", str(src), "-o", str(ct), *keys, "-c", CONTEXT_ARG])
                _expect(ct, count)()
            except (CommandFailed, ValueError) as exc:
                b.skip(f"many files ({fs.name})", f"envelope encrypt -r failed: {exc}")
                continue
        what = f"{count} x {fmt_size(fs.size)}"
        for way, flags in WAYS:
            for op, folder in (("encrypt", src), ("decrypt", ct)):
                dst = b.out(f"many-{fs.name}-{op}-{way}")
                cmd = [exe, op, "-r", str(folder), "-o", str(dst), *keys, *flags,
                       *(["-c", CONTEXT_ARG] if op == "encrypt" else [])]
                cases.append(Case(f"many/{fs.name}/{way}/{op}", f"{op} -r {what}, "
                                  f"{' '.join(flags) or 'default workers'}", "files/s", count, _runner(cmd, dst),
                                  b.removing(dst), _expect(dst, count), True,
                                  {"files": count, "file_size": fs.size, "workers": way}, writes=count * fs.size,
                                  reads=(folder,)))
        dst = b.out(f"many-{fs.name}-cp")
        cases.append(Case(f"many/{fs.name}/cp", f"cp -r {what}", "files/s", count,
                          lambda src=src, dst=dst: tools.run_command(["cp", "-r", str(src), str(dst)]),
                          b.removing(dst), _expect(dst, count), False, {"files": count, "file_size": fs.size},
                          writes=count * fs.size, reads=(src,)))
    one = b.ws / "many-one-in"
    if not one.exists():
        one.mkdir()
        tools.write_random(one / "f00000.bin", SETS[0].size)
    dst = b.out("many-one")
    cases.append(Case("many/one/workers-1/encrypt", f"encrypt -r 1 x {fmt_size(SETS[0].size)}, --workers 1", "ms",
                      1, _runner([exe, "encrypt", "-r", str(one), "-o", str(dst), *keys, "--workers", "1", "-c",
                                  CONTEXT_ARG], dst), b.removing(dst), _expect(dst, 1), True,
                      {"files": 1, "file_size": SETS[0].size}))
    cpu: dict[str, list[float]] = {}
    for case in cases:
        case.run = _counting_cpu(case.run, cpu.setdefault(case.id, []))
    b.measure(cases, b.args.reps)
    for case_id, seconds in cpu.items():
        if case_id in b.results and seconds:
            b.results[case_id]["cpu_seconds"] = [round(s, 4) for s in seconds]
    _notes(b, counts)


def _counting_cpu(run: Callable[[], Run], into: list[float]) -> Callable[[], Run]:
    """``run``, keeping each run's CPU seconds (all its processes): on a shared machine the wall clock says
    how long it took, this says how much work it was."""
    def counted() -> Run:
        result = run()
        if result.cpu is not None:
            into.append(result.cpu)
        return result
    return counted


def _runner(cmd: list[str], dst: Path) -> Callable[[], Run]:
    def run() -> Run:
        dst.mkdir(parents=True, exist_ok=True)
        return tools.run_command(cmd)
    return run


def _median(b: Bench, case: str, key: str = "seconds") -> float | None:
    row = b.results.get(case)
    return statistics.median(row[key]) if row and row.get(key) else None


def _split(fixed: float | None, per_file: dict[int, float]) -> str | None:
    """From seconds per file of the two sets (the command's fixed cost taken off): what a file costs besides
    its bytes, and the bytes' speed."""
    if fixed is None or len(per_file) != 2:
        return None
    (s1, x1), (s2, x2) = sorted(per_file.items())
    per_byte = (x2 - x1) / (s2 - s1)
    if per_byte <= 0:
        return "n/a (per-byte cost not positive)"
    return f"{(x1 - s1 * per_byte) * 1e6:,.0f} µs + {1 / per_byte / 1e6:,.0f} MB/s"


def _notes(b: Bench, counts: dict[str, tuple[int, int]]) -> None:
    """Files/s and µs per file of every way beside cp -r; the per-file overhead, solved from the two sets, in
    wall time and in CPU time (the fixed cost of a command from the one-file run)."""
    one = "many/one/workers-1/encrypt"
    fixed, fixed_cpu = _median(b, one), _median(b, one, "cpu_seconds")
    for op in ("encrypt", "decrypt"):
        for way, _ in WAYS:
            parts: list[str] = []
            wall: dict[int, float] = {}
            cpu: dict[int, float] = {}
            for name, (count, size) in counts.items():
                case = f"many/{name}/{way}/{op}"
                t, c, cp = _median(b, case), _median(b, case, "cpu_seconds"), _median(b, f"many/{name}/cp")
                if t is None:
                    continue
                text = f"{name}: {count / t:,.0f} files/s, {t * 1e6 / count:,.0f} µs/file"
                if c is not None:
                    text += f" (CPU {c * 1e6 / count:,.0f} µs/file)"
                    if fixed_cpu is not None:
                        cpu[size] = (c - fixed_cpu) / count
                if cp is not None:
                    text += f", cp -r {count / cp:,.0f} files/s"
                parts.append(text)
                if fixed is not None:
                    wall[size] = (t - fixed) / count
            split_wall, split_cpu = _split(fixed, wall), _split(fixed_cpu, cpu)
            if split_wall:
                parts.append(f"per file: {split_wall} (wall), {split_cpu or 'n/a'} (CPU); fixed per command "
                             f"{fixed:.2f} s wall, {fixed_cpu or 0:.2f} s CPU")
            if parts:
                b.notes.append(f"many {op}, {way}: " + "; ".join(parts))
