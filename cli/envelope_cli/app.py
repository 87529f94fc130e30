"""The typer app: commands and options only. The work happens in ``jobs`` / ``files``, errors map in ``errors``.

The library is imported inside the commands, so ``--help`` and ``--version`` never pay for it. Options shared
by encrypt and decrypt are declared once below; the KMS options (``--region``, ``--grant-token``,
``--discovery-*``) fold into :class:`envelope_cli.keys.KeyOptions`, the cache options (``--cache-*``) into
:class:`envelope_cli.jobs.CacheOptions`, both inside :class:`envelope_cli.jobs.Settings`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import version as _version
from .errors import ExitCode, Terminated, classify, print_error
from .files import STDIO, FileProblem, is_terminal, plan_jobs
from .jobs import CacheOptions, Settings, build_crypto, default_workers, run_plan
from .keys import KeyOptions

__all__ = ["app", "run"]

EXIT_CODES = ("Exit codes: 0 success; 1 the message failed to authenticate or parse (tampered, truncated, wrong "
              "context, not an ESDK message); 2 usage error; 3 no key could open the data key; 4 I/O error.")


class _Coerce:
    """Value conversion for the plain option types used here (str, int, bool, list[str]).

    typer 0.29 converts every option value, defaults included, through a pydantic TypeAdapter: it imports
    pydantic and builds a schema per option, which made a 1 KiB ``envelope decrypt`` take 0.49 s instead of
    0.26 s (measured). Our options need no more than this class does. It hooks typer's lazy, private
    ``_TyperParameter.get_runtime_param`` only for these annotations; where that hook does not exist (another
    typer version) or the annotation is anything else, typer's own conversion runs unchanged.
    """

    TYPES: tuple[Any, ...] = (str, int, bool, list[str])

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        if self.annotation is int:
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise typer.BadParameter(f"{value!r} is not a whole number", ctx=ctx, param=param) from None
            low = getattr(param, "min", None)
            if low is not None and number < low:
                raise typer.BadParameter(f"{number} is below the minimum of {low}", ctx=ctx, param=param)
            return number
        if self.annotation == list[str]:
            return [str(item) for item in value]
        return value

    @classmethod
    def install(cls) -> None:
        """Route typer's lazy per-parameter converter through this class for the types above."""
        from typer import core

        base = getattr(core, "_TyperParameter", None)
        original = getattr(base, "get_runtime_param", None)
        if original is None or getattr(original, "_envelope", False):
            return

        def get_runtime_param(param: Any) -> Any:
            descriptor = getattr(param, "type_descriptor", None)
            if getattr(param, "_runtime_param", None) is None and descriptor is not None \
                    and descriptor.annotation in cls.TYPES:
                param._runtime_param = cls(descriptor.annotation)
            return original(param)

        get_runtime_param._envelope = True  # type: ignore[attr-defined]
        base.get_runtime_param = get_runtime_param  # type: ignore[union-attr]


class _Group(TyperGroup):
    """Runs the commands with one error boundary: every failure is one ``envelope: error:`` line + exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        _Coerce.install()
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except Terminated as exc:
            code = _report(exc)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the one error boundary
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                code = 0
            else:
                code = _report(exc)
        finally:
            from .files import remove_temporary_files

            remove_temporary_files()
        code = int(code or 0)
        if standalone_mode:
            sys.exit(code)
        return code


def _report(exc: BaseException) -> int:
    code, message = classify(exc)
    print_error(message)
    return code


app = typer.Typer(
    cls=_Group,
    name="envelope",
    help="Encrypt and decrypt files and streams in the AWS Encryption SDK message format.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def run() -> None:
    """Run the app on the command line (``sys.argv``), as the console script does.

    typer builds a click command for every registered command on each run, reading each signature and option.
    When the first argument names a command, only that one is built: 6 ms instead of 14 ms of a ~150 ms
    local-key decrypt (measured). Anything else (no command, ``--help``, a misspelt command) gets the full app.
    """
    import copy

    args = sys.argv[1:]
    chosen = [c for c in app.registered_commands if args and _command_name(c) == args[0]]
    runner = app
    if chosen:
        runner = copy.copy(app)
        runner.registered_commands = chosen
    runner(prog_name="envelope")  # click reads sys.argv itself (and expands globs on Windows)


def _command_name(info: Any) -> str:
    from typer.main import get_command_name  # the name typer itself gives the command

    return str(info.name or get_command_name(info.callback.__name__))


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


# ---------------------------------------------------------------------------------------------------------
# shared options

Inputs = Annotated[list[str] | None, typer.Argument(
    metavar="INPUT", show_default=False,
    help="Files (or folders, with -r). '-' or none: stdin, and then the output goes to stdout.")]
Output = Annotated[str | None, typer.Option(
    "--output", "-o", metavar="OUTPUT", show_default=False,
    help="Output file ('-': stdout). With several inputs or -r: a folder. Default: beside each input "
         "(see --suffix), or stdout for stdin.")]
Keys = Annotated[list[str] | None, typer.Option(
    "--key", "-k", metavar="SPEC", show_default=False,
    help="file:PATH (a key file, or just PATH) or kms:ID (AWS KMS key ARN, key id, alias/NAME or alias ARN). "
         "Repeat for several keys: on encrypt the first makes the data key and all wrap it; on decrypt any may "
         "open it.")]
Region = Annotated[str | None, typer.Option(
    "--region", metavar="REGION", show_default=False,
    help="AWS region of kms: keys given by key id or alias (ARNs name their own), and of --discovery's "
         "clients. Default: AWS_REGION / AWS_DEFAULT_REGION or the AWS_PROFILE's region.")]
GrantTokens = Annotated[list[str] | None, typer.Option(
    "--grant-token", metavar="TOKEN", show_default=False,
    help="An AWS KMS grant token, sent with every KMS call (repeatable).")]
CacheMaxAge = Annotated[str | None, typer.Option(
    "--cache-max-age", metavar="SECONDS", show_default=False,
    help="Turn on the data-key cache: reuse a data key for up to SECONDS (fewer KMS calls). One cache per "
         "process: see --workers.")]
CacheCapacity = Annotated[int | None, typer.Option(
    "--cache-capacity", metavar="N", min=1, show_default=False,
    help="Data keys the cache holds at most, least recently used dropped first (default 1000).")]
Policy = Annotated[str | None, typer.Option(
    "--commitment-policy", metavar="POLICY", show_default=False,
    help="require-encrypt-require-decrypt (default), require-encrypt-allow-decrypt or "
         "forbid-encrypt-allow-decrypt.")]
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Process the files in folder inputs, keeping the folder structure.")]
Suffix = Annotated[str | None, typer.Option(
    "--suffix", metavar="SUF", show_default=False,
    help="Output name suffix. encrypt: NAME + SUF (default .encrypted). decrypt: NAME without SUF when it ends "
         "with it (default .encrypted), else NAME.decrypted.")]
Force = Annotated[bool, typer.Option("--force", help="Replace existing output files.")]
Metadata = Annotated[str | None, typer.Option(
    "--metadata-output", metavar="PATH", show_default=False,
    help="Append one JSON line per input (mode, input, output, header summary, bytes, seconds). '-': stdout.")]
ShowProgress = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", show_default=False,
    help="Show a progress bar on stderr. Default: when stderr is a terminal.")]
Workers = Annotated[int | None, typer.Option(
    "--workers", metavar="N", min=1, show_default=False,
    help="Files processed in parallel by worker processes. Default: the number of CPU cores.")]
MaxEdks = Annotated[int | None, typer.Option(
    "--max-encrypted-data-keys", metavar="N", min=1, show_default=False,
    help="Refuse messages with more encrypted data keys than N (decrypt default: 256).")]


def _pairs(values: list[str] | None) -> dict[str, str]:
    from envelope import UsageError

    pairs: dict[str, str] = {}
    for item in values or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"-c {item!r}: expected KEY=VALUE")
        if key in pairs and pairs[key] != value:
            raise UsageError(f"-c: key {key!r} is given twice with different values")
        pairs[key] = value
    return pairs


def _check_policy(policy: str | None) -> None:
    from envelope._suites import resolve_policy

    if policy is not None:
        resolve_policy(policy)


def _seconds(text: str | None) -> float | None:
    from envelope import UsageError

    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"--cache-max-age {text!r}: expected a number of seconds, such as 300 or 0.5") from None
    if not 0 < seconds < float("inf"):
        raise UsageError(f"--cache-max-age {text!r}: must be more than 0 seconds")
    return seconds


def _cache(max_age: str | None, max_messages: int | None, max_bytes: int | None,
           capacity: int | None) -> CacheOptions | None:
    """``--cache-*`` -> the cache settings; None (no cache) unless ``--cache-max-age`` is given."""
    from envelope import UsageError

    seconds = _seconds(max_age)
    if seconds is None:
        given = [name for name, value in (("--cache-max-messages", max_messages), ("--cache-max-bytes", max_bytes),
                                          ("--cache-capacity", capacity)) if value is not None]
        if given:
            raise UsageError(f"{given[0]} sets a limit of the data-key cache, which --cache-max-age SECONDS "
                             "turns on")
        return None
    options = CacheOptions(seconds, max_messages, max_bytes)
    return options if capacity is None else replace(options, capacity=capacity)


def _run(settings: Settings, inputs: list[str] | None, output: str | None, *, recursive: bool,
         suffix: str | None, metadata_output: str | None, progress: bool | None, workers: int | None) -> int:
    """Keys, then files, then work: every usage error is reported before any output exists."""
    from envelope import UsageError

    crypto = build_crypto(settings)  # checks keys and cache limits; no KMS call yet
    plan = plan_jobs(list(inputs or []), output, direction=settings.direction, recursive=recursive, suffix=suffix,
                     force=settings.force)
    if metadata_output == STDIO and plan.to_stdout:
        raise UsageError("--metadata-output - (stdout) cannot be used while the data also goes to stdout")
    if settings.direction == "decrypt" and plan.jobs[0].source == STDIO and not settings.base64 \
            and is_terminal(sys.stdin.buffer):
        raise UsageError("stdin is a terminal: give an INPUT file or pipe the message in")
    settings = replace(settings, make_folders=plan.many, metadata=metadata_output is not None)
    return run_plan(plan, settings, crypto, workers=workers or default_workers(), progress=progress,
                    metadata_output=metadata_output)


# ---------------------------------------------------------------------------------------------------------
# commands


def _examples(*lines: str) -> str:
    """An epilog click prints as is (``\\b`` stops it from re-wrapping the example lines)."""
    return "Example" + ("s" if len(lines) > 1 else "") + ":\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


@app.command(epilog=_examples("envelope encrypt config.json --key file:app.key -c app=web -c stage=prod",
                              "tar c conf | envelope encrypt --key file:app.key > conf.tar.encrypted",
                              "envelope encrypt -r conf -o conf.enc --key file:app.key",
                              "envelope encrypt config.json --key kms:alias/app --key file:backup.key -c app=web",
                              "envelope encrypt -r logs -o logs.enc --key kms:alias/app --cache-max-age 300")
             + "\n\n" + EXIT_CODES)
def encrypt(
    inputs: Inputs = None,
    output: Output = None,
    key: Keys = None,
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", metavar="KEY=VALUE", show_default=False,
        help="An encryption-context pair, stored in the message and authenticated (repeatable).")] = None,
    algorithm: Annotated[str | None, typer.Option(
        "--algorithm", metavar="ID|NAME", show_default=False,
        help="Algorithm suite: an ESDK name or hex id (0x0478, 0478). Default: 0x0478 "
             "(AES_256_GCM_HKDF_SHA512_COMMIT_KEY); 0x0578 also signs.")] = None,
    frame_size: Annotated[int | None, typer.Option(
        "--frame-size", metavar="BYTES", min=1, show_default=False,
        help="Plaintext bytes per frame (default: 1 MiB).")] = None,
    commitment_policy: Policy = None,
    encode: Annotated[bool, typer.Option("--encode", help="Write base64 (no line breaks) instead of binary.")]
    = False,
    recursive: Recursive = False,
    suffix: Suffix = None,
    force: Force = False,
    metadata_output: Metadata = None,
    progress: ShowProgress = None,
    workers: Workers = None,
    max_encrypted_data_keys: MaxEdks = None,
    region: Region = None,
    grant_token: GrantTokens = None,
    cache_max_age: CacheMaxAge = None,
    cache_max_messages: Annotated[int | None, typer.Option(
        "--cache-max-messages", metavar="N", min=1, show_default=False,
        help="Messages one cached data key may protect at most (default 2^32).")] = None,
    cache_max_bytes: Annotated[int | None, typer.Option(
        "--cache-max-bytes", metavar="N", min=0, show_default=False,
        help="Plaintext bytes one cached data key may protect at most (default 2^63 - 1).")] = None,
    cache_capacity: CacheCapacity = None,
) -> int:
    """Encrypt files or stdin into ESDK messages.

    Outputs appear only once complete; an existing file is replaced only with --force. Encrypted files keep
    the mode of their input.
    """
    from envelope._suites import resolve_suite

    resolve_suite(algorithm)
    _check_policy(commitment_policy)
    keys = KeyOptions(tuple(key or ()), region=region, grant_tokens=tuple(grant_token or ()))
    settings = Settings("encrypt", keys, context=_pairs(context), algorithm=algorithm,
                        frame_length=frame_size, commitment_policy=commitment_policy,
                        max_encrypted_data_keys=max_encrypted_data_keys, base64=encode, force=force,
                        cache=_cache(cache_max_age, cache_max_messages, cache_max_bytes, cache_capacity))
    return _run(settings, inputs, output, recursive=recursive, suffix=suffix, metadata_output=metadata_output,
                progress=progress, workers=workers)


@app.command(epilog=_examples("envelope decrypt config.json.encrypted --key file:app.key -c app=web",
                              "envelope decrypt --key file:app.key < conf.tar.encrypted | tar x",
                              "envelope decrypt -r conf.enc -o conf --key file:app.key",
                              "envelope decrypt config.json.encrypted --key kms:alias/app -c app=web",
                              "envelope decrypt -r conf.enc -o conf --discovery --discovery-account 123456789012 "
                              "--cache-max-age 60")
             + "\n\n" + EXIT_CODES)
def decrypt(
    inputs: Inputs = None,
    output: Output = None,
    key: Keys = None,
    discovery: Annotated[bool, typer.Option(
        "--discovery", help="Let AWS KMS open any aws-kms data key the AWS credentials may decrypt (instead of "
                            "--key).")] = False,
    discovery_partition: Annotated[str | None, typer.Option(
        "--discovery-partition", metavar="P", show_default=False,
        help="With --discovery-account: the accounts' AWS partition (default aws).")] = None,
    discovery_account: Annotated[list[str] | None, typer.Option(
        "--discovery-account", metavar="ID", show_default=False,
        help="Limit --discovery to KMS keys of this AWS account (repeatable).")] = None,
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", metavar="KEY=VALUE", show_default=False,
        help="A required pair: the message's encryption context must hold KEY with this VALUE "
             "(repeatable).")] = None,
    decode: Annotated[bool, typer.Option(
        "--decode", help="Read base64 (whitespace and line breaks are ignored).")] = False,
    commitment_policy: Policy = None,
    unsigned_only: Annotated[bool, typer.Option(
        "--unsigned-only", help="Refuse signed messages before any output (so nothing unverified is "
                                "ever written, even to a pipe).")] = False,
    max_encrypted_data_keys: MaxEdks = None,
    max_frame_length: Annotated[int | None, typer.Option(
        "--max-frame-length", metavar="BYTES", min=1, show_default=False,
        help="Refuse frames (or a non-framed body) longer than BYTES, before reading them: each is held in "
             "memory until its tag verifies (default 64 MiB).")] = None,
    recursive: Recursive = False,
    suffix: Suffix = None,
    force: Force = False,
    metadata_output: Metadata = None,
    progress: ShowProgress = None,
    workers: Workers = None,
    region: Region = None,
    grant_token: GrantTokens = None,
    cache_max_age: CacheMaxAge = None,
    cache_capacity: CacheCapacity = None,
) -> int:
    """Decrypt ESDK messages (from envelope, the ESDK or its CLI).

    A file output appears only after the whole message verified (every frame tag and the signature);
    decrypted files have mode 0600. To stdout, a signed message's final frame is held until its signature
    verifies.
    """
    _check_policy(commitment_policy)
    keys = KeyOptions(tuple(key or ()), discovery=discovery, discovery_partition=discovery_partition,
                      discovery_accounts=tuple(discovery_account or ()), region=region,
                      grant_tokens=tuple(grant_token or ()))
    settings = Settings("decrypt", keys, context=_pairs(context),
                        commitment_policy=commitment_policy, max_encrypted_data_keys=max_encrypted_data_keys,
                        max_frame_length=max_frame_length, unsigned_only=unsigned_only, base64=decode, force=force,
                        cache=_cache(cache_max_age, None, None, cache_capacity))
    return _run(settings, inputs, output, recursive=recursive, suffix=suffix, metadata_output=metadata_output,
                progress=progress, workers=workers)


@app.command(epilog=_examples("envelope inspect config.json.encrypted"))
def inspect(
    input: Annotated[str, typer.Argument(metavar="[INPUT]", help="A message file; '-' or none: stdin.")] = STDIO,
    decode: Annotated[bool, typer.Option("--decode", help="Read base64.")] = False,
) -> int:
    """Print a message's header as JSON, without any key.

    Shows the format version, suite, message id, content type, frame length, encryption context and each
    encrypted data key (provider id, provider info, ciphertext length).
    """
    import envelope

    from .files import open_input
    from .headers import header_json, json_text
    from .streams import Base64Reader, InputMeter

    raw = open_input(input)
    if input == STDIO and not decode and is_terminal(raw):
        raise envelope.UsageError("stdin is a terminal: give an INPUT file or pipe the message in")
    meter = InputMeter(raw)
    try:
        header, _, _ = envelope.read_header(Base64Reader(meter) if decode else meter,  # type: ignore[arg-type]
                                            max_encrypted_data_keys=None)
    except Exception as exc:  # noqa: BLE001 - classified with the input's first bytes for a specific hint
        code, message = classify(exc, head=meter.head, decoding=decode)
        print_error(message)
        return code
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()
    text = json_text(header_json(header), indent=2) + "\n"
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return ExitCode.OK


@app.command(epilog=_examples("envelope keygen -o app.key", "envelope keygen --rsa 4096 -o app-rsa.key"))
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
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
) -> int:
    """Generate a local key file (raw AES by default, or raw RSA), readable only by you.

    The key file format is described in the README ("Key files").
    """
    from envelope import UsageError
    from envelope._keyrings import keyfile

    if rsa is not None and bits is not None:
        raise UsageError("--bits sets the size of an AES key; for RSA give the size with --rsa BITS")
    if rsa is not None:
        doc = keyfile.generate_rsa_key_file(namespace, name, bits=rsa)
    else:
        doc = keyfile.generate_aes_key_file(namespace, name, bits if bits is not None else 256)
    if output == STDIO:
        sys.stdout.write(keyfile.key_file_text(doc))
        sys.stdout.flush()
        return ExitCode.OK
    path = output if output is not None else doc["name"].replace(os.sep, "_") + ".key"
    if os.path.isdir(path):
        raise UsageError(f"output {path!r} is a folder, where a file is expected (-o names the key file)")
    if os.path.exists(path) and not os.path.isfile(path):  # never replace /dev/null, a FIFO, a terminal
        raise UsageError(f"output {path!r} is not a regular file; use -o - to print the key file")
    try:
        keyfile.write_key_file(path, doc, force=force)
    except FileExistsError:
        raise UsageError(f"output {path!r} already exists (add --force to replace it)") from None
    except OSError as exc:
        raise FileProblem("cannot write key file", exc, path) from None
    kind = f"RSA-{rsa}" if rsa is not None else f"AES-{bits or 256}"
    sys.stderr.write(f"envelope: wrote {kind} key {doc['namespace']}/{doc['name']} to {path} (mode 0600)\n")
    return ExitCode.OK


from .environment import register as _register_environment  # noqa: E402 - encrypt-env and exec

_register_environment(app)
