"""Running encrypt / decrypt over a plan of (input, output) pairs: one inline, or many in worker processes.

Each job opens its input as a buffered binary file, opens an atomic :class:`~envelope_cli.files.Destination` and hands
both to the library's streaming API, which runs its own read / AES-GCM / write thread pipeline. Many files run
in worker *processes*: per-file work is mostly Python (header, key wrapping, file system calls) that holds the
GIL, so threads do not scale (measured: README "Command-line reference", ``--workers``).

Each process encrypts or decrypts through one :class:`Crypto`: the keyring, or with ``--cache-max-age`` a
:class:`~envelope.CachingMaterialsManager` in front of it. The cache is **one per process**: an inline run has
one cache for all its files, and each worker process builds its own (in :func:`_init_worker`, after the fork,
so no entry is ever inherited). A data key is therefore only ever used by the process that made it, and every
limit (``max_age``, ``max_messages``, ``max_bytes``) holds per data key exactly as in the library; a run with
N workers may make up to N times as many data keys (README "Data-key cache"). Each outcome carries what its
job added to its process's cache stats, so the main process sums them (``CacheStats.__add__``) for the
``--metadata-output`` summary line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import ExitCode, classify, debug, print_error
from .files import STDIO, Destination, Job, Plan, input_mode, open_input
from .headers import header_summary
from .keys import KeyOptions, Purpose, build_keyring
from .progress import Progress
from .streams import Base64Reader, Base64Writer, InputMeter

if TYPE_CHECKING:
    from envelope import CacheStats, Keyring, MaterialsManager

__all__ = ["DEFAULT_CACHE_CAPACITY", "CacheOptions", "Crypto", "Outcome", "Settings", "build_crypto",
           "default_workers", "run_plan"]

#: ``--cache-capacity`` default: entries per cache (one per process).
DEFAULT_CACHE_CAPACITY = 1000

TERMINAL_CIPHERTEXT = "refusing to write binary ciphertext to a terminal: use -o FILE, a pipe, or --encode"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CacheOptions:
    """``--cache-*``: the data-key cache of each process (None limits: the library's defaults)."""

    max_age: float
    max_messages: int | None = None
    max_bytes: int | None = None
    capacity: int = DEFAULT_CACHE_CAPACITY

    def describe(self) -> dict[str, Any]:
        from envelope._cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES

        return {"max_age": self.max_age,
                "max_messages": DEFAULT_MAX_MESSAGES if self.max_messages is None else self.max_messages,
                "max_bytes": DEFAULT_MAX_BYTES if self.max_bytes is None else self.max_bytes,
                "capacity": self.capacity}


@dataclass(frozen=True)
class Settings:
    """Everything a job needs besides its files. Picklable: worker processes receive it."""

    direction: Purpose
    keys: KeyOptions
    context: dict[str, str] = field(default_factory=dict)  # encrypt: the context; decrypt: required pairs
    algorithm: str | None = None
    frame_length: int | None = None
    commitment_policy: str | None = None
    max_encrypted_data_keys: int | None = None
    max_frame_length: int | None = None  # decrypt: None is the library's default
    unsigned_only: bool = False
    base64: bool = False  # --encode / --decode
    force: bool = False
    make_folders: bool = False
    metadata: bool = False  # build the --metadata-output record
    cache: CacheOptions | None = None  # --cache-max-age and friends


class Crypto:
    """What one process encrypts and decrypts with: a keyring, or a caching manager in front of it."""

    def __init__(self, keyring: Keyring, manager: MaterialsManager | None = None) -> None:
        self.keyring = keyring
        self.manager = manager

    def arguments(self) -> dict[str, Any]:
        """``keyring=`` or ``materials_manager=`` for the library's encrypt / decrypt functions."""
        if self.manager is not None:
            return {"materials_manager": self.manager}
        return {"keyring": self.keyring}

    def cache_counts(self) -> dict[str, int] | None:
        """This process's cache stats so far (None without a cache)."""
        stats: CacheStats | None = getattr(self.manager, "stats", None)
        return None if stats is None else stats.as_dict()


def build_crypto(settings: Settings) -> Crypto:
    """The keyring from ``settings.keys``, behind a new cache when ``settings.cache`` says so.

    Raises UsageError for bad keys or cache limits, so ``_run`` calls it before any file is touched."""
    keyring = build_keyring(settings.keys, settings.direction)
    options = settings.cache
    if options is None:
        return Crypto(keyring)
    from envelope._cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, CachingMaterialsManager, LocalCache

    manager = CachingMaterialsManager(
        keyring, LocalCache(options.capacity), max_age=options.max_age,
        max_messages=DEFAULT_MAX_MESSAGES if options.max_messages is None else options.max_messages,
        max_bytes=DEFAULT_MAX_BYTES if options.max_bytes is None else options.max_bytes)
    return Crypto(keyring, manager)


@dataclass
class Outcome:
    job: Job
    code: int
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    cache_counts: dict[str, int] | None = None  # what this job added to its process's cache stats


def _difference(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {name: after[name] - before.get(name, 0) for name in after}


def _small(size: int | None) -> bool:
    """Inputs that fit in one batch gain nothing from the library's thread pipeline, only thread start-up."""
    from envelope._stream import BATCH_BYTES

    return size is not None and size <= BATCH_BYTES


def run_job(job: Job, settings: Settings, crypto: Crypto, *, threads: int | None = None,
            on_read: Callable[[int], None] | None = None) -> Outcome:
    """Encrypt or decrypt one input into one output. Library and I/O errors become a failed :class:`Outcome`."""
    before = crypto.cache_counts()
    outcome = _run_job(job, settings, crypto, threads, on_read)
    outcome.cache_counts = _difference(crypto.cache_counts(), before)
    if outcome.cache_counts is not None:
        outcome.record["cache_stats"] = outcome.cache_counts
    return outcome


def _run_job(job: Job, settings: Settings, crypto: Crypto, threads: int | None,
             on_read: Callable[[int], None] | None) -> Outcome:
    import envelope

    started = time.perf_counter()
    record: dict[str, Any] = {"mode": settings.direction, "input": job.source, "output": job.destination}
    meter: InputMeter | None = None
    if threads is None and _small(job.size):
        threads = 0
    try:
        raw = open_input(job.source)
        try:
            meter = InputMeter(raw, on_read)
            if settings.direction == "encrypt":
                destination = Destination(job.destination, force=settings.force, mode=input_mode(raw),
                                          make_folders=settings.make_folders,
                                          refuse_terminal=None if settings.base64 else TERMINAL_CIPHERTEXT)
                with destination as out:
                    sink: BinaryIO | Base64Writer = Base64Writer(out) if settings.base64 else out
                    result = envelope.encrypt_stream(
                        meter, sink, context=settings.context, **crypto.arguments(),  # type: ignore[arg-type]
                        algorithm=settings.algorithm, frame_length=settings.frame_length,
                        commitment_policy=settings.commitment_policy,
                        max_encrypted_data_keys=settings.max_encrypted_data_keys,
                        plaintext_length=job.size, threads=threads)
                    if isinstance(sink, Base64Writer):
                        sink.finish()
            else:
                source = Base64Reader(meter) if settings.base64 else meter
                max_edks = settings.max_encrypted_data_keys
                destination = Destination(job.destination, force=settings.force, mode=0o600,
                                          make_folders=settings.make_folders)
                with destination as out:
                    sink = out
                    result = envelope.decrypt_stream(
                        source, out, **crypto.arguments(),  # type: ignore[arg-type]
                        commitment_policy=settings.commitment_policy, required_context=settings.context,
                        unsigned_only=settings.unsigned_only, threads=threads,
                        max_encrypted_data_keys=envelope.DEFAULT_MAX_ENCRYPTED_DATA_KEYS if max_edks is None
                        else max_edks,
                        max_frame_length=settings.max_frame_length or envelope.DEFAULT_MAX_FRAME_LENGTH)
        finally:
            if raw is not sys.stdin.buffer:
                raw.close()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        code, message = classify(exc, head=meter.head if meter is not None else None,
                                 decoding=settings.base64 and settings.direction == "decrypt")
        if debug():
            import traceback

            traceback.print_exc(file=sys.stderr)
        record.update(error=message, exit_code=code, seconds=round(time.perf_counter() - started, 6))
        return Outcome(job, code, message, record)
    if settings.metadata:
        record["header"] = header_summary(result.header)
        record["bytes_in"] = meter.count
        record["bytes_out"] = sink.count if isinstance(sink, Base64Writer) else result.bytes_written
        record["seconds"] = round(time.perf_counter() - started, 6)
    return Outcome(job, ExitCode.OK, None, record)


# ---------------------------------------------------------------------------------------------------------
# worker processes


_WORKER: dict[str, Any] = {}


def _init_worker(settings: Settings) -> None:
    from . import signals

    signals.install(main=False)  # a signal removes this worker's temporary file; the main process reports
    _WORKER["settings"] = settings
    _WORKER["crypto"] = build_crypto(settings)  # this worker's own keyring and (empty) cache


def _work(job: Job) -> Outcome:
    return run_job(job, _WORKER["settings"], _WORKER["crypto"], threads=0)


def _start_method() -> str | None:
    # fork starts workers in milliseconds with the library already imported; elsewhere the platform default.
    return "fork" if sys.platform.startswith("linux") else None


def _in_processes(jobs: list[Job], settings: Settings, workers: int) -> Iterator[Outcome]:
    """Start the workers now and return their outcomes in input order.

    Forking happens here, before the progress bar starts its thread; the only other thread is the signal
    watcher, which holds no lock while it waits (cli/envelope_cli/signals.py)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(_start_method())
    chunk = max(1, min(64, len(jobs) // (workers * 8)))
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings,))
    try:
        outcomes = executor.map(_work, jobs, chunksize=chunk)  # submits every chunk: forks the workers
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    return _collect(executor, outcomes)


def _collect(executor: Any, outcomes: Iterator[Outcome]) -> Iterator[Outcome]:
    import multiprocessing

    try:
        yield from outcomes
    except BaseException:
        # SIGTERM makes each worker remove its temporary file (see _init_worker); they are our own children.
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------
# the whole run


class MetadataLog:
    """``--metadata-output``: one JSON line per processed input, appended as each finishes."""

    def __init__(self, path: str | None) -> None:
        self.stream: Any = None
        if path == STDIO:
            self.stream = sys.stdout
        elif path is not None:
            from .files import FileProblem

            try:
                self.stream = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise FileProblem("cannot write metadata to", exc, path) from None
        self._own = path not in (None, STDIO)

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is not None:
            from .headers import json_text

            self.stream.write(json_text(record) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._own and self.stream is not None:
            self.stream.close()


def run_plan(plan: Plan, settings: Settings, crypto: Crypto, *, workers: int, progress: bool | None,
             metadata_output: str | None) -> int:
    """Run every job; print one error line per failed input. Returns the exit code of the first failure.

    ``crypto`` serves jobs run in this process; worker processes build their own from ``settings``. With a
    cache, ``--metadata-output`` gets one more line after the inputs: the cache settings and the stats of
    every process's cache, summed.
    """
    metadata = MetadataLog(metadata_output)
    sizes = [job.size for job in plan.jobs]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    workers = max(1, min(workers, len(plan.jobs)))
    if workers > 1:
        results = _in_processes(plan.jobs, settings, workers)  # before the progress bar starts a thread
        bar = Progress(settings.direction, total, progress, files=len(plan.jobs))
    else:
        bar = Progress(settings.direction, total, progress, files=len(plan.jobs))
        results = (run_job(job, settings, crypto, on_read=bar.advance) for job in plan.jobs)
    code = 0
    failed = 0
    cache_total: CacheStats | None = None
    try:
        for outcome in results:
            bar.file_done((outcome.job.size or 0) if workers > 1 else 0)
            if outcome.error is not None:
                code = code or outcome.code
                failed += 1
                print_error(f"{outcome.job.source}: {outcome.error}" if plan.many else outcome.error)
            if outcome.cache_counts is not None:
                from envelope import CacheStats

                counts = CacheStats(**outcome.cache_counts)
                cache_total = counts if cache_total is None else cache_total + counts
            metadata.write(outcome.record)
        if settings.cache is not None and cache_total is not None:
            metadata.write({"mode": settings.direction, "summary": True, "inputs": len(plan.jobs),
                            "failed": failed,
                            "cache": {"scope": "per-process", "caches": workers, **settings.cache.describe()},
                            "cache_stats": cache_total.as_dict()})
    finally:
        bar.close()
        metadata.close()
    return code
