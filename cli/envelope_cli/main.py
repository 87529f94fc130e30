"""Console-script entry point (``envelope = envelope_cli.main:run``); also ``python -m envelope_cli.main``.

Start-up matters (scripts and CI jobs run ``envelope`` many times): ``envelope --version`` answers before typer
is imported, typer is imported only to parse a real command line, and the library, rich and boto3 only by the
commands that need them.
"""

from __future__ import annotations

import io
import sys

__all__ = ["run"]

#: Loaded only by runs whose exit handlers must run: worker processes (``--workers``), Dask (``--dask``) and a
#: coverage measurement clean up or save at exit.
_NEEDS_TEARDOWN = ("multiprocessing", "concurrent.futures.process", "distributed", "coverage")


class _ClosedStream(io.BufferedIOBase):
    """Stands in for a standard stream that was closed when envelope started (``<&-``, ``>&-``): Python then
    sets ``sys.stdin`` (or stdout, stderr) to None. Reading or writing it fails like a closed descriptor would,
    so the CLI reports an I/O error (exit 4) instead of crashing on None."""

    def __init__(self, what: str) -> None:
        self._what = what

    def _closed(self, *args: object) -> bytes:
        import errno

        raise OSError(errno.EBADF, f"standard {self._what} is closed")

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    fileno = read = read1 = readinto = write = _closed  # type: ignore[assignment]

    def flush(self) -> None:
        pass


def _stand_in_for_closed_streams() -> None:
    names = [name for name in ("stdin", "stdout", "stderr") if getattr(sys, name) is None]
    if not names:
        return
    import os

    while True:  # keep descriptors 0-2 taken, so that no file we open lands on one of them
        fd = os.open(os.devnull, os.O_RDWR)
        if fd > 2:
            os.close(fd)
            break
    for name in names:
        what = "input" if name == "stdin" else "output" if name == "stdout" else "error"
        setattr(sys, name, io.TextIOWrapper(_ClosedStream(what), encoding="utf-8", write_through=True))


def run(*, exit_now: bool = True) -> None:
    """The console script. With ``exit_now`` (the default), a finished command ends the process at once (see
    :func:`_exit_now`); pass False to call this in a process that goes on afterwards."""
    _stand_in_for_closed_streams()
    if sys.argv[1:] == ["--version"]:
        from . import version

        try:
            sys.stdout.write(f"envelope {version()}\n")
            sys.stdout.flush()
        except OSError as exc:  # stdout closed, or a pipe whose reader is gone
            from .errors import classify, print_error

            code, message = classify(exc)
            print_error(message)
            sys.exit(code)
        return
    _collect_less_often()
    from . import signals

    signals.install()  # before any thread starts: see cli/envelope_cli/signals.py
    from .app import app
    from .speedups import invoke_command_line

    try:
        invoke_command_line(app)
    except SystemExit as exc:
        if exit_now:
            _exit_now(exc.code)
        raise


#: Allocations between the cyclic garbage collector's youngest-generation runs (CPython's default: 700).
GC_THRESHOLD = 50_000


def _collect_less_often() -> None:
    """Run the cycle collector less often. Start-up imports some 240 modules (typer, cryptography, the library),
    allocating objects that all live until the end; with the default threshold the collector walks them over
    and over: 6 ms of a ~90 ms local-key encrypt (medians of 30 alternated runs, measured). Nothing here depends
    on when cycles are collected (outputs are closed explicitly); cycles are still collected, just in larger
    batches (at most ~50,000 young objects wait)."""
    import gc

    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, oldest)


def _exit_now(code: object) -> None:
    """End the process at once with ``code``, skipping the interpreter's teardown (freeing every module and
    object one at a time, and the buffers a large message left): 20-100 ms measured after a 256 MiB signed
    message, on a run that takes 0.4-0.6 s. By now the command is over: every output is flushed, closed and in
    place or removed (:class:`~envelope_cli.boundary.Group`), and every thread but the daemon signal waiter has
    ended. The standard streams are flushed here; if that fails, or a run loaded something that cleans up at
    exit, this returns and the normal exit runs."""
    if not (code is None or isinstance(code, int)) or any(name in sys.modules for name in _NEEDS_TEARDOWN):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except (OSError, ValueError):
        return
    import os

    os._exit(code or 0)


if __name__ == "__main__":
    run()
