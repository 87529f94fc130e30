"""Running encrypt / decrypt over a plan of (input, output) pairs: one inline, or many in worker processes.

Each job opens its input as a buffered binary file, opens an atomic :class:`~cli.files.Destination` and hands
both to the library's streaming API, which runs its own read / AES-GCM / write thread pipeline. Many files run
in worker *processes*: per-file work is mostly Python (header, key wrapping, file system calls) that holds the
GIL, so threads do not scale (measured: README "Command-line reference", ``--workers``).
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
    from envelope import Keyring

__all__ = ["Outcome", "Settings", "default_workers", "run_plan"]

TERMINAL_CIPHERTEXT = "refusing to write binary ciphertext to a terminal: use -o FILE, a pipe, or --encode"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
    unsigned_only: bool = False
    base64: bool = False  # --encode / --decode
    force: bool = False
    make_folders: bool = False
    metadata: bool = False  # build the --metadata-output record


@dataclass
class Outcome:
    job: Job
    code: int
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def _small(size: int | None) -> bool:
    """Inputs that fit in one batch gain nothing from the library's thread pipeline, only thread start-up."""
    from envelope.stream import BATCH_BYTES

    return size is not None and size <= BATCH_BYTES


def run_job(job: Job, settings: Settings, keyring: Keyring, *, threads: int | None = None,
            on_read: Callable[[int], None] | None = None) -> Outcome:
    """Encrypt or decrypt one input into one output. Library and I/O errors become a failed :class:`Outcome`."""
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
                        meter, sink, keyring=keyring, context=settings.context,  # type: ignore[arg-type]
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
                        source, out, keyring=keyring,  # type: ignore[arg-type]
                        commitment_policy=settings.commitment_policy, required_context=settings.context,
                        unsigned_only=settings.unsigned_only, threads=threads,
                        max_encrypted_data_keys=envelope.DEFAULT_MAX_ENCRYPTED_DATA_KEYS if max_edks is None
                        else max_edks)
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
    _WORKER["keyring"] = build_keyring(settings.keys, settings.direction)


def _work(job: Job) -> Outcome:
    return run_job(job, _WORKER["settings"], _WORKER["keyring"], threads=0)


def _start_method() -> str | None:
    # fork starts workers in milliseconds with the library already imported; elsewhere the platform default.
    return "fork" if sys.platform.startswith("linux") else None


def _in_processes(jobs: list[Job], settings: Settings, workers: int) -> Iterator[Outcome]:
    """Start the workers now and return their outcomes in input order.

    Forking happens here, before the progress bar starts its thread; the only other thread is the signal
    watcher, which holds no lock while it waits (cli/signals.py)."""
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
            import json

            self.stream.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._own and self.stream is not None:
            self.stream.close()


def run_plan(plan: Plan, settings: Settings, keyring: Keyring, *, workers: int, progress: bool | None,
             metadata_output: str | None) -> int:
    """Run every job; print one error line per failed input. Returns the exit code of the first failure.

    ``keyring`` serves jobs run in this process; worker processes build their own from ``settings.keys``.
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
        results = (run_job(job, settings, keyring, on_read=bar.advance) for job in plan.jobs)
    code = 0
    try:
        for outcome in results:
            bar.file_done((outcome.job.size or 0) if workers > 1 else 0)
            if outcome.error is not None:
                code = code or outcome.code
                print_error(f"{outcome.job.source}: {outcome.error}" if plan.many else outcome.error)
            metadata.write(outcome.record)
    finally:
        bar.close()
        metadata.close()
    return code
