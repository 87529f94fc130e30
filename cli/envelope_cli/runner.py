"""Running a planned command: the tasks through the library's task runner, and everything the user sees of it.

:func:`execute_plan` hands the plan to :func:`envelope.batch.jobs.run_tasks` (the one place that chooses where
tasks run) and reports as outcomes arrive, in plan order: one ``envelope: error:`` line per failed input, with
``-v`` one line per output written, the progress bar on stderr, and the ``--metadata-output`` lines. Every
command that runs tasks (encrypt, decrypt) goes through here, so each gets every executor.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import print_error, say
from .progress import Progress

if TYPE_CHECKING:
    from envelope.batch.jobs import Materials, Run
    from envelope.batch.planning import Plan

__all__ = ["MetadataLog", "dask_support", "execute_plan"]

STDIO = "-"


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)




class MetadataLog:
    """``--metadata-output``: one JSON line per processed input, appended as each finishes.

    A log that did not exist is created with its first line, and removed again if no input succeeded: a failed
    run leaves no file it did not have before. An existing log is only appended to."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stream: Any = sys.stdout if path == STDIO else None
        self.created = False
        if path is None or path == STDIO:
            return
        from envelope.batch.files import in_system_folder
        from envelope.batch.locations import FileProblem

        if os.path.lexists(path):
            self.stream = self._open("a")
        elif in_system_folder(path):
            raise _usage(f"--metadata-output {path!r}: envelope never creates files in /dev or /proc")
        elif not os.path.isdir(os.path.dirname(path) or "."):
            folder = os.path.dirname(path)
            raise FileProblem("cannot write metadata to", OSError(errno.ENOENT, f"the folder {folder!r} does not "
                                                                                "exist"), path)

    def _open(self, mode: str) -> Any:
        from envelope.batch.locations import FileProblem

        assert self.path is not None
        try:
            return open(self.path, mode, encoding="utf-8")
        except OSError as exc:
            raise FileProblem("cannot write metadata to", exc, self.path) from None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self.stream is None:
            self.stream = self._open("x")  # it did not exist when the run started; nor may it now
            self.created = True
        from envelope.batch.headers import json_text
        from envelope.batch.locations import FileProblem

        try:
            self.stream.write(json_text(record) + "\n")
            self.stream.flush()
        except OSError as exc:
            raise FileProblem("cannot write metadata to", exc, self.path) from None

    def close(self, *, succeeded: bool) -> None:
        if self.stream is None or self.path == STDIO:
            return
        from envelope.batch.tempfiles import close_quietly

        close_quietly(self.stream)
        if self.created and not succeeded and self.path is not None:
            try:
                os.unlink(self.path)  # ours: created by this run, which produced nothing
            except OSError:
                pass


def execute_plan(plan: Plan, run: Run, materials: Materials, *, workers: int, progress: bool | None,
                 metadata_output: str | None, verbose: bool = False, dask: str | None = None,
                 dask_dashboard: bool = False) -> int:
    """Run every task; print one error line per failed input (and with ``verbose`` one line per output
    written or skipped). Returns the exit code of the first failure. Folders the run created and left empty
    (their only outputs failed) are removed at the end.

    ``materials`` serve tasks run in this process; worker processes and Dask workers build their own from
    ``run``. ``dask`` (``--dask``: ``local:N`` or a scheduler address) runs the tasks on a Dask cluster instead
    of ``workers`` processes. With a cache, ``--metadata-output`` gets one more line after the inputs: the cache
    settings and the stats of every process's cache, summed.
    """
    from contextlib import nullcontext

    from envelope.batch.jobs import Tally, run_tasks

    metadata = MetadataLog(metadata_output)
    sizes = [task.size for task in plan.tasks]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    workers = max(1, min(workers, len(plan.tasks)))
    bar: Progress | None = None

    def advance(n: int) -> None:
        if bar is not None:
            bar.advance(n)

    tally = Tally()
    with _cluster(dask, dask_dashboard, run) if dask is not None and plan.tasks else nullcontext() as client:
        results, inline = run_tasks(plan.tasks, run, materials, workers=workers, client=client, on_read=advance)
        bar = Progress(run.job.mode, total, progress, files=len(plan.tasks))  # after workers started (run_tasks)
        try:
            for outcome in results:
                bar.file_done(0 if inline else (outcome.task.size or 0))
                tally.add(outcome)
                where = "stdout" if outcome.task.destination == STDIO else repr(outcome.task.destination)
                if outcome.error is not None:
                    print_error(f"{outcome.task.source}: {outcome.error}" if plan.many else outcome.error)
                elif outcome.skipped is not None:
                    if verbose:
                        say(f"skipped {where}: {outcome.skipped}")
                    continue  # no metadata line: nothing was read or written
                elif verbose:
                    say(f"wrote {where} (by an earlier attempt of this task)" if outcome.earlier
                        else f"wrote {where} ({outcome.bytes_out} bytes)")
                metadata.write(outcome.record)
            if run.cache is not None and tally.cache is not None:
                caches = len(tally.workers) or workers
                metadata.write({"mode": run.job.mode, "summary": True, "inputs": len(plan.tasks),
                                "failed": tally.failed,
                                "cache": {"scope": "per-process", "caches": caches, **run.cache.describe()},
                                "cache_stats": tally.cache.as_dict()})
        finally:
            bar.close()
            metadata.close(succeeded=tally.succeeded > 0)
            tally.finish()
    return tally.code


def dask_support() -> Any:
    """``envelope.batch.cluster``, or without the ``dask`` extra a usage error (exit 2) that names it."""
    try:
        from envelope.batch import cluster
    except ImportError:
        raise _usage("--dask needs Dask, which is not installed: pip install 'envelope-crypt[dask]'") from None
    return cluster


@contextmanager
def _cluster(spec: str, dashboard: bool, run: Run) -> Iterator[Any]:
    """``--dask SPEC``: a client of the cluster (a LocalCluster of our own for ``local:N``, closed at the end;
    also when a signal ends the run, so that its workers abort their uploads and none is started again)."""
    from . import signals

    cluster = dask_support()
    with cluster.connect(spec, dashboard=dashboard, worker_setup=run.worker_setup,
                         on_dashboard=lambda url: say(f"Dask dashboard: {url}")) as client:
        take_back = signals.before_exit(lambda: cluster.close_local(client)) if spec.startswith("local:") else None
        try:
            yield client
        finally:
            if take_back is not None:
                take_back()
