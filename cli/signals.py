"""SIGINT / SIGTERM / SIGHUP: remove temporary outputs, print one line, exit 128 + signal number.

Python runs signal handlers only in the main thread, between bytecodes. While the library's pipeline runs,
the kernel may deliver the signal to one of its worker threads, and the main thread may sit in a blocking
``read`` of a pipe: a handler would then never run. So these signals are blocked in every thread (threads
and forked workers inherit the mask) and one watcher thread takes them with ``sigwait``: it terminates our
worker processes, removes the registered temporary files (holding the registry lock, so no new one is
created), and ends the process with ``os._exit``. Destinations are untouched: a temporary file is renamed
only after the whole message verified. Where ``sigwait`` does not exist (Windows), a handler raising
:class:`~cli.errors.Terminated` in the main thread does the same through ``finally`` blocks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .errors import PREFIX, Terminated
from .files import abandon_temporary_files

__all__ = ["install"]

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


def _signals() -> set[signal.Signals]:
    return {getattr(signal, name) for name in _NAMES if hasattr(signal, name)}


def _watch(signals: set[signal.Signals], main: bool) -> None:
    signum = signal.sigwait(signals)
    if main and "multiprocessing" in sys.modules:
        import multiprocessing

        for child in multiprocessing.active_children():  # our own worker processes, by their pid
            child.terminate()
    abandon_temporary_files()  # keeps the registry locked until the process is gone
    if main:
        word = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
        try:
            sys.stderr.write(f"{PREFIX}{word}; temporary files were removed\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    os._exit(128 + signum)


def _raise(signum: int, frame: object) -> None:
    raise Terminated(signum)


def install(*, main: bool = True) -> None:
    """Call in the main thread before any other thread starts (the CLI entry point; each worker process)."""
    signals = _signals()
    if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait"):
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        threading.Thread(target=_watch, args=(signals, main), name="envelope-signals", daemon=True).start()
        return
    for number in signals - {signal.SIGINT}:  # SIGINT already raises KeyboardInterrupt
        signal.signal(number, _raise)
