"""Many files in worker *processes* of this machine: per-file work is mostly Python (header, key wrapping, file
system calls) that holds the GIL, so threads do not scale (measured: docs/cli.md, ``--workers``).

Each worker runs ``Run.worker_setup`` (the CLI installs its signal handling there), builds its own materials
(and so its own, empty, data-key cache) after the fork and runs :func:`envelope.batch.jobs.process_task` for
each task it is given, without the library's thread pipeline.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .jobs import Materials, Outcome, Run, process_task
from .planning import Task

__all__ = ["chunk_size", "cores", "default_workers", "in_processes"]

_WORKER: dict[str, Any] = {}


def _init_worker(run: Run) -> None:
    if run.worker_setup is not None:
        run.worker_setup()  # the CLI: a signal removes this worker's temporary file; the main process reports
    _WORKER["run"] = run
    _WORKER["materials"] = run.materials()  # this worker's own keyring and (empty) cache


def _work(task: Task) -> Outcome:
    run: Run = _WORKER["run"]
    materials: Materials = _WORKER["materials"]
    return process_task(task, run, materials, threads=0)


def chunk_size(tasks: int, slots: int) -> int:
    """Tasks handed out together, with ``slots`` workers running them: about 8 chunks per worker, at most 64
    tasks each (fewer round trips for many small files; still balanced for a few large ones)."""
    return max(1, min(64, tasks // (slots * 8)))


#: What starting and stopping the worker processes costs, in seconds (forking, each worker's keyring, the
#: pool's queues and threads; about 25 ms measured with strace on 2 cores, doubled for a loaded machine).
POOL_START = 0.05
#: Rough cost of one local task in one process, to judge whether a run is worth the workers: per file (open,
#: header, key wrap, temporary file, link, close: 150-300 µs measured on 16 KiB files) and per byte (AES-GCM
#: and the copies: about 400 MB/s per core). Only the order of magnitude matters.
TASK_SECONDS = 300e-6
BYTE_SECONDS = 1 / 400e6


def cores() -> int:
    """The CPU cores this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(tasks: Sequence[Task] | None = None) -> int:
    """``--workers`` by default: the CPU cores this process may run on, unless ``tasks`` are so little work
    that starting worker processes would cost more than they save (a few small local files): then 1, so the
    default is never slower than ``--workers 1``. Inputs of unknown size and other kinds of location (S3
    objects, whose time is mostly waiting) always get the cores."""
    n = cores()
    if n <= 1 or tasks is None:
        return n
    return n if _worth_workers(tasks, n) else 1


def _worth_workers(tasks: Sequence[Task], n: int) -> bool:
    from .locations import kind_of

    saved_per_second = 1 - 1 / min(n, max(1, len(tasks)))  # the share of the work that runs beside the rest
    work = 0.0
    local: dict[str, bool] = {}
    for task in tasks:
        if task.size is None:
            return True
        for location in (task.source, task.destination):
            folder = location.rpartition("/")[0]
            if folder not in local:
                local[folder] = kind_of(location).name == "file"
            if not local[folder]:
                return True
        work += TASK_SECONDS + task.size * BYTE_SECONDS
        if work * saved_per_second > POOL_START:
            return True
    return False


def _start_method() -> str | None:
    # fork starts workers in milliseconds with the library already imported; elsewhere the platform default.
    return "fork" if sys.platform.startswith("linux") else None


def in_processes(tasks: list[Task], run: Run, workers: int) -> Iterator[Outcome]:
    """Start the workers now and return their outcomes in input order.

    Forking happens here, before the caller starts a thread (a progress bar); the CLI's only other thread is
    its signal watcher, which holds no lock while it waits (cli/envelope_cli/signals.py)."""
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(_start_method())
    chunk = chunk_size(len(tasks), workers)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(run,))
    # Forked workers share this process's memory until they write to it, and the garbage collector writes to
    # every object it visits (the plan, the imported modules): frozen, the workers' collections skip them.
    gc.freeze()
    try:
        outcomes = executor.map(_work, tasks, chunksize=chunk)  # submits every chunk: forks the workers
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        gc.unfreeze()  # in this process only; the workers keep theirs frozen
    return _collect(executor, outcomes)


def _collect(executor: Any, outcomes: Iterator[Outcome]) -> Iterator[Outcome]:
    import multiprocessing

    try:
        yield from outcomes
    except BaseException:
        # SIGTERM makes each worker remove its temporary file (the CLI's worker_setup); they are our children.
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
