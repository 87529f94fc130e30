"""The ``signed`` group (issue 16): suite 0x0578 (ECDSA P-384, the ESDK's default) against its own limit.

A signed message needs one SHA-384 pass over every byte of the message, which is slower than AES-GCM here, so
the limit is the SHA-384 rate of the same file, measured in the same run three ways: ``openssl dgst -sha384 f``
(a process, timed from its start to its exit, like the CLI), a ``hashlib.sha384`` loop over 1 MiB ``readinto``
chunks in a fresh child process (timed like the library runs: the loop only), and ``cat f | openssl dgst
-sha384`` (the limit for pipes). ``signed/sha384-fastest`` is the faster of the first two, which the file and
library targets are judged against. Against them: the envelope CLI on files and through ``cat f | envelope |
cat > out``, and ``encrypt_stream`` / ``decrypt_stream`` on files, all with 0x0578 and the default frame length.

Run as a module, it is the hashlib loop: ``python -m benchmarks.signed_group FILE RESULT.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tools
from .tools import Run, Skip

if TYPE_CHECKING:
    from .harness import Bench

__all__ = ["group_signed"]

SUITE = "0x0578"
CHUNK = 1024 * 1024


def _hash_loop(path: str) -> float:
    """Seconds for a ``hashlib.sha384`` of the file, read in 1 MiB chunks (the loop only)."""
    digest = hashlib.sha384()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return time.perf_counter() - start


def _run_hash_loop(plain: Path, scratch: Path) -> Run:
    result = scratch / f"sha384-result-{time.monotonic_ns()}.json"
    try:
        run = tools.run_command([sys.executable, "-m", "benchmarks.signed_group", str(plain), str(result)],
                                env=tools.child_env())
        seconds = float(json.loads(result.read_text())["seconds"])
    finally:
        result.unlink(missing_ok=True)
    return Run(seconds, run.rss_kib)


def group_signed(b: Bench) -> None:
    from .harness import Case, envelope_decrypt_cmd, envelope_encrypt_cmd

    size = b.args.size
    plain, key = b.plain(size), b.key()
    cases: list[Case] = []
    digest_out = b.out("signed-digest")
    cases += [
        Case("signed/openssl-dgst", "openssl dgst -sha384 f", "MB/s", size,
             lambda: tools.run_command(["openssl", "dgst", "-sha384", str(plain)]), reads=(plain,)),
        Case("signed/hashlib", "hashlib.sha384 loop, 1 MiB readinto chunks (child process)", "MB/s", size,
             lambda: _run_hash_loop(plain, b.ws), reads=(plain,)),
        Case("signed/cat-openssl-dgst", "cat f | openssl dgst -sha384", "MB/s", size,
             lambda: tools.run_pipe(["openssl", "dgst", "-sha384"], plain, digest_out), b.removing(digest_out),
             reads=(plain,)),
        # not a limit of the issue's, shown beside it: writing the same bytes to a new file, which every
        # file-to-file row pays and the hash rows do not (on a VM whose freed memory goes back to the host,
        # that first touch of fresh page-cache pages can cost more than the hash)
        b.cp_case("signed/cp", "cp f out (writing the same bytes, no hash)", size, plain, b.out("signed-cp")),
    ]
    base = {"key": str(key), "suite": int(SUITE, 16)}
    params = {"suite": SUITE, "frame": "default"}
    ct = b.prepare(f"{SUITE} ciphertext", lambda p: tools.run_child(
        "envelope", {**base, "op": "encrypt", "input": str(plain), "output": str(p)}, b.ws), "signed.ct")
    for op, src in (("encrypt", plain), ("decrypt", ct)):
        dst = b.out(f"signed-lib.{op}")
        check = b.same_as(plain, dst) if op == "decrypt" else b.bigger_than(plain, dst)
        spec = {**base, "op": op, "input": str(src), "output": str(dst)}
        cases.append(Case(f"signed/envelope-lib/{op}", f"envelope library {op} (stream, files), {SUITE}", "MB/s",
                          size, lambda spec=spec: tools.run_child("envelope", spec, b.ws), b.removing(dst), check,
                          True, params, reads=(src,)))
    try:
        exe = b.envelope_cli()
    except Skip as exc:
        b.skip(f"envelope CLI ({SUITE})", str(exc))
        exe = None
    if exe is not None:
        for op, src in (("encrypt", plain), ("decrypt", ct)):
            def command(s: str, d: str | None, op: str = op) -> list[str]:
                assert exe is not None
                if op == "encrypt":
                    return envelope_encrypt_cmd(exe, key, s, d, suite=SUITE)
                return envelope_decrypt_cmd(exe, key, s, d)

            check_of = b.same_as if op == "decrypt" else b.bigger_than
            dst = b.out(f"signed-cli.{op}")
            cases.append(Case(f"signed/envelope-cli/{op}", f"envelope CLI {op}, file, {SUITE}", "MB/s", size,
                              lambda src=src, dst=dst, command=command: tools.run_command(
                                  command(str(src), str(dst))),
                              b.removing(dst), check_of(plain, dst), True, params, reads=(src,)))
            pipe_dst = b.out(f"signed-pipe.{op}")
            cases.append(Case(f"signed/envelope-pipe/{op}", f"cat f | envelope {op} | cat > out, {SUITE}", "MB/s",
                              size, lambda src=src, pipe_dst=pipe_dst, command=command: tools.run_pipe(
                                  command("-", None), src, pipe_dst),
                              b.removing(pipe_dst), check_of(plain, pipe_dst), True, params, reads=(src,)))
    for case in cases:  # the pipe rows: the whole pipeline's CPU under each
        if case.id.startswith(("signed/cat-", "signed/envelope-pipe/")):
            case.extra = tools.pipeline_cpu
    b.measure(cases, b.args.reps)
    _fastest_hash(b)


def _fastest_hash(b: Bench) -> None:
    """``signed/sha384-fastest``: the faster of openssl dgst and the hashlib loop, the file targets' limit."""
    found = [b.results[i] for i in ("signed/openssl-dgst", "signed/hashlib") if i in b.results]
    if not found:
        return
    best: dict[str, Any] = dict(max(found, key=lambda row: row["value"]))
    best.update(id="signed/sha384-fastest", label=f"fastest SHA-384 of the file ({best['label']})", envelope=False)
    b.results["signed/sha384-fastest"] = best


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps({"seconds": _hash_loop(sys.argv[1])}))
