"""Hostile headers and bodies (issue 7): how much decrypt reads, allocates and takes before it refuses them.

    python -m benchmarks.hostile            # every case, each in a fresh interpreter; prints a table
    python -m benchmarks.hostile --json     # the same as JSON lines
    python -m benchmarks.hostile --case edk-fields-65535-x256

The cases are testkit.hostile's (65,535 EDKs, 65,535-byte EDK fields, a 64 KiB context, frame length 2^32 - 1,
a non-framed body of 2^36 bytes, frames that stop or skip numbers), generated as they are read, so declaring
12 GB costs nothing. Decrypt runs with the default limits (envelope.DEFAULT_MAX_*) unless the case raises one
on purpose. Peak RSS is the child's own ``ru_maxrss``, reported with its growth over the same process just
before the decrypt (interpreter, imports and the source already in place). tests/api/test_hardening_limits.py
runs the same cases in-process and checks what is deterministic: the error class, the bytes read, the keyring
calls and the Python allocations (tracemalloc).
"""

from __future__ import annotations

import argparse
import json

from testkit.hostile import CASES, measure


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES],
                        help="run only this case (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    names = args.case or [c.name for c in CASES]
    if not args.json:
        print(f"{'case':34} {'input':>10} {'read':>10} {'refused with':14} {'keyring':>7} "
              f"{'peak RSS':>9} {'growth':>8} {'time':>7}")
    for name in names:
        r = measure(name)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['case']:34} {_size(r['input']):>10} {_size(r['read']):>10} {r['error'] or 'nothing':14} "
                  f"{r['keyring_calls']:>7} {r['maxrss_kib'] / 1024:>6.1f} MiB {r['growth_kib'] / 1024:>5.1f} MiB "
                  f"{r['seconds']:>6.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
