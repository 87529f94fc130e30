"""What a run does to each input, and running it: typed job descriptions, materials, the task runner.

A command line becomes one frozen :class:`Run`: an :class:`EncryptJob`, :class:`DecryptJob` or :class:`RewrapJob`
whose fields are the keyword arguments of :func:`envelope.encrypt_stream` / :func:`envelope.decrypt_stream` /
:func:`envelope.rewrap_stream`, the keys and cache that make the materials manager, and the output rules.
:func:`process_task` runs one :class:`~envelope_cli.planning.Task` with it: it opens the source and the sink through
``envelope_cli.locations`` (so every kind of location works the same), lets the job call the library, and commits
the sink only after the library returned. The input goes through an :class:`~envelope_cli.streams.InputMeter` that
holds it to the size the source had when it was opened (an input that changes while being read fails, exit 4) and
the output through an :class:`~envelope_cli.streams.OutputWriter`, so I/O errors name the file. The runner has no
branch on the direction: what differs between encrypt, decrypt and rewrap is a method or attribute of the job.

Each process encrypts or decrypts through one :class:`Materials`: always a materials manager, the
:class:`~envelope.DefaultMaterialsManager` over the keyring, or with ``--cache-max-age`` a
:class:`~envelope.CachingMaterialsManager`. The cache is **one per process**: an inline run has one cache for
all its files, and each worker process builds its own (``envelope_cli.workers``, after the fork, so no entry is
ever inherited). A data key is therefore only ever used by the process that made it, and every limit
(``max_age``, ``max_messages``, ``max_bytes``) holds per data key exactly as in the library; a run with N
workers may make up to N times as many data keys (README "Data-key cache"). Each outcome carries what its task
added to its process's cache stats, so the main process sums them (``CacheStats.__add__``) for the
``--metadata-output`` summary line.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol

from . import tempfiles
from .errors import ExitCode, FileProblem, classify, debug, print_error, say
from .files import STDIO
from .headers import header_summary
from .keys import KeyOptions, build_keyring, key_files
from .locations import Settings, SinkRules, configure, create_sink, kind_of, open_source
from .planning import Plan, Task
from .progress import Progress
from .streams import Base64Reader, Base64Writer, InputMeter, OutputWriter, Readable, Writable
from .tempfiles import close_quietly

if TYPE_CHECKING:
    from envelope import (
        AlgorithmSuite,
        CacheStats,
        CachingMaterialsManager,
        CommitmentPolicy,
        Header,
        Keyring,
        MaterialsManager,
    )

__all__ = ["CacheSettings", "DecryptJob", "EncryptJob", "Job", "Materials", "Outcome", "RewrapJob", "Run",
           "execute_plan", "process_task"]

def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


TERMINAL_CIPHERTEXT = "refusing to write binary ciphertext to a terminal: use -o FILE, a pipe, or --encode"


class Done(NamedTuple):
    header: Header
    bytes_out: int  # bytes written to the output (base64 text with --encode)


class Job(Protocol):
    """What the task runner needs from a job description; :class:`EncryptJob` and :class:`DecryptJob` are the
    two there are. Picklable (worker processes receive it)."""

    @property
    def mode(self) -> Literal["encrypt", "decrypt", "rewrap"]:
        """The command: the progress label, the metadata ``mode``, the output names."""

    @property
    def key_purpose(self) -> Literal["encrypt", "decrypt"]:
        """What the ``--key`` keys (the run's ``keys``) are for."""

    @property
    def new_keys(self) -> KeyOptions | None:
        """Keys that wrap the data key anew (rewrap), besides the run's ``keys``; None for the others."""

    @property
    def decodes(self) -> bool:
        """The input is base64 (for the error hints)."""

    @property
    def binary_input(self) -> bool:
        """The input is a binary message, which a terminal cannot be."""

    @property
    def refuse_terminal(self) -> str | None:
        """The usage error when the output is a terminal (None: a terminal is fine)."""

    def output_mode(self, input_mode: int | None) -> int | None:
        """Permission bits of a new output file, given the input's."""

    def transform(self, source: Readable, destination: Writable, materials: Materials, *,
                  length: int | None, threads: int | None) -> Done:
        """Call the library: ``source`` -> ``destination``; ``length`` is the input's size when known."""


@dataclass(frozen=True)
class EncryptJob:
    """``envelope encrypt``: the keyword arguments of :func:`envelope.encrypt_stream`, and ``--encode``."""

    context: Mapping[str, str]
    algorithm: AlgorithmSuite | None = None
    frame_length: int | None = None
    commitment_policy: CommitmentPolicy | None = None
    max_encrypted_data_keys: int | None = None
    encode: bool = False  # write base64
    required_context_keys: frozenset[str] = frozenset()  # --required-context-key: authenticated, not stored

    mode: ClassVar[Literal["encrypt"]] = "encrypt"
    key_purpose: ClassVar[Literal["encrypt"]] = "encrypt"
    new_keys: ClassVar[None] = None
    #: a binary message read from a terminal is a mistake; plaintext typed at one is not
    binary_input: ClassVar[bool] = False

    @property
    def decodes(self) -> bool:
        return False

    @property
    def refuse_terminal(self) -> str | None:
        return None if self.encode else TERMINAL_CIPHERTEXT

    def output_mode(self, input_mode: int | None) -> int | None:
        """Encrypted files keep the mode of their input."""
        return input_mode

    def transform(self, source: Readable, destination: Writable, materials: Materials, *,
                  length: int | None, threads: int | None) -> Done:
        import envelope

        out: Writable = Base64Writer(destination) if self.encode else destination
        result = envelope.encrypt_stream(
            source, out, materials_manager=materials.manager, context=self.context,  # type: ignore[arg-type]
            algorithm=self.algorithm, frame_length=self.frame_length, commitment_policy=self.commitment_policy,
            max_encrypted_data_keys=self.max_encrypted_data_keys, plaintext_length=length, threads=threads,
            required_context_keys=self.required_context_keys)
        if isinstance(out, Base64Writer):
            out.finish()
            return Done(result.header, out.count)
        return Done(result.header, result.bytes_written)


@dataclass(frozen=True)
class DecryptJob:
    """``envelope decrypt``: the keyword arguments of :func:`envelope.decrypt_stream`, and ``--decode``.
    ``-c KEY=VALUE`` pairs are reproduced (``reproduced_context``), ``-c KEY`` keys required with any value
    (``required_context`` maps them to None)."""

    required_context: Mapping[str, str | None]
    max_encrypted_data_keys: int | None
    max_frame_length: int
    commitment_policy: CommitmentPolicy | None = None
    unsigned_only: bool = False
    decode: bool = False  # read base64
    reproduced_context: Mapping[str, str] = field(default_factory=dict)

    mode: ClassVar[Literal["decrypt"]] = "decrypt"
    key_purpose: ClassVar[Literal["decrypt"]] = "decrypt"
    new_keys: ClassVar[None] = None
    refuse_terminal: ClassVar[str | None] = None

    @property
    def decodes(self) -> bool:
        return self.decode

    @property
    def binary_input(self) -> bool:
        return not self.decode

    def output_mode(self, input_mode: int | None) -> int:
        """Decrypted files are private, whatever the message's file mode."""
        return 0o600

    def transform(self, source: Readable, destination: Writable, materials: Materials, *,
                  length: int | None, threads: int | None) -> Done:
        import envelope

        result = envelope.decrypt_stream(
            Base64Reader(source) if self.decode else source, destination,  # type: ignore[arg-type]
            materials_manager=materials.manager, commitment_policy=self.commitment_policy,
            required_context=self.required_context, reproduced_context=self.reproduced_context,
            unsigned_only=self.unsigned_only, max_encrypted_data_keys=self.max_encrypted_data_keys,
            max_frame_length=self.max_frame_length, threads=threads)
        return Done(result.header, result.bytes_written)


@dataclass(frozen=True)
class RewrapJob:
    """``envelope rewrap``: the keyword arguments of :func:`envelope.rewrap_stream`. The run's ``keys`` (``--old-key``
    or ``--discovery``) open the data key; ``new_keys`` (``--key``) wrap it anew. ``-c`` as for decrypt."""

    new_keys: KeyOptions  # an instance field here, a ClassVar (None) in the other jobs
    required_context: Mapping[str, str | None]
    reproduced_context: Mapping[str, str]
    max_encrypted_data_keys: int | None
    max_frame_length: int
    commitment_policy: CommitmentPolicy | None = None
    verify: bool | None = None  # None: the library's default (on for signed suites)

    mode: ClassVar[Literal["rewrap"]] = "rewrap"
    key_purpose: ClassVar[Literal["decrypt"]] = "decrypt"
    binary_input: ClassVar[bool] = True
    refuse_terminal: ClassVar[str | None] = TERMINAL_CIPHERTEXT

    @property
    def decodes(self) -> bool:
        return False

    def output_mode(self, input_mode: int | None) -> int | None:
        """A rewrapped file keeps the mode of its input, as an encrypted file does."""
        return input_mode

    def transform(self, source: Readable, destination: Writable, materials: Materials, *,
                  length: int | None, threads: int | None) -> Done:
        import envelope

        assert materials.new_keyring is not None
        result = envelope.rewrap_stream(
            source, destination, old=materials.manager, new=materials.new_keyring,  # type: ignore[arg-type]
            commitment_policy=self.commitment_policy, required_context=self.required_context,
            reproduced_context=self.reproduced_context, verify=self.verify,
            max_encrypted_data_keys=self.max_encrypted_data_keys, max_frame_length=self.max_frame_length,
            threads=threads)
        return Done(result.header, result.bytes_written)


class CacheSettings(NamedTuple):
    """``--cache-*``: the data-key cache of each process (every limit resolved: no None)."""

    max_age: float
    max_messages: int
    max_bytes: int
    capacity: int

    def describe(self) -> dict[str, Any]:
        return self._asdict()


class Materials(NamedTuple):
    """What one process encrypts and decrypts with: a materials manager (and the cache, when it is one), and for
    a rewrap the keyring that wraps the data key anew."""

    manager: MaterialsManager
    cache: CachingMaterialsManager | None = None
    new_keyring: Keyring | None = None

    def cache_counts(self) -> dict[str, int] | None:
        """This process's cache stats so far (None without a cache)."""
        return None if self.cache is None else self.cache.stats.as_dict()


@dataclass(frozen=True)
class Run:
    """Everything a task needs besides its files. Picklable: worker processes receive it."""

    job: Job
    keys: KeyOptions
    cache: CacheSettings | None = None
    force: bool = False
    make_folders: bool = False  # several inputs or -r: output folders are created
    metadata: bool = False  # build the --metadata-output record
    locations: Settings = field(default_factory=Settings)  # what the location kinds are told (before each task)

    def materials(self, warn: Callable[[str], None] | None = None) -> Materials:
        """The keyring from ``keys``, behind a new cache when ``cache`` says so. Raises UsageError for bad keys,
        so the command builds it before any file is touched; ``warn`` gets warnings about the keys."""
        import envelope

        keyring = build_keyring(self.keys, self.job.key_purpose, warn)
        new_keys = self.job.new_keys
        new_keyring = None if new_keys is None else build_keyring(new_keys, "encrypt", warn)
        if self.cache is None:
            return Materials(envelope.DefaultMaterialsManager(keyring), None, new_keyring)
        c = self.cache
        manager = envelope.CachingMaterialsManager(keyring, envelope.LocalCache(c.capacity), max_age=c.max_age,
                                                   max_messages=c.max_messages, max_bytes=c.max_bytes)
        return Materials(manager, manager, new_keyring)

    @property
    def key_files(self) -> tuple[str, ...]:
        """The key files the run reads (no output may overwrite them)."""
        new_keys = self.job.new_keys
        return key_files(self.keys) + (key_files(new_keys) if new_keys is not None else ())


@dataclass
class Outcome:
    task: Task
    code: int
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    cache_counts: dict[str, int] | None = None  # what this task added to its process's cache stats
    bytes_out: int | None = None  # bytes written to the output, when it succeeded
    created: list[str] = field(default_factory=list)  # folders this task created


def _difference(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {name: after[name] - before.get(name, 0) for name in after}


def process_task(task: Task, run: Run, materials: Materials, *, threads: int | None = None,
                 on_read: Callable[[int], None] | None = None) -> Outcome:
    """Encrypt or decrypt one input into one output. Library and I/O errors become a failed :class:`Outcome`."""
    configure(run.locations)  # in whatever process runs the task (a worker process, a Dask worker)
    before, folders = materials.cache_counts(), len(tempfiles.CREATED)
    outcome = _transform(task, run, materials, threads, on_read)
    outcome.cache_counts = _difference(materials.cache_counts(), before)
    if outcome.cache_counts is not None:
        outcome.record["cache_stats"] = outcome.cache_counts
    outcome.created = tempfiles.CREATED[folders:]
    return outcome


def _threads(task: Task, size: int | None) -> int | None:
    """The frame engine's threads for ``task``: what its locations ask for (S3: 0), else the library's choice."""
    import envelope

    wanted = [kind.engine_threads for kind in (kind_of(task.source), kind_of(task.destination))
              if kind.engine_threads is not None]
    return min(wanted) if wanted else envelope.stream_threads(size)


def _transform(task: Task, run: Run, materials: Materials, threads: int | None,
               on_read: Callable[[int], None] | None) -> Outcome:

    job = run.job
    started = time.perf_counter()
    record: dict[str, Any] = {"mode": job.mode, "input": task.source, "output": task.destination}
    meter: InputMeter | None = None
    try:
        source = open_source(task.source)
        try:
            meter = InputMeter(source.open(), on_read, location=task.source, size=source.size)
            sink = create_sink(task.destination, SinkRules(
                force=run.force, mode=job.output_mode(source.mode), make_folders=run.make_folders,
                refuse_terminal=job.refuse_terminal, expected_size=source.size))
            try:
                out = OutputWriter(sink.open(), task.destination)
                done = job.transform(meter, out, materials, length=source.size,
                                     threads=_threads(task, source.size) if threads is None else threads)
                sink.commit()
            except BaseException:
                sink.abort()
                raise
        finally:
            source.close()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        code, message = classify(exc, head=meter.head if meter is not None else None, decoding=job.decodes)
        if debug():
            import traceback

            traceback.print_exc(file=sys.stderr)
        record.update(error=message, exit_code=code, seconds=round(time.perf_counter() - started, 6))
        return Outcome(task, code, message, record)
    if run.metadata:
        record["header"] = header_summary(done.header)
        record["bytes_in"] = meter.count
        record["bytes_out"] = done.bytes_out
        record["seconds"] = round(time.perf_counter() - started, 6)
    return Outcome(task, ExitCode.OK, None, record, bytes_out=done.bytes_out)


# ---------------------------------------------------------------------------------------------------------
# the whole run


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
        from .files import in_system_folder

        if os.path.lexists(path):
            self.stream = self._open("a")
        elif in_system_folder(path):
            raise _usage(f"--metadata-output {path!r}: envelope never creates files in /dev or /proc")
        elif not os.path.isdir(os.path.dirname(path) or "."):
            folder = os.path.dirname(path)
            raise FileProblem("cannot write metadata to", OSError(errno.ENOENT, f"the folder {folder!r} does not "
                                                                                "exist"), path)

    def _open(self, mode: str) -> Any:
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
        from .headers import json_text

        try:
            self.stream.write(json_text(record) + "\n")
            self.stream.flush()
        except OSError as exc:
            raise FileProblem("cannot write metadata to", exc, self.path) from None

    def close(self, *, succeeded: bool) -> None:
        if self.stream is None or self.path == STDIO:
            return
        close_quietly(self.stream)
        if self.created and not succeeded and self.path is not None:
            try:
                os.unlink(self.path)  # ours: created by this run, which produced nothing
            except OSError:
                pass


def execute_plan(plan: Plan, run: Run, materials: Materials, *, workers: int, progress: bool | None,
                 metadata_output: str | None, verbose: bool = False) -> int:
    """Run every task; print one error line per failed input (and with ``verbose`` one line per output
    written). Returns the exit code of the first failure. Folders the run created and left empty (their only
    outputs failed) are removed at the end.

    ``materials`` serve tasks run in this process; worker processes build their own from ``run``. With a
    cache, ``--metadata-output`` gets one more line after the inputs: the cache settings and the stats of
    every process's cache, summed.

    Executors: inline (one worker), or ``envelope_cli.workers.in_processes``. Another executor (a Dask cluster)
    is a function of the same shape, ``(tasks, run, workers) -> outcomes in plan order``, whose workers call
    :func:`process_task` with ``run.materials()`` built where they run; it is started before the progress bar.
    """
    metadata = MetadataLog(metadata_output)
    sizes = [task.size for task in plan.tasks]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    workers = max(1, min(workers, len(plan.tasks)))
    if workers > 1:
        from .workers import in_processes

        results = in_processes(plan.tasks, run, workers)  # before the progress bar starts a thread
        bar = Progress(run.job.mode, total, progress, files=len(plan.tasks))
    else:
        bar = Progress(run.job.mode, total, progress, files=len(plan.tasks))
        results = (process_task(task, run, materials, on_read=bar.advance) for task in plan.tasks)
    code = 0
    failed = succeeded = 0
    created: list[str] = []
    cache_total: CacheStats | None = None
    try:
        for outcome in results:
            bar.file_done((outcome.task.size or 0) if workers > 1 else 0)
            created += outcome.created
            if outcome.error is not None:
                code = code or outcome.code
                failed += 1
                print_error(f"{outcome.task.source}: {outcome.error}" if plan.many else outcome.error)
            else:
                succeeded += 1
            if outcome.error is None and verbose:
                where = "stdout" if outcome.task.destination == STDIO else repr(outcome.task.destination)
                say(f"wrote {where} ({outcome.bytes_out} bytes)")
            if outcome.cache_counts is not None:
                from envelope import CacheStats

                counts = CacheStats(**outcome.cache_counts)
                cache_total = counts if cache_total is None else cache_total + counts
            metadata.write(outcome.record)
        if run.cache is not None and cache_total is not None:
            metadata.write({"mode": run.job.mode, "summary": True, "inputs": len(plan.tasks), "failed": failed,
                            "cache": {"scope": "per-process", "caches": workers, **run.cache.describe()},
                            "cache_stats": cache_total.as_dict()})
    finally:
        bar.close()
        metadata.close(succeeded=succeeded > 0)
        tempfiles.remove_empty_folders(created)
    return code
