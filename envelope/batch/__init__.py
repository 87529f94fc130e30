"""Many inputs at once: whole folders and ``s3://`` prefixes, on this machine's cores or on a Dask cluster.

    import envelope.batch

    report = envelope.batch.encrypt_many("s3://in/logs/", "s3://out/logs/", keys=["kms:arn:aws:kms:..."],
                                         context={"app": "web"})
    report = envelope.batch.decrypt_many("logs.enc", "logs", keys=["file:app.key"], skip_existing=True)

    from distributed import Client                      # pip install 'envelope-crypt[dask]'
    with Client("tcp://scheduler:8786") as client:
        report = envelope.batch.encrypt_many("s3://in/", "s3://out/", keys=["kms:alias/app"], client=client)

:func:`encrypt_many` and :func:`decrypt_many` plan (input, output) pairs exactly as ``envelope encrypt -r`` /
``decrypt -r`` do (the same code: ``planning``): the files below a folder or the objects below a prefix, output
names from ``suffix``, every output checked before any work (none may overwrite an input, two may not
collide, an existing one is refused unless ``force``, or left alone with ``skip_existing``). ``inputs`` may
also be explicit ``(input, output)`` pairs. The pairs then run in worker processes of this machine
(``workers``, default: its cores) or, given ``client`` (a ``distributed.Client``), on its Dask cluster; either
way each pair runs through :func:`envelope.batch.jobs.process_task`, the CLI's own runner, in the process that
runs it, with a keyring that process builds from ``keys`` (key specs: ``file:PATH``, ``kms:ID``,
``ssm:/NAME``, ``secretsmanager:NAME``), so no key travels (docs/scale-out.md). Outputs appear only complete.

Both return a :class:`BatchReport` (every pair's :class:`BatchResult`, in plan order). With ``check`` (the
default) a run in which any pair failed raises :class:`BatchFailed`, which carries the report: the other pairs
were done, and a second call with ``skip_existing=True`` does only what is missing.

The modules of this package are what ``envelope encrypt -r`` / ``decrypt -r`` are made of, and the CLI uses them
as they are: ``locations`` (the source / sink protocol and the registry of location kinds), ``files``,
``folders`` and ``tempfiles`` (local files, atomic outputs), ``s3_locations`` (``s3://`` objects and prefixes),
``stored_locations`` (``ssm:`` / ``secretsmanager:``), ``planning`` (which input goes to which output, checked
before any work), ``keys`` (key specs -> keyring, built in the process that uses it), ``jobs`` (typed jobs,
materials, the task runner and the choice of executor), ``workers`` (worker processes of this machine),
``cluster`` (Dask; needs the extra), ``streams`` (input meter, base64) and ``headers`` (header JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import EnvelopeError

if TYPE_CHECKING:
    from envelope import AlgorithmSuite, CacheStats, CommitmentPolicy

    from .jobs import Job, Outcome, Run

__all__ = ["BatchFailed", "BatchReport", "BatchResult", "decrypt_many", "encrypt_many"]

Inputs = str | Sequence[str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class BatchResult:
    """One pair. ``error`` (one line) and ``code`` (nonzero) when it failed; ``skipped`` when nothing was done
    because its output exists (``skip_existing``); ``metadata``: what ``envelope --metadata-output`` records
    for it (header summary with the message id, bytes in and out, seconds)."""

    source: str
    destination: str
    error: str | None = None
    code: int = 0
    skipped: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchReport:
    """What a batch did. ``results``: first the pairs left out because their outputs existed at planning
    (``skip_existing``: ``skipped`` says so), then every other pair in plan order. ``left_out``: (location, why)
    for what the folder walk skipped (FIFOs, sockets, links that lead outside the folder). ``cache_stats``:
    every process's cache, summed."""

    results: tuple[BatchResult, ...]
    left_out: tuple[tuple[str, str], ...] = ()
    cache_stats: CacheStats | None = None

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    @property
    def failed(self) -> tuple[BatchResult, ...]:
        return tuple(result for result in self.results if not result.ok)

    @property
    def done(self) -> tuple[BatchResult, ...]:
        """The pairs this call encrypted or decrypted (or an earlier attempt of the same task did)."""
        return tuple(result for result in self.results if result.ok and result.skipped is None)


class BatchFailed(EnvelopeError):
    """Some pairs failed (the others were done): ``report`` has them all, ``report.failed`` the failures."""

    def __init__(self, report: BatchReport) -> None:
        first = report.failed[0]
        more = len(report.failed) - 1
        super().__init__(f"{first.source}: {first.error}" + (f" (and {more} more failed)" if more else ""))
        self.report = report


def _result(outcome: Outcome) -> BatchResult:
    return BatchResult(outcome.task.source, outcome.task.destination, outcome.error, outcome.code, outcome.skipped,
                       outcome.record)


def _run_many(run: Run, inputs: Inputs, output: str | None, *, suffix: str | None, follow_symlinks: bool,
              workers: int | None, client: Any, check: bool) -> BatchReport:
    """Plan, then run: the library's face of what ``envelope_cli.app._execute`` and ``runner`` do."""
    from .jobs import EXISTS, Tally, run_tasks
    from .locations import Walk, configure
    from .planning import Naming, plan_pairs, plan_tasks
    from .workers import default_workers

    configure(run.locations)  # planning asks the kinds (does an S3 object exist?) with these settings
    materials = run.materials()  # checks keys and cache limits before any output exists
    left_out: list[tuple[str, str]] = []
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    if items and all(isinstance(item, tuple) for item in items):
        if output is not None:
            raise _usage("give either (input, output) pairs or an output folder, not both")
        pairs = [(str(pair[0]), str(pair[1])) for pair in items]
        plan = plan_pairs(pairs, force=run.force, key_files=run.key_files, skip_existing=run.skip_existing)
    elif all(isinstance(item, str) for item in items):
        plan = plan_tasks([str(item) for item in items], output, naming=Naming(run.job.mode, suffix),
                          walk=Walk(True, follow_symlinks, lambda where, why: left_out.append((where, why))),
                          force=run.force, key_files=run.key_files, skip_existing=run.skip_existing)
        if plan.to_stdout:
            raise _usage("a batch writes files or objects, not standard output: name an output folder or prefix")
    else:
        raise _usage("inputs: a folder, an s3:// prefix, a file or object, a list of them, or (input, output) pairs")
    run = replace(run, make_folders=plan.make_folders, metadata=True)
    tally = Tally()
    results = [BatchResult(task.source, task.destination, skipped=EXISTS) for task in plan.existing]
    try:
        outcomes, _ = run_tasks(plan.tasks, run, materials, workers=workers or default_workers(plan.tasks),
                                 client=client)
        for outcome in outcomes:
            tally.add(outcome)
            results.append(_result(outcome))
    finally:
        tally.finish()
    report = BatchReport(tuple(results), tuple(left_out), tally.cache)
    if check and not report.ok:
        raise BatchFailed(report)
    return report


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


def _settings(*, reads_messages: bool, force: bool, part_size: int | None) -> Any:
    from .locations import Settings
    from .s3_locations import NAME, S3Options

    return Settings(reads_messages, force=force, options=((NAME, S3Options(part_size)),))


def _cache(max_age: float | None, max_messages: int | None, max_bytes: int | None, capacity: int | None) -> Any:
    import envelope

    from .jobs import CacheSettings

    if max_age is None:
        if (max_messages, max_bytes, capacity) != (None, None, None):
            raise _usage("cache_max_messages, cache_max_bytes and cache_capacity need cache_max_age")
        return None
    return CacheSettings(max_age, envelope.DEFAULT_CACHE_MAX_MESSAGES if max_messages is None else max_messages,
                         envelope.DEFAULT_CACHE_MAX_BYTES if max_bytes is None else max_bytes,
                         1000 if capacity is None else capacity)


def encrypt_many(inputs: Inputs, output: str | None = None, *, keys: Sequence[str],
                 context: Mapping[str, str] | None = None, algorithm: AlgorithmSuite | str | int | None = None,
                 frame_length: int | None = None, commitment_policy: CommitmentPolicy | str | None = None,
                 max_encrypted_data_keys: int | None = None, suffix: str | None = None, force: bool = False,
                 skip_existing: bool = False, follow_symlinks: bool = False, part_size: int | None = None,
                 region: str | None = None, grant_tokens: Sequence[str] = (), cache_max_age: float | None = None,
                 cache_max_messages: int | None = None, cache_max_bytes: int | None = None,
                 cache_capacity: int | None = None, workers: int | None = None, client: Any = None,
                 check: bool = True) -> BatchReport:
    """Encrypt every file below a folder, every object below an ``s3://`` prefix, the inputs named, or the
    ``(input, output)`` pairs given, as ``envelope encrypt -r INPUTS -o OUTPUT`` does (module docstring).

    ``output``: a folder or prefix (default: beside each input); names are NAME + ``suffix`` (default
    ``.encrypted``). ``keys``: key specs; the first makes the data key and each wraps it. ``context``, ``algorithm``,
    ``frame_length``, ``commitment_policy``, ``max_encrypted_data_keys``: as :func:`envelope.encrypt_stream`.
    ``cache_*``: the data-key cache, one per process (``cache_max_age`` turns it on). ``part_size``: of
    ``s3://`` outputs. ``workers``: processes of this machine; ``client``: a ``distributed.Client`` instead."""
    import envelope

    from .jobs import EncryptJob, Run
    from .keys import KeyOptions

    job: Job = EncryptJob(dict(context or {}), algorithm=envelope.resolve_suite(algorithm),
                          frame_length=frame_length, max_encrypted_data_keys=max_encrypted_data_keys,
                          commitment_policy=None if commitment_policy is None else envelope.resolve_policy(
                              commitment_policy))
    run = Run(job, KeyOptions(tuple(keys), region=region, grant_tokens=tuple(grant_tokens)),
              _cache(cache_max_age, cache_max_messages, cache_max_bytes, cache_capacity), force=force,
              locations=_settings(reads_messages=False, force=force, part_size=part_size), skip_existing=skip_existing)
    return _run_many(run, inputs, output, suffix=suffix, follow_symlinks=follow_symlinks, workers=workers,
                     client=client, check=check)


def decrypt_many(inputs: Inputs, output: str | None = None, *, keys: Sequence[str] = (), discovery: bool = False,
                 discovery_partition: str | None = None, discovery_accounts: Sequence[str] = (),
                 required_context: Mapping[str, str] | None = None,
                 commitment_policy: CommitmentPolicy | str | None = None, unsigned_only: bool = False,
                 max_encrypted_data_keys: int | None = None, max_frame_length: int | None = None,
                 suffix: str | None = None, force: bool = False, skip_existing: bool = False,
                 follow_symlinks: bool = False, part_size: int | None = None, region: str | None = None,
                 grant_tokens: Sequence[str] = (), cache_max_age: float | None = None,
                 cache_capacity: int | None = None, workers: int | None = None, client: Any = None,
                 check: bool = True) -> BatchReport:
    """Decrypt every message below a folder or prefix (or the inputs or pairs given), as ``envelope decrypt -r``
    does: outputs are NAME without ``suffix`` (default ``.encrypted``) when it ends with it, else
    NAME.decrypted; decrypted files have mode 0600 and appear only once every frame (and the signature)
    verified. ``keys`` (or ``discovery``, optionally filtered to ``discovery_accounts``): who may open the data
    keys. The other arguments are :func:`envelope.decrypt_stream`'s and :func:`encrypt_many`'s."""
    import envelope

    from .jobs import DecryptJob, Run
    from .keys import KeyOptions

    job: Job = DecryptJob(dict(required_context or {}),
                          max_encrypted_data_keys=envelope.DEFAULT_MAX_ENCRYPTED_DATA_KEYS
                          if max_encrypted_data_keys is None else max_encrypted_data_keys,
                          max_frame_length=envelope.DEFAULT_MAX_FRAME_LENGTH if max_frame_length is None
                          else max_frame_length,
                          commitment_policy=None if commitment_policy is None else envelope.resolve_policy(
                              commitment_policy), unsigned_only=unsigned_only)
    keys_given = KeyOptions(tuple(keys), discovery=discovery, discovery_partition=discovery_partition,
                            discovery_accounts=tuple(discovery_accounts), region=region,
                            grant_tokens=tuple(grant_tokens))
    run = Run(job, keys_given, _cache(cache_max_age, None, None, cache_capacity), force=force,
              locations=_settings(reads_messages=True, force=force, part_size=part_size), skip_existing=skip_existing)
    return _run_many(run, inputs, output, suffix=suffix, follow_symlinks=follow_symlinks, workers=workers,
                     client=client, check=check)
