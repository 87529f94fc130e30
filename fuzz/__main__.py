"""``python -m fuzz``: run a fuzz target under atheris, or manage the hostile vector files.

    pip install -e '.[test,fuzz]'
    python -m fuzz run decrypt --seconds 600        # the longer run (atheris, libFuzzer)
    python -m fuzz run header --seconds 600
    python -m fuzz vectors --write                  # regenerate tests/vectors/hostile/ (the seed set)
    python -m fuzz vectors --add crash-1234 --expect "format failure" --description "what it was"

``run`` starts from a corpus of valid messages (every suite, framed and non-framed) and the hostile vectors,
caps each input at 8 KiB, and treats a Python exception that is not an ``envelope.errors`` class, a failed
assertion, an input taking more than 10 s or a process above 1 GiB RSS as a crash. libFuzzer writes the input
to ``ARTIFACTS/crash-<sha1>`` (default: ``./fuzz-artifacts``); turn it into a regression vector with
``vectors --add``, fix the bug, and the vector keeps it fixed (tests/api/test_tamper.py runs every file).
Arguments after ``--`` go to libFuzzer as they are (``-- -jobs=2 -workers=2``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TARGETS = ("header", "decrypt")
MAX_LEN = 8192


def _run(target: str, seconds: int, runs: int | None, corpus: str | None, artifacts: str, extra: list[str]) -> None:
    try:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        sys.exit("python -m fuzz run needs atheris: pip install -e '.[fuzz]' (the test suite runs the same targets "
                 "under hypothesis without it)")
    with atheris.instrument_imports(include=["envelope", "fuzz"]):
        from fuzz import targets
        from testkit import vectors

    folder = Path(corpus) if corpus else Path(tempfile.mkdtemp(prefix=f"envelope-fuzz-{target}-"))
    folder.mkdir(parents=True, exist_ok=True)
    inputs = targets.seeds() + [v.message for v in vectors.load_all()]
    for i, data in enumerate(inputs):
        if len(data) <= MAX_LEN:
            (folder / f"seed-{i:03d}").write_bytes(data)
    Path(artifacts).mkdir(parents=True, exist_ok=True)
    check = getattr(targets, target)

    def test_one_input(data: bytes) -> None:
        check(bytes(data))

    args = [sys.argv[0], f"-max_len={MAX_LEN}", "-timeout=10", "-rss_limit_mb=1024",
            f"-artifact_prefix={Path(artifacts).resolve()}/", *extra, str(folder)]
    args.insert(1, f"-runs={runs}" if runs is not None else f"-max_total_time={seconds}")
    print(f"fuzzing {target}: corpus {folder}, crashes go to {artifacts}/", file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def _vectors(write: bool, add: str | None, expect: str | None, description: str | None, name: str | None) -> None:
    from testkit import vectors

    if add is not None:
        if not expect or not description:
            sys.exit("--add needs --expect and --description")
        vector = vectors.regression(Path(add).read_bytes(), expect=expect, description=description, name=name)
        (path,) = vectors.write([vector])
        print(f"wrote {path}")
    elif write:
        paths = vectors.write(vectors.seed_vectors())
        print(f"wrote {len(paths)} vectors to {vectors.FOLDER}")
    else:
        for vector in vectors.load_all():
            print(f"{vector.name:40} {vector.expect:16} {len(vector.message):7} B  {vector.description}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fuzz a target with atheris")
    run.add_argument("target", choices=TARGETS)
    run.add_argument("--seconds", type=int, default=600, help="how long to run (default 600)")
    run.add_argument("--runs", type=int, default=None, help="stop after this many inputs instead")
    run.add_argument("--corpus", help="corpus folder to use and keep (default: a new temporary folder)")
    run.add_argument("--artifacts", default="fuzz-artifacts", help="where crashing inputs are written")
    vec = sub.add_parser("vectors", help="list, regenerate or add hostile vector files")
    vec.add_argument("--write", action="store_true", help="regenerate the seed set in tests/vectors/hostile/")
    vec.add_argument("--add", metavar="FILE", help="add FILE (an input a fuzzer found) as a regression vector")
    vec.add_argument("--expect", choices=["success", "format failure", "auth failure", "policy failure",
                                          "key failure"])
    vec.add_argument("--description")
    vec.add_argument("--name", help="file name (default: fuzz-<sha256 prefix>)")
    args = parser.parse_args(argv)
    if args.command == "run":
        _run(args.target, args.seconds, args.runs, args.corpus, args.artifacts, extra)
    else:
        _vectors(args.write, args.add, args.expect, args.description, args.name)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # python -m fuzz vectors | head
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
