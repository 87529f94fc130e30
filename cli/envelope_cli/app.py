"""The typer app: commands and options only. Option values become typed values in ``options``, a run in
``jobs``; the error boundary is ``boundary.Group``, typer's start-up speed-ups are in ``speedups``.

The library is imported inside the commands, so ``--help`` and ``--version`` never pay for it. Options shared
by encrypt and decrypt are declared once below; the KMS options (``--region``, ``--grant-token``,
``--discovery-*``) fold into :class:`envelope.batch.keys.KeyOptions`, the cache options (``--cache-*``) into
:class:`envelope.batch.jobs.CacheSettings`, both inside :class:`envelope.batch.jobs.Run`; ``runner`` runs it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import version as _version
from .boundary import Group
from .errors import ExitCode, classify, print_error
from .helptext import Command

if TYPE_CHECKING:
    from envelope.batch.jobs import Run
    from envelope.batch.locations import Settings

__all__ = ["app"]

STDIO = "-"  # stdin or stdout (envelope.batch.files.STDIO, spelled here so that --help loads no library)

EXIT_CODES = ("Exit codes: 0 success; 1 the message failed to authenticate or parse (tampered, truncated, wrong "
              "context, not an ESDK message); 2 usage error; 3 no key could open the data key; 4 I/O error; "
              "70 internal error (a bug); 129, 130, 143 stopped by SIGHUP, SIGINT, SIGTERM (temporary files "
              "removed); 141 the output pipe was closed by its reader.")


app = typer.Typer(
    cls=Group,
    name="envelope",
    help="Encrypt and decrypt files and streams in the AWS Encryption SDK message format.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"envelope {_version()}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Encrypt and decrypt files and streams in the AWS Encryption SDK message format."""


def _at_least(low: int) -> Any:
    """An option callback: the value is a whole number of at least ``low`` (typer's own ``min=`` would print
    ``[x>=1]`` after every such option's help)."""

    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise typer.BadParameter(f"{value} is below the minimum of {low}")
        return value

    return check


# ---------------------------------------------------------------------------------------------------------
# shared options (each option's help is true for every command that has it)

DECRYPT_CONTEXT_HELP = (
    "KEY=VALUE: the message's context must hold KEY with this VALUE or, if the message was encrypted with KEY as a "
    "required context key (not stored), authenticate with this pair. KEY alone: the message must hold KEY, with "
    "any value. Repeat -c for each.")

DiscoveryPartition = Annotated[str | None, typer.Option(
    "--discovery-partition", metavar="P", show_default=False,
    help="With --discovery-account: the accounts' AWS partition (default aws).")]
DiscoveryAccount = Annotated[list[str] | None, typer.Option(
    "--discovery-account", metavar="ID", show_default=False,
    help="Limit --discovery to KMS keys of this AWS account (repeatable).")]
DecryptContext = Annotated[list[str] | None, typer.Option(
    "--context", "-c", "--encryption-context", metavar="KEY[=VALUE]", show_default=False,
    help=DECRYPT_CONTEXT_HELP)]
MaxEdksRead = Annotated[int | None, typer.Option(
    "--max-encrypted-data-keys", metavar="N", callback=_at_least(1), show_default=False,
    help="Refuse messages with more than N encrypted data keys, as soon as the count is read (default "
         "256).")]
DecryptRegion = Annotated[str | None, typer.Option(
    "--region", metavar="REGION", show_default=False,
    help="AWS region of kms: keys given by key id or alias (ARNs name their own), and of --discovery's "
         "clients. Default: AWS_REGION / AWS_DEFAULT_REGION or the AWS_PROFILE's region.")]
Inputs = Annotated[list[str] | None, typer.Argument(
    metavar="INPUT", show_default=False,
    help="Files (or folders, with -r), s3://BUCKET/KEY (with -r also s3://BUCKET/PREFIX/), ssm:/NAME[:VERSION] "
         "or secretsmanager:NAME. '-', /dev/stdin or none: stdin, and then the output goes to stdout.")]
InputOption = Annotated[list[str] | None, typer.Option(
    "--input", "-i", metavar="INPUT", show_default=False,
    help="An input, as the INPUT arguments are (repeatable; the ESDK CLI's spelling).")]
Output = Annotated[str | None, typer.Option(
    "--output", "-o", metavar="OUTPUT", show_default=False,
    help="Output file ('-': stdout), s3://BUCKET/KEY, ssm:/NAME or secretsmanager:NAME; or a folder or "
         "s3:// prefix to write into (an existing folder, or a name ending in /). With several inputs or -r: a "
         "folder or prefix. Default: beside each input (see --suffix), or stdout for stdin.")]
GrantTokens = Annotated[list[str] | None, typer.Option(
    "--grant-token", metavar="TOKEN", show_default=False,
    help="An AWS KMS grant token, sent with every KMS call (repeatable).")]
CacheMaxAge = Annotated[str | None, typer.Option(
    "--cache-max-age", metavar="SECONDS", show_default=False,
    help="Turn on the data-key cache: reuse a data key for up to SECONDS (fewer KMS calls). One cache per "
         "process: see --workers.")]
CacheCapacity = Annotated[int | None, typer.Option(
    "--cache-capacity", metavar="N", callback=_at_least(1), show_default=False,
    help="Data keys the cache holds at most, least recently used dropped first (default 1000).")]
Policy = Annotated[str | None, typer.Option(
    "--commitment-policy", metavar="POLICY", show_default=False,
    help="require-encrypt-require-decrypt (default), require-encrypt-allow-decrypt or "
         "forbid-encrypt-allow-decrypt.")]
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Process the files in folder inputs, keeping the folder structure. Hidden files "
                              "are included; FIFOs, sockets, devices and dangling links are skipped and reported.")]
FollowSymlinks = Annotated[bool, typer.Option(
    "--follow-symlinks", help="With -r: follow symlinks to folders, and symlinks that lead outside the folder "
                              "named (by default these are skipped and reported).")]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace existing output files (for a symlink: the file it points to; the link stays).")]
Metadata = Annotated[str | None, typer.Option(
    "--metadata-output", metavar="PATH", show_default=False,
    help="Append one JSON line per input (mode, input, output, header summary with message_id and "
         "frame_length, bytes, seconds). '-': stdout.")]
ShowProgress = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", show_default=False,
    help="Show a progress bar on stderr. Default: when stderr is a terminal.")]
Workers = Annotated[int | None, typer.Option(
    "--workers", metavar="N", callback=_at_least(1), show_default=False,
    help="Files processed in parallel by worker processes. Default: the number of CPU cores (1 for a few small "
         "files, where starting workers would cost more than they save).")]
SkipExisting = Annotated[bool, typer.Option(
    "--skip-existing", help="Leave outputs that exist alone and process only the other inputs (resume a run that "
                            "stopped; without it an existing output is refused before any work).")]
Dask = Annotated[str | None, typer.Option(
    "--dask", metavar="SCHEDULER", show_default=False,
    help="Run the inputs on a Dask cluster instead of --workers: a scheduler address (tcp://HOST:8786), or local:N "
         "for N worker processes here (on 127.0.0.1 only). Workers build the keys from the --key specs; "
         "docs/scale-out.md. Needs envelope-crypt[dask].")]
DaskDashboard = Annotated[bool, typer.Option(
    "--dask-dashboard", help="With --dask local:N: serve the Dask dashboard, on 127.0.0.1 (its address is printed).")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Print one line per output written (its path and size in bytes) or skipped.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print no warnings (key files others can read, what -r skips); errors still print.")]
PartSize = Annotated[str | None, typer.Option(
    "--part-size", metavar="SIZE", show_default=False,
    help="Part size of s3:// outputs' multipart uploads: bytes, or with KiB, MiB or GiB (default 8MiB, at least "
         "5MiB). Each upload holds 2 parts in memory.")]
SsmTier = Annotated[str | None, typer.Option(
    "--ssm-tier", metavar="TIER", show_default=False,
    help="Tier of ssm: outputs: standard (4,096 characters, the default) or advanced (8,192).")]
VersionStage = Annotated[str | None, typer.Option(
    "--version-stage", metavar="STAGE", show_default=False,
    help="Read secretsmanager: inputs at this version stage (default AWSCURRENT; e.g. AWSPREVIOUS). For ssm: "
         "write the version in the name: ssm:/NAME:3.")]


def _locations(*, reads_messages: bool, decode: bool = False, encode: bool = False, force: bool = False,
               part_size: str | None = None, ssm_tier: str | None = None,
               version_stage: str | None = None) -> Settings:
    """What the location kinds are told (``envelope.batch.locations.Settings``): s3:// and ssm: options too."""
    from envelope.batch.locations import Settings
    from envelope.batch.s3_locations import NAME as S3
    from envelope.batch.s3_locations import S3Options
    from envelope.batch.stored_locations import NAME as STORED
    from envelope.batch.stored_locations import StoredOptions

    from . import options

    return Settings(reads_messages, decode, encode, force, options=(
        (S3, S3Options(options.part_size(part_size))),
        (STORED, StoredOptions(options.ssm_tier(ssm_tier), options.version_stage(version_stage)))))


def _inputs(arguments: list[str] | None, options: list[str] | None) -> list[str] | None:
    """INPUT arguments, then ``-i`` / ``--input`` ones."""
    return [*(arguments or []), *(options or [])] if options else arguments


def _execute(run: Run, inputs: list[str] | None, output: str | None, *, recursive: bool, follow_symlinks: bool,
             suffix: str | None, metadata_output: str | None, progress: bool | None, workers: int | None,
             verbose: bool, quiet: bool, skip_existing: bool = False, dask: str | None = None,
             dask_dashboard: bool = False) -> int:
    """Keys, then files, then work: every usage error is reported before any output exists. Every command that
    runs a job (encrypt, decrypt) comes here with the shared options (``--workers``, ``--dask``,
    ``--skip-existing``, ...), so each gets every executor."""
    from dataclasses import replace

    from envelope import UsageError
    from envelope.batch.files import is_terminal
    from envelope.batch.locations import Walk, configure, kind_of
    from envelope.batch.planning import Naming, in_this_process, plan_tasks
    from envelope.batch.workers import default_workers

    from . import signals
    from .errors import classify_task, print_warning, say
    from .runner import execute_plan

    if follow_symlinks and not recursive:
        raise UsageError("--follow-symlinks applies to -r (folder inputs); add -r")
    if dask is None and dask_dashboard:
        raise UsageError("--dask-dashboard serves the dashboard of a --dask local:N cluster; add --dask local:N")
    if dask is not None and workers is not None:
        raise UsageError("--workers and --dask exclude each other (--dask local:N sets the number of workers)")
    if dask is not None:
        from .runner import dask_support

        dask_support().parse_spec(dask)  # no extra, or a malformed --dask: refused before any work
    if metadata_output not in (None, STDIO) and kind_of(metadata_output).name != "file":
        raise UsageError(f"--metadata-output {metadata_output!r}: name a local file, or - for stdout")
    configure(run.locations)  # planning asks the kinds (existence of S3 objects, parameters) with these settings

    def warn(message: str) -> None:
        if not quiet:
            print_warning(message)

    def skipped(location: str, why: str) -> None:
        warn(f"skipped {location!r}: {why}")

    materials = run.materials(warn)  # checks keys and cache limits; no KMS call yet
    plan = plan_tasks(list(inputs or []), output, naming=Naming(run.job.mode, suffix), force=run.force,
                      walk=Walk(recursive, follow_symlinks, skipped), metadata_output=metadata_output,
                      key_files=run.key_files, skip_existing=skip_existing)
    if metadata_output == STDIO and plan.to_stdout:
        raise UsageError("--metadata-output - (stdout) cannot be used while the data also goes to stdout")
    if run.job.binary_input and plan.reads_stdin and is_terminal(sys.stdin.buffer):
        raise UsageError("stdin is a terminal: give an INPUT file or pipe the message in")
    if dask is not None and any(in_this_process(task.source) or in_this_process(task.destination)
                                for task in plan.tasks):
        raise UsageError("--dask runs every input in a worker process: inputs and outputs must be files or "
                         "objects, not stdin, stdout or another descriptor")
    if verbose:
        for task in plan.existing:
            say(f"skipped {task.destination!r}: the output exists")
    if not plan.tasks and not plan.existing:
        warn("no input files to process")
    run = replace(run, make_folders=plan.make_folders, metadata=metadata_output is not None, classify=classify_task,
                  worker_setup=signals.worker_setup, skip_existing=skip_existing)
    return execute_plan(plan, run, materials, workers=workers or default_workers(plan.tasks), progress=progress,
                        metadata_output=metadata_output, verbose=verbose, dask=dask, dask_dashboard=dask_dashboard)


# ---------------------------------------------------------------------------------------------------------
# commands


def envelope_usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


def _examples(*lines: str) -> str:
    """An epilog click prints as is (``\\b`` stops it from re-wrapping the example lines)."""
    return "Example" + ("s" if len(lines) > 1 else "") + ":\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


@app.command(cls=Command, short_help="Encrypt files or stdin into ESDK messages.",
             epilog=_examples("envelope encrypt config.json --key file:app.key -c app=web -c stage=prod",
                              "tar c conf | envelope encrypt --key file:app.key > conf.tar.encrypted",
                              "envelope encrypt -r conf -o conf.enc --key file:app.key",
                              "envelope encrypt config.json --key kms:alias/app --key file:backup.key -c app=web",
                              "envelope encrypt -r logs -o logs.enc --key kms:alias/app --cache-max-age 300",
                              "envelope encrypt big.tar -o s3://bucket/big.tar.encrypted --key kms:alias/app",
                              "envelope encrypt db.env -o ssm:/app/prod/env --key kms:alias/app")
             + "\n\n" + EXIT_CODES)
def encrypt(
    inputs: Inputs = None,
    input_option: InputOption = None,
    output: Output = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", metavar="SPEC", show_default=False,
        help="file:PATH (a key file, or just PATH) or kms:ID (AWS KMS key ARN, key id, alias/NAME or alias "
             "ARN). Repeat for several keys: the first makes the data key and every key wraps it, so any one "
             "of them can decrypt.")] = None,
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", "--encryption-context", metavar="KEY=VALUE", show_default=False,
        help="An encryption-context pair, stored in the message and authenticated (repeat -c for each "
             "pair).")] = None,
    required_context_key: Annotated[list[str] | None, typer.Option(
        "--required-context-key", metavar="KEY", show_default=False,
        help="Authenticate the -c pair of KEY without storing it in the message (the ESDK's required "
             "encryption context): decrypting then needs -c KEY=VALUE. Repeatable.")] = None,
    algorithm: Annotated[str | None, typer.Option(
        "--algorithm", metavar="ID|NAME", show_default=False,
        help="Algorithm suite: an ESDK name or hex id (0x0478, 0478). Default: 0x0478 "
             "(AES_256_GCM_HKDF_SHA512_COMMIT_KEY); 0x0578 also signs.")] = None,
    frame_size: Annotated[int | None, typer.Option(
        "--frame-size", "--frame-length", metavar="BYTES", callback=_at_least(1), show_default=False,
        help="Plaintext bytes per frame (default: 1 MiB). Above 64 MiB, what envelope decrypt reads by "
             "default, only with --allow-large-frames.")] = None,
    allow_large_frames: Annotated[bool, typer.Option(
        "--allow-large-frames", help="Allow --frame-size above 64 MiB (readers then need --max-frame-length "
                                     "and hold each frame in memory).")] = False,
    commitment_policy: Policy = None,
    encode: Annotated[bool, typer.Option("--encode", help="Write base64 (no line breaks) instead of binary.")]
    = False,
    recursive: Recursive = False,
    follow_symlinks: FollowSymlinks = False,
    suffix: Annotated[str | None, typer.Option(
        "--suffix", metavar="SUF", show_default=False,
        help="Output names: NAME + SUF (default .encrypted).")] = None,
    force: Force = False,
    metadata_output: Metadata = None,
    progress: ShowProgress = None,
    workers: Workers = None,
    dask: Dask = None,
    dask_dashboard: DaskDashboard = False,
    skip_existing: SkipExisting = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
    part_size: PartSize = None,
    ssm_tier: SsmTier = None,
    version_stage: VersionStage = None,
    max_encrypted_data_keys: Annotated[int | None, typer.Option(
        "--max-encrypted-data-keys", metavar="N", callback=_at_least(1), show_default=False,
        help="Refuse to encrypt when the keys make more than N encrypted data keys (default: no limit).")]
    = None,
    region: Annotated[str | None, typer.Option(
        "--region", metavar="REGION", show_default=False,
        help="AWS region of kms: keys given by key id or alias (ARNs name their own). Default: AWS_REGION / "
             "AWS_DEFAULT_REGION or the AWS_PROFILE's region.")] = None,
    grant_token: GrantTokens = None,
    cache_max_age: CacheMaxAge = None,
    cache_max_messages: Annotated[int | None, typer.Option(
        "--cache-max-messages", metavar="N", callback=_at_least(1), show_default=False,
        help="Messages one cached data key may protect at most (default 2^32).")] = None,
    cache_max_bytes: Annotated[int | None, typer.Option(
        "--cache-max-bytes", metavar="N", callback=_at_least(0), show_default=False,
        help="Plaintext bytes one cached data key may protect at most (default 2^63 - 1).")] = None,
    cache_capacity: CacheCapacity = None,
) -> int:
    """Encrypt files or stdin into ESDK messages.

    Outputs appear only once complete; an existing file is replaced only with --force. Encrypted files keep
    the mode of their input. An input that changes while it is read fails (exit 4).
    """
    from envelope.batch.jobs import EncryptJob, Run
    from envelope.batch.keys import KeyOptions

    from . import options

    suite, policy = options.suite(algorithm), options.policy(commitment_policy)
    options.frame_size(frame_size, allow_large=allow_large_frames)
    inputs = _inputs(inputs, input_option)
    options.check_inputs_are_not_pairs(inputs, context)
    keys = KeyOptions(tuple(key or ()), region=region, grant_tokens=tuple(grant_token or ()))
    pairs = options.pairs(context)
    for name in required_context_key or ():
        if name not in pairs:
            raise envelope_usage(f"--required-context-key {name!r}: give its pair too (-c {name}=VALUE)")
    job = EncryptJob(pairs, algorithm=suite, frame_length=frame_size, commitment_policy=policy,
                     max_encrypted_data_keys=max_encrypted_data_keys, encode=encode,
                     required_context_keys=frozenset(required_context_key or ()))
    cache = options.cache_settings(cache_max_age, cache_max_messages, cache_max_bytes, cache_capacity)
    where = _locations(reads_messages=False, encode=encode, force=force, part_size=part_size, ssm_tier=ssm_tier,
                       version_stage=version_stage)
    return _execute(Run(job, keys, cache, force=force, locations=where), inputs, output, recursive=recursive,
                    follow_symlinks=follow_symlinks, suffix=suffix, metadata_output=metadata_output,
                    progress=progress, workers=workers, verbose=verbose, quiet=quiet,
                    skip_existing=skip_existing, dask=dask, dask_dashboard=dask_dashboard)


@app.command(cls=Command, short_help="Decrypt ESDK messages (from envelope, the ESDK or its CLI).",
             epilog=_examples("envelope decrypt config.json.encrypted --key file:app.key -c app=web",
                              "envelope decrypt --key file:app.key < conf.tar.encrypted | tar x",
                              "envelope decrypt -r conf.enc -o conf --key file:app.key",
                              "envelope decrypt config.json.encrypted --key kms:alias/app -c app=web",
                              "envelope decrypt -r conf.enc -o conf --discovery --discovery-account 123456789012 "
                              "--cache-max-age 60",
                              "envelope decrypt -r s3://bucket/in/ -o s3://bucket/out/ --key kms:alias/app",
                              "envelope decrypt s3://bucket/big.tar.encrypted --range 0-1048575 --key "
                              "kms:alias/app > head.bin")
             + "\n\n" + EXIT_CODES)
def decrypt(
    inputs: Inputs = None,
    input_option: InputOption = None,
    output: Output = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", metavar="SPEC", show_default=False,
        help="file:PATH (a key file with the private or secret key, or just PATH) or kms:ID (AWS KMS key ARN, "
             "key id, alias/NAME or alias ARN). Repeat for several keys: any of them may open the data key, "
             "tried in order.")] = None,
    discovery: Annotated[bool, typer.Option(
        "--discovery", help="Let AWS KMS open any aws-kms data key the AWS credentials may decrypt (instead of "
                            "--key).")] = False,
    discovery_partition: DiscoveryPartition = None,
    discovery_account: DiscoveryAccount = None,
    context: DecryptContext = None,
    decode: Annotated[bool, typer.Option(
        "--decode", help="Read base64 (whitespace and line breaks are ignored).")] = False,
    commitment_policy: Policy = None,
    unsigned_only: Annotated[bool, typer.Option(
        "--unsigned-only", help="Refuse signed messages before any output (so nothing unverified is "
                                "ever written, even to a pipe).")] = False,
    max_encrypted_data_keys: MaxEdksRead = None,
    max_frame_length: Annotated[int | None, typer.Option(
        "--max-frame-length", metavar="BYTES", callback=_at_least(1), show_default=False,
        help="Refuse frames (or a non-framed body) longer than BYTES, before reading them: each is held in "
             "memory until its tag verifies (default 64 MiB).")] = None,
    recursive: Recursive = False,
    follow_symlinks: FollowSymlinks = False,
    suffix: Annotated[str | None, typer.Option(
        "--suffix", metavar="SUF", show_default=False,
        help="Output names: NAME without SUF when it ends with it (default .encrypted), else "
             "NAME.decrypted.")] = None,
    force: Force = False,
    metadata_output: Metadata = None,
    progress: ShowProgress = None,
    workers: Workers = None,
    dask: Dask = None,
    dask_dashboard: DaskDashboard = False,
    skip_existing: SkipExisting = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
    byte_range: Annotated[str | None, typer.Option(
        "--range", metavar="START-END", show_default=False,
        help="Output only plaintext bytes START to END (inclusive; START- to the end), of one file or s3:// "
             "object, reading only the frames that hold them; each is verified before any of it is written. "
             "Not for signed suites or non-framed messages. Default output: stdout.")] = None,
    part_size: PartSize = None,
    ssm_tier: SsmTier = None,
    version_stage: VersionStage = None,
    region: DecryptRegion = None,
    grant_token: GrantTokens = None,
    cache_max_age: CacheMaxAge = None,
    cache_capacity: CacheCapacity = None,
) -> int:
    """Decrypt ESDK messages (from envelope, the ESDK or its CLI).

    A file output appears only after the whole message verified (every frame tag and the signature);
    decrypted files have mode 0600. To stdout, a signed message's final frame is held until its signature
    verifies.
    """
    import envelope
    from envelope.batch.jobs import DecryptJob, Job, Run
    from envelope.batch.keys import KeyOptions

    from . import options

    policy = options.policy(commitment_policy)
    inputs = _inputs(inputs, input_option)
    options.check_inputs_are_not_pairs(inputs, context)
    keys = KeyOptions(tuple(key or ()), discovery=discovery, discovery_partition=discovery_partition,
                      discovery_accounts=tuple(discovery_account or ()), region=region,
                      grant_tokens=tuple(grant_token or ()))
    reproduced, required = options.decrypt_pairs(context)
    limits = {"max_encrypted_data_keys": envelope.DEFAULT_MAX_ENCRYPTED_DATA_KEYS if max_encrypted_data_keys is None
              else max_encrypted_data_keys,
              "max_frame_length": envelope.DEFAULT_MAX_FRAME_LENGTH if max_frame_length is None else max_frame_length}
    job: Job = DecryptJob(required, commitment_policy=policy, unsigned_only=unsigned_only, decode=decode,
                          reproduced_context=reproduced, **limits)
    if byte_range is not None:
        from .ranges import RangeJob, parse_range

        start, end = parse_range(byte_range)
        if recursive or len(inputs or []) > 1:
            raise envelope.UsageError("--range reads part of one message: give one INPUT (no -r)")
        if decode:
            raise envelope.UsageError("--range needs the binary message (seekable): it cannot be used with --decode")
        job = RangeJob(start, end, required, commitment_policy=policy, reproduced_context=reproduced, **limits)
        output = STDIO if output is None else output
    cache = options.cache_settings(cache_max_age, None, None, cache_capacity)
    where = _locations(reads_messages=True, decode=decode, force=force, part_size=part_size, ssm_tier=ssm_tier,
                       version_stage=version_stage)
    return _execute(Run(job, keys, cache, force=force, locations=where), inputs, output, recursive=recursive,
                    follow_symlinks=follow_symlinks, suffix=suffix, metadata_output=metadata_output,
                    progress=progress, workers=workers, verbose=verbose, quiet=quiet,
                    skip_existing=skip_existing, dask=dask, dask_dashboard=dask_dashboard)


@app.command(cls=Command, short_help="Give messages new keys without decrypting them (key rotation).",
             epilog=_examples("envelope rewrap backup.tar.encrypted -o new/ --old-key file:old.key --key file:new.key",
                              "envelope rewrap -r archive -o archive.new --old-key kms:alias/old --key kms:alias/new",
                              "envelope rewrap -r archive -o archive.new --discovery --key kms:alias/new "
                              "--key file:recovery.key",
                              "envelope rewrap < m.encrypted --old-key file:old.key --key file:new.key > m.new")
             + "\n\n" + EXIT_CODES)
def rewrap(
    inputs: Inputs = None,
    input_option: InputOption = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", metavar="OUTPUT", show_default=False,
        help="Output file ('-': stdout), or a folder to write into (an existing one, or a name ending in /); with "
             "several inputs or -r, a folder. Required unless the input is stdin (then stdout): an input is "
             "never replaced.")] = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", metavar="SPEC", show_default=False,
        help="A new key: file:PATH or kms:ID, as for encrypt. Repeat for several: the output's data key is "
             "wrapped by these keys and only these.")] = None,
    old_key: Annotated[list[str] | None, typer.Option(
        "--old-key", metavar="SPEC", show_default=False,
        help="A key that opens the messages now: file:PATH or kms:ID, as for decrypt (repeatable).")] = None,
    discovery: Annotated[bool, typer.Option(
        "--discovery", help="Open the data keys with any aws-kms key the AWS credentials may decrypt (instead "
                            "of --old-key).")] = False,
    discovery_partition: DiscoveryPartition = None,
    discovery_account: DiscoveryAccount = None,
    context: DecryptContext = None,
    verify: Annotated[bool | None, typer.Option(
        "--verify/--no-verify", show_default=False,
        help="Also check every frame's tag while copying (default: on for signed suites, whose body is hashed "
             "anyway; off for unsigned ones, whose body is then copied without being read). A signed message's "
             "signature is always verified.")] = None,
    commitment_policy: Policy = None,
    max_encrypted_data_keys: MaxEdksRead = None,
    max_frame_length: Annotated[int | None, typer.Option(
        "--max-frame-length", metavar="BYTES", callback=_at_least(1), show_default=False,
        help="Refuse frames longer than BYTES, and with --verify a non-framed body longer than that (held in "
             "memory to be checked; default 64 MiB).")] = None,
    recursive: Recursive = False,
    follow_symlinks: FollowSymlinks = False,
    force: Force = False,
    metadata_output: Metadata = None,
    progress: ShowProgress = None,
    workers: Workers = None,
    dask: Dask = None,
    dask_dashboard: DaskDashboard = False,
    skip_existing: SkipExisting = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
    part_size: PartSize = None,
    ssm_tier: SsmTier = None,
    version_stage: VersionStage = None,
    region: DecryptRegion = None,
    grant_token: GrantTokens = None,
) -> int:
    """Give messages new keys without decrypting them (key rotation, adding or dropping a key).

    The data key is opened with the old keys and the header verified (key commitment, header tag), then a new
    header is written with the same message id, suite, context and frame length and the data key wrapped by
    the new keys only; the body is copied unchanged. Signed messages get a fresh signing key and signature. The
    output decrypts with the new keys to exactly the same plaintext, and no longer with the old keys. The data
    key stays the same: this is no answer to a leaked data key or message (re-encrypt for that; docs/rewrap.md).
    Outputs appear only once complete; an existing file is replaced only with --force.
    """
    import envelope
    from envelope.batch.jobs import RewrapJob, Run
    from envelope.batch.keys import KeyOptions

    from . import options

    policy = options.policy(commitment_policy)
    inputs = _inputs(inputs, input_option)
    options.check_inputs_are_not_pairs(inputs, context)
    if not key:
        raise envelope.UsageError("give the new keys: --key SPEC (file:PATH or kms:ID; repeatable)")
    if discovery and old_key:
        raise envelope.UsageError("--discovery and --old-key exclude each other: give one or the other")
    if not old_key and not discovery:
        raise envelope.UsageError("give the keys that open the messages now: --old-key SPEC (repeatable) or "
                                  "--discovery")
    if output is None and any(item not in (STDIO, "/dev/stdin") for item in inputs or []):
        raise envelope.UsageError("rewrap needs -o OUTPUT (a file, or a folder for several inputs or -r): it never "
                                  "replaces its input")
    old_keys = KeyOptions(tuple(old_key or ()), discovery=discovery, discovery_partition=discovery_partition,
                          discovery_accounts=tuple(discovery_account or ()))
    new_keys = KeyOptions(tuple(key))
    aws = {"region": region, "grant_tokens": tuple(grant_token or ())}
    if new_keys.uses_kms:
        new_keys = replace(new_keys, **aws)  # type: ignore[arg-type]
    if old_keys.uses_kms or not new_keys.uses_kms:  # neither uses KMS: the old side's check refuses them
        old_keys = replace(old_keys, **aws)  # type: ignore[arg-type]
    reproduced, required = options.decrypt_pairs(context)
    job = RewrapJob(
        new_keys, required, reproduced, commitment_policy=policy, verify=verify,
        max_encrypted_data_keys=envelope.DEFAULT_MAX_ENCRYPTED_DATA_KEYS if max_encrypted_data_keys is None
        else max_encrypted_data_keys,
        max_frame_length=envelope.DEFAULT_MAX_FRAME_LENGTH if max_frame_length is None else max_frame_length)
    where = _locations(reads_messages=True, force=force, part_size=part_size, ssm_tier=ssm_tier,
                       version_stage=version_stage)
    return _execute(Run(job, old_keys, None, force=force, locations=where), inputs, output, recursive=recursive,
                    follow_symlinks=follow_symlinks, suffix=None, metadata_output=metadata_output,
                    progress=progress, workers=workers, verbose=verbose, quiet=quiet,
                    skip_existing=skip_existing, dask=dask, dask_dashboard=dask_dashboard)


@app.command(cls=Command, short_help="Print a message's header as JSON, without any key.",
             epilog=_examples("envelope inspect config.json.encrypted", "envelope inspect s3://bucket/big.tar.encrypted"))
def inspect(
    input: Annotated[str, typer.Argument(metavar="INPUT", show_default=False,
                                         help="A message file, s3://BUCKET/KEY (only the header is fetched), "
                                              "ssm:/NAME[:VERSION] or secretsmanager:NAME; '-' or none: stdin.")]
    = STDIO,
    decode: Annotated[bool, typer.Option("--decode", help="Read base64.")] = False,
    version_stage: VersionStage = None,
) -> int:
    """Print a message's header as JSON, without any key.

    Shows the format version, suite, message id, content type, frame length, encryption context and each
    encrypted data key (provider id, provider info, ciphertext length). Whether the message also needs
    reproduced context pairs (encrypted with --required-context-key) cannot be told from its bytes: the
    required_context field says so.
    """
    import envelope
    from envelope.batch.files import is_terminal
    from envelope.batch.headers import header_json, json_text
    from envelope.batch.locations import configure, open_source
    from envelope.batch.streams import Base64Reader, InputMeter

    configure(_locations(reads_messages=True, decode=decode, version_stage=version_stage))
    source = open_source(input)
    raw = source.open()
    if source.location == STDIO and not decode and is_terminal(raw):
        raise envelope.UsageError("stdin is a terminal: give an INPUT file or pipe the message in")
    meter = InputMeter(raw, location=input)
    try:
        header, _, _ = envelope.read_header(Base64Reader(meter) if decode else meter,  # type: ignore[arg-type]
                                            max_encrypted_data_keys=None)
    except Exception as exc:  # noqa: BLE001 - classified with the input's first bytes for a specific hint
        code, message = classify(exc, head=meter.head, decoding=decode)
        print_error(message)
        return code
    finally:
        source.close()
    text = json_text(header_json(header), indent=2) + "\n"
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return ExitCode.OK


@app.command(cls=Command, short_help="Generate a local key file (AES or RSA), readable only by you.",
             epilog=_examples("envelope keygen -o app.key",
                              "envelope keygen --rsa 4096 -o app-rsa.key --public-output app-rsa.public.key"))
def keygen(
    output: Annotated[str | None, typer.Option(
        "--output", "-o", metavar="PATH", show_default=False,
        help="Where to write the key file (mode 0600); '-' prints it. Default: NAME.key here.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", metavar="NS", help="Key namespace (provider id).")]
    = "envelope",
    name: Annotated[str | None, typer.Option(
        "--name", metavar="NAME", show_default=False, help="Key name. Default: key-<8 random hex digits>.")]
    = None,
    bits: Annotated[int | None, typer.Option(
        "--bits", metavar="128|192|256", show_default=False, help="AES key size (default 256).")] = None,
    rsa: Annotated[int | None, typer.Option(
        "--rsa", metavar="BITS", show_default=False,
        help="Make an RSA key pair of BITS bits (OAEP-SHA256) instead of an AES key.")] = None,
    public_output: Annotated[str | None, typer.Option(
        "--public-output", metavar="PATH", show_default=False,
        help="With --rsa: also write the public-only key file (encrypt-only, mode 0644) to PATH; '-' prints "
             "it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
) -> int:
    """Generate a local key file (raw AES by default, or raw RSA), readable only by you.

    The key file format is described in the README ("Key files"). With --rsa, --public-output also writes the
    encrypt-only file that holds just the public key.
    """
    import envelope
    from envelope import UsageError

    from .errors import say
    from .keyfiles import KeyFileOutput

    if rsa is not None and bits is not None:
        raise UsageError("--bits sets the size of an AES key; for RSA give the size with --rsa BITS")
    if public_output is not None and rsa is None:
        raise UsageError("--public-output writes the public half of an RSA key pair: add --rsa BITS")
    if output == STDIO and public_output == STDIO:
        raise UsageError("-o - and --public-output - would both print to stdout: name a file for one of them")
    if rsa is not None:
        doc = envelope.generate_rsa_key_file(namespace, name, bits=rsa)
    else:
        doc = envelope.generate_aes_key_file(namespace, name, bits if bits is not None else 256)
    private = KeyFileOutput(output if output is not None else doc["name"].replace(os.sep, "_") + ".key", force)
    public = KeyFileOutput(public_output, force, mode=0o644) if public_output is not None else None
    if public is not None and public.same_as(private):
        raise UsageError(f"--public-output {public_output!r} is the key file itself")
    private.write(doc)
    kind = f"RSA-{rsa}" if rsa is not None else f"AES-{bits or 256}"
    if private.path is not None:
        say(f"wrote {kind} key {doc['namespace']}/{doc['name']} to {private.path} (mode 0600)")
    if public is not None:
        try:
            public.write(envelope.public_key_file(doc))
        except BaseException:
            private.undo()  # a failed run leaves no file it did not have before
            raise
        if public.path is not None:
            say(f"wrote its public key (encrypt only) to {public.path} (mode 0644)")
    return ExitCode.OK


from .environment import register as _register_environment  # noqa: E402 - encrypt-env and exec

_register_environment(app)
