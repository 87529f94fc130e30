"""SIGINT / SIGTERM / SIGHUP: remove temporary outputs, print one line, exit 128 + signal number.

Python runs signal handlers only in the main thread, between bytecodes. While the library's pipeline runs,
the kernel may deliver the signal to one of its worker threads, and the main thread may sit in a blocking
``read`` of a pipe: a handler would then never run. So these signals are blocked in every thread (threads
and forked workers inherit the mask) and one watcher thread takes them with ``sigwait``: it terminates our
worker processes, aborts this process's S3 uploads (:func:`envelope.s3.abort_all_uploads`: no object, no
pending multipart upload; a task whose upload it stopped waits for the process to end rather than report it),
waits (bounded) for the workers to do the same, removes the registered temporary files (holding the registry
lock, so no new one is created), and ends the process with ``os._exit``. Destinations are untouched: a
temporary file is renamed, and an upload completed, only after the whole message verified. Where ``sigwait``
does not exist (Windows), a handler raising :class:`~envelope_cli.errors.Terminated` in the main thread does
the same through ``finally`` blocks.

A blocked mask is inherited across ``exec``. Programs the CLI starts (botocore runs an AWS ``credential_process``
through ``subprocess.Popen``) therefore get these signals unblocked again in the child, just before ``exec``;
otherwise Ctrl-C and ``kill`` could not stop them.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Any

from .errors import PREFIX, STOPPING, Terminated

__all__ = ["before_exit", "install", "worker_setup"]

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


def _signals() -> set[signal.Signals]:
    return {getattr(signal, name) for name in _NAMES if hasattr(signal, name)}


#: Seconds the main process waits for its worker processes to abort their uploads and remove their files.
CHILDREN_WAIT = 90.0
#: Seconds each :func:`before_exit` step may take.
STEP_WAIT = 30.0
_BEFORE_EXIT: list[Any] = []


def before_exit(step: Any) -> Any:
    """Run ``step()`` when a signal ends the process, before the worker processes are stopped (a local Dask
    cluster closes itself there: its nannies would otherwise start new workers as the old ones end). Returns a
    function that takes the step back."""
    _BEFORE_EXIT.append(step)
    return lambda: _BEFORE_EXIT.remove(step) if step in _BEFORE_EXIT else None


def _run_steps() -> None:
    def quietly(step: Any) -> None:
        try:
            step()
        except BaseException:  # noqa: BLE001, S110 - the process is ending either way; it prints one line
            pass

    for step in list(_BEFORE_EXIT):
        thread = threading.Thread(target=quietly, args=(step,), name="envelope-before-exit", daemon=True)
        thread.start()
        thread.join(STEP_WAIT)


def _abort_uploads() -> int:
    """Abort every S3 upload of this process that is not complete (only if ``envelope.s3`` was ever used);
    returns how many there were."""
    s3 = sys.modules.get("envelope.s3")
    if s3 is None:
        return 0
    try:
        return int(s3.abort_all_uploads())
    except Exception:  # noqa: BLE001 - the process is ending either way; each writer keeps its error
        return 0


def _watch(signals: set[signal.Signals], main: bool) -> None:
    signum = signal.sigwait(signals)
    STOPPING.set()  # other threads print no error line from now on (errors.print_error)
    if main:
        _run_steps()
    children: list[Any] = []
    if main and "multiprocessing" in sys.modules:
        import multiprocessing

        children = multiprocessing.active_children()
        for child in children:  # our own worker processes, by their pid: each aborts its uploads, removes its files
            child.terminate()
    uploads = _abort_uploads()
    if children:
        import time

        deadline = time.monotonic() + CHILDREN_WAIT
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
    _abandon_temporary_files()  # keeps the registry locked until the process is gone
    if main:
        word = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
        try:
            aborted = " and uploads aborted" if uploads else ""
            sys.stderr.write(f"{PREFIX}{word}; temporary files were removed{aborted}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    os._exit(128 + signum)


def _abandon_temporary_files() -> None:
    """Remove this process's temporary outputs (if it ever made one) and keep their registry locked."""
    tempfiles = sys.modules.get("envelope.batch.tempfiles")
    if tempfiles is not None:
        tempfiles.abandon_temporary_files()


def _raise(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _children_start_unblocked(signals: set[signal.Signals]) -> None:
    """Make ``subprocess.Popen`` unblock ``signals`` in each child before it runs its program.

    Replaces ``subprocess.Popen`` in this process (the CLI's, never the library's) with a subclass, before
    botocore is imported (its credential provider binds ``subprocess.Popen`` when it is defined). Between
    ``fork`` and ``exec`` the child runs CPython's at-fork hooks and ``pthread_sigmask``, and touches no
    OpenSSL state. botocore starts a ``credential_process`` on the first KMS call, before any pipeline thread
    exists; the signal watcher holds no lock while it waits."""
    import subprocess

    if getattr(subprocess.Popen, "_envelope_unblocks", False):
        return
    unblock = functools.partial(signal.pthread_sigmask, signal.SIG_UNBLOCK, signals)

    class Popen(subprocess.Popen):  # type: ignore[type-arg]
        _envelope_unblocks = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if len(args) < 7 and kwargs.get("preexec_fn") is None:  # preexec_fn is the 7th positional
                kwargs["preexec_fn"] = unblock
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen  # type: ignore[misc]


def worker_setup() -> None:
    """``Run.worker_setup`` of the CLI's runs: in each worker process, a signal removes that worker's temporary
    files and aborts its uploads; the main process reports."""
    install(main=False)


def install(*, main: bool = True) -> None:
    """Call in the main thread before any other thread starts (the CLI entry point; each worker process)."""
    signals = _signals()
    if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait"):
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        _children_start_unblocked(signals)
        threading.Thread(target=_watch, args=(signals, main), name="envelope-signals", daemon=True).start()
        return
    for number in signals - {signal.SIGINT}:  # SIGINT already raises KeyboardInterrupt
        signal.signal(number, _raise)
