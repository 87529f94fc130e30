"""Running tasks on a Dask cluster (``distributed``, the ``dask`` extra): the executor :func:`envelope.batch.jobs.
run_tasks` uses when it is given a ``distributed.Client``, and the clients the CLI's ``--dask`` makes.

**One code path.** Each Dask task is a chunk of planned tasks; a worker runs it with :func:`_run_chunk`, which
calls :func:`envelope.batch.jobs.process_task` for each, exactly as a ``--workers`` process does. What travels
to the scheduler and the workers is the :class:`~envelope.batch.planning.Task` pairs (locations and sizes) and
the :class:`~envelope.batch.jobs.Run`: job options, key *specs* (``kms:`` ARNs, ``file:`` paths, ``ssm:`` /
``secretsmanager:`` names) and settings, never a key, a key file's contents or a data key (``tests/batch``
pickles what is submitted and searches it for the key material). Each worker process builds its materials from
the run on its first task of that run (a per-process singleton; the data-key cache is therefore one per worker
process, with the limits of ``--cache-*`` per data key, as for ``--workers``) and runs one task at a time, so
its cache stats per task are exact; scale with worker processes (``dask worker --nworkers N --nthreads 1``).

**Retries.** The scheduler runs a task again when the worker running it is lost (``distributed.scheduler.
allowed-failures``, default 3; then the task fails with one line). Nothing partial is ever visible (atomic
files, S3 multipart uploads completed only at the end), and each run has a random mark (``Run.mark``) that every
output carries (S3 metadata ``envelope-run``, a file's ``user.envelope.run`` attribute): an attempt that finds
its output already there with its own run's mark counts the task as done (the earlier attempt completed, its
worker was lost before reporting), instead of failing with "exists already" or writing it twice.

**Workers.** :class:`EnvelopeWorker`, a worker plugin registered once per cluster, aborts the worker process's
pending S3 uploads when the worker shuts down (:func:`envelope.s3.abort_all_uploads`) and forgets its materials.
A local cluster (:func:`start_local`, ``--dask local:N``) listens on 127.0.0.1 only: scheduler, nannies and
workers, and their HTTP servers, which serve nothing unless ``dashboard`` is asked for (then on 127.0.0.1, a
free port). Dask's own default is a dashboard on all interfaces.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import distributed

from . import tempfiles
from .jobs import Materials, Outcome, Run, failure, process_task
from .planning import Task
from .workers import chunk_size

__all__ = ["CONNECT_TIMEOUT", "PLUGIN", "ClusterProblem", "EnvelopeWorker", "close_local", "connect", "on_cluster",
           "parse_spec", "start_local"]

PLUGIN = "envelope-crypt"
#: Seconds to wait for a scheduler to answer (``--dask tcp://...``).
CONNECT_TIMEOUT = 30
#: Chunks in flight per worker thread: enough to keep every worker busy, few enough that the scheduler holds a
#: small graph and results are gathered (and released on the workers) as they arrive, in constant memory.
IN_FLIGHT_PER_THREAD = 4
#: Runs whose materials a worker process keeps (a long-lived cluster serves many runs).
KEEP_RUNS = 4
LOCAL = "local:"


class ClusterProblem(OSError):
    """The cluster could not run a task, or could not be reached: an I/O error (exit 4) with one line."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


# ---------------------------------------------------------------------------------------------------------
# the worker side


_LOCK = threading.Lock()  # one task at a time per worker process, as a --workers process
_MATERIALS: OrderedDict[str, Materials] = OrderedDict()  # run mark -> this process's materials for that run


_LAST_RUN: list[str | None] = [None]


def _materials(run: Run) -> Materials:
    assert run.mark is not None
    if _LAST_RUN[0] != run.mark:
        tempfiles.new_run()  # what this process knows of output folders belongs to the run before
        _LAST_RUN[0] = run.mark
    found = _MATERIALS.get(run.mark)
    if found is None:
        found = _MATERIALS[run.mark] = run.materials()  # keyring and empty cache, built here from the specs
        while len(_MATERIALS) > KEEP_RUNS:
            _MATERIALS.popitem(last=False)
    else:
        _MATERIALS.move_to_end(run.mark)
    return found


def _worker_name() -> str:
    try:
        return str(distributed.get_worker().address)
    except ValueError:  # not in a worker (a test calling it directly)
        return f"pid {os.getpid()}"


def _run_chunk(tasks: list[Task], run: Run) -> list[Outcome]:
    """What a Dask task runs on a worker: :func:`process_task` for each task of the chunk, in order."""
    with _LOCK:
        name = _worker_name()
        try:
            materials = _materials(run)
        except Exception as exc:  # noqa: BLE001 - a key this worker cannot read fails its tasks, one line each
            outcomes = [failure(task, run, exc) for task in tasks]
        else:
            outcomes = [process_task(task, run, materials, threads=0) for task in tasks]
        for outcome in outcomes:
            outcome.worker = name
        return outcomes


class EnvelopeWorker(distributed.WorkerPlugin):
    """Registered on every worker of a cluster envelope runs on (once: see :func:`_register`). ``setup`` runs
    ``process_setup`` in each worker process (the CLI's signal handling, for a local cluster of its own);
    ``teardown``, when the worker shuts down, aborts that process's pending S3 uploads."""

    name = PLUGIN

    def __init__(self, process_setup: Callable[[], None] | None = None) -> None:
        self.process_setup = process_setup

    def setup(self, worker: Any) -> None:
        if self.process_setup is not None:
            self.process_setup()

    def teardown(self, worker: Any) -> None:
        import sys

        s3 = sys.modules.get("envelope.s3")  # only if this process ever wrote to S3
        if s3 is not None:
            s3.abort_all_uploads()
        _MATERIALS.clear()


def _has_plugin(dask_scheduler: Any) -> bool:
    return PLUGIN in getattr(dask_scheduler, "worker_plugins", {})


def _register(client: Any, process_setup: Callable[[], None] | None = None) -> None:
    """Register :class:`EnvelopeWorker` unless the cluster has it (replacing it would run its teardown)."""
    if not client.run_on_scheduler(_has_plugin):
        client.register_plugin(EnvelopeWorker(process_setup), name=PLUGIN)


# ---------------------------------------------------------------------------------------------------------
# the client side


def on_cluster(client: Any, tasks: list[Task], run: Run, workers: int) -> Iterator[Outcome]:
    """The Dask executor: submit ``tasks`` in chunks and return their outcomes in plan order (``workers`` is
    not used: the cluster's worker threads decide). Starts submitting now."""
    if not tasks:
        return iter(())
    import secrets

    _register(client)
    run = replace(run, mark=run.mark or secrets.token_hex(16), worker_setup=None)
    slots = max(1, sum(client.nthreads().values()))
    size = chunk_size(len(tasks), slots)
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    return _gather(client, chunks, run, slots * IN_FLIGHT_PER_THREAD)


def _gather(client: Any, chunks: list[list[Task]], run: Run, window: int) -> Iterator[Outcome]:
    assert run.mark is not None
    done = distributed.as_completed()
    index: dict[Any, int] = {}
    results: dict[int, list[Outcome]] = {}
    submitted = 0

    def submit() -> None:
        nonlocal submitted
        future = client.submit(_run_chunk, chunks[submitted], run, key=f"envelope-{run.mark}-{submitted}",
                               pure=False)
        index[future] = submitted
        done.add(future)
        submitted += 1

    try:
        while submitted < min(window, len(chunks)):
            submit()
        following = 0
        for future in done:
            number = index.pop(future)
            results[number] = _outcomes(future, chunks[number], run)
            future.release()
            if submitted < len(chunks):
                submit()
            while following in results:
                yield from results.pop(following)
                following += 1
    finally:
        if index:
            client.cancel(list(index))


def _outcomes(future: Any, chunk: list[Task], run: Run) -> list[Outcome]:
    try:
        outcomes: list[Outcome] = future.result()
        return outcomes
    except distributed.KilledWorker:
        lost: Exception = ClusterProblem("the Dask workers running it were lost, each time it was tried "
                                         "(distributed.scheduler.allowed-failures)")
    except Exception as exc:  # noqa: BLE001 - whatever the cluster says becomes one line per task
        lost = ClusterProblem(f"the Dask cluster could not run it: {type(exc).__name__}: {exc}")
    return [failure(task, run, lost) for task in chunk]


def parse_spec(spec: str) -> tuple[str, int | str]:
    """``--dask`` -> ("local", N) for ``local:N``, or ("address", ADDRESS) for a scheduler address."""
    from envelope import UsageError

    if spec.startswith(LOCAL):
        count = spec[len(LOCAL):]
        if not count.isdecimal() or not 1 <= int(count) <= 1024:
            raise UsageError(f"--dask {spec!r}: local:N needs a number of worker processes, such as local:4")
        return "local", int(count)
    scheme, sep, rest = spec.partition("://")
    if not sep or not scheme.isalnum() or not rest:
        raise UsageError(f"--dask {spec!r}: give a scheduler address such as tcp://scheduler:8786, or local:N for "
                         "N worker processes on this machine")
    return "address", spec


def start_local(workers: int, *, dashboard: bool = False, env: dict[str, str] | None = None) -> Any:
    """A ``LocalCluster`` of ``workers`` processes (one thread each) that listens on 127.0.0.1 only. Its HTTP
    servers serve nothing unless ``dashboard`` (then the scheduler's dashboard, on 127.0.0.1 at a free port).
    ``env``: environment variables for the worker processes, on top of this process's (kept when a worker is
    restarted). The caller closes it."""
    import dask

    quiet: dict[str, Any] = {} if dashboard else {"distributed.scheduler.http.routes": [],
                                                  "distributed.worker.http.routes": []}
    with dask.config.set(quiet):  # the nannies hand this configuration to their worker processes
        return distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
            env=dict(env or {}),
            dashboard_address="127.0.0.1:0" if dashboard else None, worker_dashboard_address=None,
            silence_logs=logging.CRITICAL,  # task failures are reported by envelope, one line each
            # without a dashboard Dask still starts an HTTP server, on 8787 by default: a free loopback port
            scheduler_kwargs=None if dashboard else {"dashboard": False, "dashboard_address": "127.0.0.1:0"})


def _refused_now(address: str) -> None:
    """Fail at once when nothing listens at a ``tcp://`` address (distributed would retry for the whole
    timeout); a scheduler that is slow to answer still gets :data:`CONNECT_TIMEOUT`."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if parts.scheme != "tcp" or parts.hostname is None:
        return
    try:
        socket.create_connection((parts.hostname, parts.port or 8786), timeout=CONNECT_TIMEOUT).close()
    except (ConnectionRefusedError, socket.gaierror):
        raise
    except OSError:
        return  # a timeout or an unreachable network: let distributed try, and say what it finds


def close_local(client: Any, timeout: float = 20) -> None:
    """Close ``client`` and the LocalCluster it runs on (its nannies start no new workers from then on; each
    worker closes, its plugin aborting its uploads). For a signal handler; errors are the caller's to ignore."""
    local = getattr(client, "cluster", None)
    client.close(timeout=timeout)
    if local is not None:
        local.close(timeout=timeout)


@contextmanager
def connect(spec: str, *, dashboard: bool = False, worker_setup: Callable[[], None] | None = None,
            on_dashboard: Callable[[str], None] | None = None) -> Iterator[Any]:
    """``--dask SPEC`` as a client: ``local:N`` starts :func:`start_local` (its worker processes run
    ``worker_setup``) and closes it at the end; an address connects to that scheduler (``dashboard`` is then
    refused: that dashboard is the scheduler's own). ``on_dashboard`` is told the dashboard's address."""
    from envelope import UsageError

    kind, value = parse_spec(spec)
    if kind == "local":
        assert isinstance(value, int)
        cluster = start_local(value, dashboard=dashboard)
        try:
            client = distributed.Client(cluster)
            try:
                _register(client, worker_setup)
                if dashboard and on_dashboard is not None:
                    on_dashboard(str(client.dashboard_link))
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
        return
    if dashboard:
        raise UsageError("--dask-dashboard starts the dashboard of a local cluster (--dask local:N); a scheduler "
                         "serves its own")
    assert isinstance(value, str)
    try:
        _refused_now(value)
        client = distributed.Client(value, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ClusterProblem(f"cannot reach the Dask scheduler at {value}: {reason}") from None
    try:
        yield client
    finally:
        client.close()
