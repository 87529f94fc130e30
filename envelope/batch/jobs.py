"""What a run does to each input, and running it: typed job descriptions, materials, the task runner.

A command line (or a call of :func:`envelope.batch.encrypt_many`) becomes one frozen :class:`Run`: an
:class:`EncryptJob`, :class:`DecryptJob` or :class:`RewrapJob` whose fields are the keyword arguments of
:func:`envelope.encrypt_stream` / :func:`envelope.decrypt_stream` / :func:`envelope.rewrap_stream`, the key
specs and cache settings that make the materials manager, and the output rules. :func:`process_task` runs one
:class:`~envelope.batch.planning.Task` with it: it opens the source and the sink through
:mod:`envelope.batch.locations` (so every kind of location works the same), lets the job call the library, and
commits the sink only after the library returned. The input goes through an
:class:`~envelope.batch.streams.InputMeter` that holds it to the size the source had when it was opened (an
input that changes while being read fails, exit 4) and the output through an
:class:`~envelope.batch.streams.OutputWriter`, so I/O errors name the file. The runner has no branch on the
direction: what differs between encrypt, decrypt and rewrap is a method or attribute of the job. A failure
becomes an :class:`Outcome` with a code and one line, from ``Run.classify`` (the CLI passes its own, which gives
its exit codes and wording; the library's default is :func:`describe_error`).

:func:`run_tasks` is the one place that chooses where tasks run: in this process (one worker), in worker
processes of this machine (``envelope.batch.workers``), or on a Dask cluster (``envelope.batch.cluster``) when
a ``distributed.Client`` is given. Every executor has the shape ``(tasks, run, workers) -> outcomes in plan
order`` and calls :func:`process_task` where the task runs, with materials built there from ``run``: the same
code path runs each task, whichever runs it.

Each process encrypts or decrypts through one :class:`Materials`: always a materials manager, the
:class:`~envelope.DefaultMaterialsManager` over the keyring, or with ``--cache-max-age`` a
:class:`~envelope.CachingMaterialsManager`. The cache is **one per process**: an inline run has one cache for
all its files, and each worker process builds its own (``envelope.batch.workers``, after the fork, so no entry
is ever inherited; a Dask worker process builds one per run on its first task). A data key is therefore only
ever used by the process that made it, and every limit (``max_age``, ``max_messages``, ``max_bytes``) holds per
data key exactly as in the library; a run with N workers may make up to N times as many data keys (README
"Data-key cache"). Each outcome carries what its task added to its process's cache stats, so the main process
sums them (``CacheStats.__add__``) for the ``--metadata-output`` summary line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol

from . import tempfiles
from .headers import header_summary
from .keys import KeyOptions, build_keyring, key_files
from .locations import Kind, Settings, SinkRules, configure, kind_of
from .planning import Task
from .streams import Base64Reader, Base64Writer, InputMeter, OutputWriter, Readable, Writable

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

__all__ = ["CacheSettings", "Classifier", "DecryptJob", "Done", "EncryptJob", "Job", "Materials", "Outcome",
           "RewrapJob", "Run", "Tally", "describe_error", "failure", "process_task", "run_tasks"]

#: Turns a task's exception into (code, one-line message); gets the exception, the input's first bytes (when
#: it came from reading one) and whether the input was base64. Must be picklable (a module-level function).
Classifier = Callable[[BaseException, "bytes | None", bool], "tuple[int, str]"]
OK = 0


def describe_error(exc: BaseException, head: bytes | None, decoding: bool) -> tuple[int, str]:
    """The library's classifier: code 1 for every failure, and the exception's own message (an OSError's
    names what was being done and where: ``cannot read input 'x': No such file or directory``)."""
    if isinstance(exc, OSError) and exc.strerror:
        action = getattr(exc, "action", None)
        where = f" {exc.filename!r}" if exc.filename is not None else ""
        return 1, f"{action}{where}: {exc.strerror}" if action else f"{exc.strerror}{where}"
    return 1, str(exc) or type(exc).__name__


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
    """Everything a task needs besides its files. Picklable: worker processes and Dask workers receive it, so
    it holds key *specs* (``keys``), never keys or data keys: each process builds its keyring from them."""

    job: Job
    keys: KeyOptions
    cache: CacheSettings | None = None
    force: bool = False
    make_folders: bool = False  # several inputs or -r: output folders are created
    metadata: bool = False  # build the --metadata-output record
    locations: Settings = field(default_factory=Settings)  # what the location kinds are told (before each task)
    classify: Classifier = describe_error  # a failure -> (code, one line), in the process that ran the task
    #: called once in each worker process of this machine before its first task (the CLI: its signal handling)
    worker_setup: Callable[[], None] | None = None
    skip_existing: bool = False  # an output that exists (made meanwhile) is left alone: the task is skipped
    #: A random id of the run, set by executors that may run a task again (Dask, after a worker was lost):
    #: every output carries it (``SinkRules.mark``), so that a retry whose earlier attempt completed finds its
    #: own output and counts the task as done, instead of failing with "exists already" or writing it twice.
    mark: str | None = None

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
    """What became of one task: ``code`` 0 and ``error`` None when it succeeded."""

    task: Task
    code: int
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    cache_counts: dict[str, int] | None = None  # what this task added to its process's cache stats
    bytes_out: int | None = None  # bytes written to the output, when it succeeded
    created: list[str] = field(default_factory=list)  # folders this task created
    skipped: str | None = None  # why nothing was done although nothing failed (the output exists already)
    worker: str | None = None  # the Dask worker that ran it (None: this machine's processes)

    @property
    def earlier(self) -> bool:
        """The output was written by an earlier attempt of this task (a Dask retry), not by this one."""
        return bool(self.record.get(EARLIER))


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


def _threads(kinds: tuple[Kind, Kind], size: int | None) -> int | None:
    """The frame engine's threads for a task between locations of ``kinds``: what they ask for (S3: 0), else
    the library's choice."""
    import envelope

    wanted = [kind.engine_threads for kind in kinds if kind.engine_threads is not None]
    return min(wanted) if wanted else envelope.stream_threads(size)


def failure(task: Task, run: Run, exc: BaseException, head: bytes | None = None,
            seconds: float | None = None) -> Outcome:
    """The failed outcome of ``task``: ``run.classify`` gives its code and one line, also in its record."""
    code, message = run.classify(exc, head, run.job.decodes)
    record: dict[str, Any] = {"mode": run.job.mode, "input": task.source, "output": task.destination,
                              "error": message, "exit_code": code}
    if seconds is not None:
        record["seconds"] = round(seconds, 6)
    return Outcome(task, code, message, record)


#: The record's flag for an output that an earlier attempt of the same task wrote (see ``Run.mark``).
EARLIER = "written_by_earlier_attempt"
EXISTS = "the output exists"


def _marked(task: Task, run: Run) -> bool:
    """The task's output carries this run's mark: an earlier attempt of the task committed it."""
    return run.mark is not None and kind_of(task.destination).mark_of(task.destination) == run.mark


def _earlier(task: Task, run: Run) -> bool | None:
    """:func:`_marked`, or None when that cannot be told (the output cannot be looked at)."""
    try:
        return _marked(task, run)
    except Exception:  # noqa: BLE001 - the caller reports the "exists" error itself
        return None


def _transform(task: Task, run: Run, materials: Materials, threads: int | None,
               on_read: Callable[[int], None] | None) -> Outcome:

    job = run.job
    started = time.perf_counter()
    record: dict[str, Any] = {"mode": job.mode, "input": task.source, "output": task.destination}
    meter: InputMeter | None = None
    try:
        if run.force and _marked(task, run):  # with --force no conditional write would tell: look first
            return Outcome(task, OK, None, {**record, EARLIER: True})
        kinds = kind_of(task.source), kind_of(task.destination)  # once per task: each is asked below
        source = kinds[0].source(task.source)
        try:
            meter = InputMeter(source.open(), on_read, location=task.source, size=source.size)
            sink = kinds[1].sink(task.destination, SinkRules(
                force=run.force, mode=job.output_mode(source.mode), make_folders=run.make_folders,
                refuse_terminal=job.refuse_terminal, expected_size=source.size, mark=run.mark))
            try:
                out = OutputWriter(sink.open(), task.destination)
                done = job.transform(meter, out, materials, length=source.size,
                                     threads=_threads(kinds, source.size) if threads is None else threads)
                sink.commit()
            except BaseException:
                sink.abort()
                raise
        finally:
            source.close()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        if kind_of(task.destination).exists_error(task.destination, exc):
            earlier = _earlier(task, run)
            if earlier:
                return Outcome(task, OK, None, {**record, EARLIER: True})
            if earlier is False and run.skip_existing:
                return Outcome(task, OK, None, record, skipped=EXISTS)
        return failure(task, run, exc, meter.head if meter is not None else None, time.perf_counter() - started)
    if run.metadata:
        record["header"] = header_summary(done.header)
        record["bytes_in"] = meter.count
        record["bytes_out"] = done.bytes_out
        record["seconds"] = round(time.perf_counter() - started, 6)
    return Outcome(task, OK, None, record, bytes_out=done.bytes_out)


class Tally:
    """What the outcomes of a run add up to, as they arrive (in plan order): the first failure's code, the
    counts, the folders the run created, and the cache stats of every process's cache, summed."""

    def __init__(self) -> None:
        self.code = OK
        self.failed = self.succeeded = self.skipped = 0
        self.created: list[str] = []
        self.cache: CacheStats | None = None
        self.workers: set[str] = set()  # the Dask workers that ran tasks

    def add(self, outcome: Outcome) -> None:
        self.created += outcome.created
        if outcome.error is not None:
            self.code = self.code or outcome.code
            self.failed += 1
        elif outcome.skipped is not None:
            self.skipped += 1
        else:
            self.succeeded += 1
        if outcome.worker is not None:
            self.workers.add(outcome.worker)
        if outcome.cache_counts is not None:
            from envelope import CacheStats

            counts = CacheStats(**outcome.cache_counts)
            self.cache = counts if self.cache is None else self.cache + counts

    def finish(self) -> None:
        """Remove the folders the run created and left empty (their only outputs failed)."""
        tempfiles.remove_empty_folders(self.created)


def run_tasks(tasks: list[Task], run: Run, materials: Materials, *, workers: int, client: Any = None,
              on_read: Callable[[int], None] | None = None) -> tuple[Iterator[Outcome], bool]:
    """Start running ``tasks`` and return (their outcomes in plan order, whether they run in this process).

    The one place an executor is chosen: ``client`` (a ``distributed.Client``) runs them on its Dask cluster
    (``envelope.batch.cluster``); else ``workers`` > 1 in worker processes of this machine; else here, one after
    the other, with ``materials`` (and ``on_read`` told of every batch read). Worker processes and Dask workers
    build their own materials from ``run``. Executors start now (forking before the caller starts any thread,
    a progress bar)."""
    if client is not None:
        from .cluster import on_cluster

        return on_cluster(client, tasks, run, workers), False
    if min(workers, len(tasks)) > 1:
        from .workers import in_processes

        return in_processes(tasks, run, min(workers, len(tasks))), False
    return (process_task(task, run, materials, on_read=on_read) for task in tasks), True
