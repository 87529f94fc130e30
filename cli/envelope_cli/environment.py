"""``envelope encrypt-env`` and ``envelope exec``: secrets for a process's environment (docs/secrets.md).

``register(app)`` adds both commands to the typer app. The work is the library's (``envelope.aws``); this module
parses arguments, reads sources and hands the environment to the command.

``exec`` replaces envelope with COMMAND (``os.execvpe``): same process id, so COMMAND's exit code and every
signal sent to "envelope" are COMMAND's own, and no envelope process stays behind holding the plaintext.
Before ``exec`` the CLI's own signal set-up is undone (``signals.py`` blocks SIGINT / SIGTERM / SIGHUP, and a
blocked mask survives ``exec``; Python ignores SIGPIPE and SIGXFSZ, which would survive too). Where ``exec``
does not replace the process (Windows), COMMAND runs as a child: envelope waits, passes Ctrl-C / SIGTERM on to
it and exits with its code.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import ExitCode
from .helptext import Command

if TYPE_CHECKING:
    from envelope import Keyring

__all__ = ["ENV_SCHEME", "register"]

#: The spelling of an environment-variable source of ``exec``: ``env:NAME``.
ENV_SCHEME = "env:"
#: A file source is read whole into memory (never to disk); bundles are small, environments smaller.
MAX_SOURCE_BYTES = 16 * 1024 * 1024
#: What a Lambda function's environment holds in all (keys and values).
LAMBDA_ENV_LIMIT = 4096
NOT_FOUND_EXIT, NOT_EXECUTABLE_EXIT = 127, 126  # as shells and env(1) answer
_META = "envelope_exec_command"

Region = Annotated[str | None, typer.Option(
    "--region", metavar="REGION", show_default=False,
    help="AWS region of kms: keys given by key id or alias (ARNs name their own), and of --discovery.")]
GrantTokens = Annotated[list[str] | None, typer.Option(
    "--grant-token", metavar="TOKEN", show_default=False, help="An AWS KMS grant token (repeatable).")]


class _SplitAtDashes(Command):
    """Keeps what follows the first ``--`` for ``exec`` (click would drop the ``--`` and mix the two lists)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta[_META] = args[at + 1:]
            args = args[:at]
        else:
            ctx.meta[_META] = None
        return list(super().parse_args(ctx, args))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- COMMAND [ARGS]..."]


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    from envelope import UsageError

    pairs: dict[str, str] = {}
    for item in values or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        if pairs.get(key, value) != value:
            raise UsageError(f"{option}: key {key!r} is given twice with different values")
        pairs[key] = value
    return pairs


def _keyring(keys: list[str] | None, discovery: bool, region: str | None, grant_tokens: list[str] | None,
             purpose: str) -> Keyring:
    from envelope.batch.keys import KeyOptions, build_keyring

    options = KeyOptions(tuple(keys or ()), discovery=discovery, region=region,
                         grant_tokens=tuple(grant_tokens or ()))
    return build_keyring(options, "encrypt" if purpose == "encrypt" else "decrypt")


# ---------------------------------------------------------------------------------------------------------
# encrypt-env


def _env_values(items: list[str]) -> dict[str, str]:
    from envelope import UsageError

    values: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            found = os.environ.get(name)
            if found is None:
                raise UsageError(f"{name!r}: give NAME=VALUE, or set {name} in envelope's environment")
            value = found
        if name in values:
            raise UsageError(f"{name!r} is given twice")
        values[name] = value
    return values


def encrypt_env(
    values: Annotated[list[str], typer.Argument(
        metavar="NAME=VALUE|NAME", show_default=False,
        help="Variables to encrypt. A bare NAME takes the value from envelope's own environment, which keeps it "
             "out of the command line (other users can read a process's arguments).")],
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", metavar="SPEC", show_default=False,
        help="kms:ID (an AWS KMS key, what a Lambda function decrypts with), file:PATH, ssm:/NAME or "
             "secretsmanager:NAME (a key file kept there). Repeat for several keys.")] = None,
    function: Annotated[str | None, typer.Option(
        "--function", metavar="NAME", show_default=False,
        help="The Lambda function that will read the values: adds the LambdaFunctionName context, which "
             "envelope.aws.load_env requires when running in that function.")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", metavar="dotenv|json",
        help="dotenv: NAME=VALUE lines (a .env file, or one by one in a console); json: one object of "
             "NAME: VALUE (Lambda's Environment.Variables, a SAM/CloudFormation template).")] = "dotenv",
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", metavar="KEY=VALUE", show_default=False,
        help="Another encryption-context pair for every value (repeatable).")] = None,
    algorithm: Annotated[str | None, typer.Option(
        "--algorithm", metavar="ID|NAME", show_default=False,
        help="Algorithm suite (default 0x0478: committing and unsigned, the smallest value).")] = None,
    region: Region = None,
    grant_token: GrantTokens = None,
) -> int:
    """Encrypt values for a Lambda function's (or a container's) environment.

    Prints NAME=<base64 ESDK message> lines (or JSON) on stdout, ready for a Lambda configuration, a SAM or
    CloudFormation template, or a dotenv file; envelope.aws.load_env (and envelope exec env:NAME) decrypt
    them. All values share one data key, so one KMS call decrypts them all.
    """
    import json

    import envelope.aws
    from envelope import UsageError, resolve_suite

    if output_format not in ("dotenv", "json"):
        raise UsageError(f"--format {output_format!r}: use dotenv or json")
    resolve_suite(algorithm)
    plain = _env_values(values)
    keyring = _keyring(key, False, region, grant_token, "encrypt")
    encrypted = envelope.aws.encrypt_env(plain, keyring=keyring, function=function,
                                         context=_pairs(context, "-c"),
                                         algorithm=algorithm if algorithm is not None else envelope.aws.ENV_SUITE)
    if output_format == "json":
        text = json.dumps(encrypted, indent=2) + "\n"
    else:
        text = "".join(f"{name}={value}\n" for name, value in encrypted.items())
    sys.stdout.write(text)
    sys.stdout.flush()
    total = sum(len(name) + len(value) for name, value in encrypted.items())
    if total > LAMBDA_ENV_LIMIT:
        sys.stderr.write(f"envelope: note: these variables take {total:,} bytes; a Lambda function's environment "
                         f"holds {LAMBDA_ENV_LIMIT:,} in all (keep a bundle in ssm:, secretsmanager: or S3 and "
                         "read it with envelope.aws.load_env or envelope exec)\n")
    return ExitCode.OK


# ---------------------------------------------------------------------------------------------------------
# exec


def _read_file(path: str) -> bytes:
    from envelope.batch.locations import FileProblem

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_SOURCE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_SOURCE_BYTES + 1)
    except IsADirectoryError:
        from envelope import UsageError

        raise UsageError(f"source {path!r} is a folder, where a bundle file is expected") from None
    except OSError as exc:
        raise FileProblem("cannot read source", exc, path) from None
    if len(data) > MAX_SOURCE_BYTES:
        from envelope import UsageError

        raise UsageError(f"source {path!r} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB; a bundle for an "
                         "environment is much smaller")
    return _maybe_base64(data)


def _read_object(url: str) -> bytes:
    """An ``s3://`` bundle, read whole into memory (never to disk) through the S3 kind of location."""
    from envelope import UsageError
    from envelope.batch.locations import Settings, configure, open_source

    configure(Settings(reads_messages=True))
    source = open_source(url)
    try:
        stream = source.open()
        if (source.size or 0) > MAX_SOURCE_BYTES:
            raise UsageError(f"source {url!r} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB; a bundle for "
                             "an environment is much smaller")
        data = bytearray(source.size or 0)
        view, done = memoryview(data), 0
        while done < len(data):
            got = stream.readinto(view[done:])  # type: ignore[attr-defined]
            if not got:
                break
            done += got
    finally:
        source.close()
    return _maybe_base64(bytes(view[:done]))


def _maybe_base64(data: bytes) -> bytes:
    """A message file may be binary or base64 text (``envelope encrypt --encode``): text that decodes is decoded."""
    import base64
    import binascii

    compact = b"".join(data.split())
    if compact and not data.startswith((b"\x01", b"\x02")):
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            pass
    return data


def _decrypt_sources(sources: list[str], keyring: Keyring, context: dict[str, str]) -> list[tuple[str, bytes]]:
    """Every source's plaintext, in order. Remote and env: sources go through envelope.aws.load_env (batched,
    with its retry budget, never cached: this is one run); files and stdin are opened here."""
    import envelope
    import envelope.aws
    import envelope.s3
    from envelope import CachingMaterialsManager, LocalCache, UsageError

    if sources.count("-") > 1:
        raise UsageError("stdin ('-') can be a source once")
    remote: dict[str, str] = {}
    objects: dict[str, bytes] = {}
    for source in sources:
        if envelope.s3.is_s3_url(source):
            objects[source] = b""  # read below, once every source was checked
            envelope.s3.parse_s3_url(source)  # malformed URLs are refused before any call
        elif envelope.aws.is_location(source):
            envelope.aws.parse_location(source)  # malformed locations are refused before any call
            remote[source] = source
        elif source.startswith(ENV_SCHEME):
            if not source[len(ENV_SCHEME):]:
                raise UsageError("source 'env:' needs a variable name (env:NAME)")
            remote[source] = source
    manager = CachingMaterialsManager(keyring, LocalCache(max(1, len(sources))), max_age=60.0)
    opened = envelope.aws.load_env(remote, materials_manager=manager, context=context, transform="binary",
                                   max_age=0) if remote else {}
    for source in objects:
        objects[source] = _read_object(source)
    out: list[tuple[str, bytes]] = []
    for source in sources:
        if source in opened:
            out.append((source, opened[source]))
            continue
        path = source[len("file:"):] if source.startswith("file:") else source
        if not path:
            raise UsageError("source 'file:' needs a path (file:PATH)")
        message = objects[source] if source in objects else _read_file(path)
        where = "stdin" if path == "-" else repr(path)
        try:
            plaintext = envelope.decrypt(message, materials_manager=manager, required_context=context).plaintext
        except envelope.FormatError as exc:
            raise envelope.FormatError(exc.field, exc.offset, f"{exc.reason} (in {where})") from None
        out.append((source, plaintext))
    return out


def _environment(opened: list[tuple[str, bytes]], pristine: bool) -> dict[str, str]:
    from envelope.aws import parse_bundle

    env: dict[str, str] = {} if pristine else dict(os.environ)
    for source, plaintext in opened:
        env.update(parse_bundle(plaintext, where=f"the bundle from {source}"))
    return env


def _restore_signals() -> None:
    """Undo, for COMMAND, what this process changed about signals (module docstring)."""
    import signal

    from .signals import _signals

    for name in ("SIGPIPE", "SIGXFSZ"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _signals())


def _exec(command: list[str], env: dict[str, str]) -> int:
    """Replace this process with COMMAND; returns only when that fails (127 not found, 126 not runnable)."""

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    _restore_signals()
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 - running the COMMAND the user named is the point
    except OSError as exc:
        return _not_started(command, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _not_started(command: list[str], exc: OSError) -> int:
    """One error line and the shells' exit code: 127 not found, 126 found but not runnable."""
    from .errors import print_error

    if isinstance(exc, FileNotFoundError):
        print_error(f"exec: command {command[0]!r} not found (looked up in the new environment's PATH)")
        return NOT_FOUND_EXIT
    print_error(f"exec: cannot run {command[0]!r}: {exc.strerror or exc}")
    return NOT_EXECUTABLE_EXIT


def spawn_and_wait(command: list[str], env: dict[str, str]) -> int:
    """Where exec does not replace the process: run COMMAND as a child, pass Ctrl-C / SIGTERM / SIGHUP on to it,
    and return its exit code (128 + N for a child ended by signal N)."""
    import shutil
    import signal
    import subprocess

    from .errors import Terminated

    program = shutil.which(command[0], path=env.get("PATH", os.defpath)) or command[0]
    try:
        child = subprocess.Popen([program, *command[1:]], env=env)  # noqa: S603 - the COMMAND the user named
    except OSError as exc:
        return _not_started(command, exc)
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            _forward(child, signal.SIGINT)
        except Terminated as exc:
            _forward(child, exc.signum)
    return 128 - code if code < 0 else code


def _forward(child: Any, signum: int) -> None:
    try:
        child.send_signal(signum)
    except (OSError, ValueError):  # already gone, or a signal this platform cannot send: end it
        child.terminate()


def exec_command(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(
        metavar="SOURCE", show_default=False,
        help="Encrypted bundles (dotenv or JSON): a file (binary or base64; file:PATH, '-' for stdin), "
             "s3://BUCKET/KEY, ssm:/NAME, secretsmanager:NAME or env:VARIABLE (an environment variable holding the "
             "base64 message). Later sources override earlier ones.")],
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", metavar="SPEC", show_default=False,
        help="kms:ID, file:PATH, ssm:/NAME or secretsmanager:NAME (a key file kept there). Repeatable: any may "
             "open a bundle.")] = None,
    discovery: Annotated[bool, typer.Option(
        "--discovery", help="Let AWS KMS open any aws-kms data key the AWS credentials may decrypt.")] = False,
    context: Annotated[list[str] | None, typer.Option(
        "--context", "-c", metavar="KEY=VALUE", show_default=False,
        help="A required pair: every bundle's encryption context must hold KEY with this VALUE (repeatable).")]
    = None,
    pristine: Annotated[bool, typer.Option(
        "--pristine", help="Start COMMAND with only the bundles' variables, not envelope's environment (PATH "
                           "included: COMMAND is then found in the bundle's PATH, or /bin:/usr/bin).")] = False,
    region: Region = None,
    grant_token: GrantTokens = None,
) -> int:
    """Run COMMAND with the variables of decrypted bundles in its environment: envelope exec SOURCE... -- COMMAND.

    Bundles are decrypted in memory (the plaintext never touches disk); nested JSON keys flatten with __
    (DB__HOST); names that are not valid variable names are refused. If any bundle fails to decrypt or parse,
    nothing runs. COMMAND replaces envelope (exec): its exit code and signals are its own.
    """
    from envelope import UsageError

    command = ctx.meta.get(_META)
    if command is None:
        raise UsageError("give the command after --: envelope exec SOURCE... -- COMMAND [ARGS]")
    if not command or not command[0]:
        raise UsageError("no COMMAND after --")
    keyring = _keyring(key, discovery, region, grant_token, "decrypt")
    env = _environment(_decrypt_sources(list(sources), keyring, _pairs(context, "-c")), pristine)
    if os.name == "nt" or not hasattr(os, "execvpe"):
        return spawn_and_wait(command, env)
    return _exec(command, env)


def register(app: typer.Typer) -> None:
    """Add ``encrypt-env`` and ``exec`` to ``app``."""
    def examples(*lines: str) -> str:
        return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)

    app.command("encrypt-env", cls=Command,
                short_help="Print encrypted variables for Lambda, templates or dotenv.",
                epilog=examples(
        "envelope encrypt-env DB_PASSWORD API_TOKEN --key kms:alias/app --function orders-api",
        "envelope encrypt-env DB_PASSWORD=$(cat pw.txt) --key kms:alias/app --format json"))(encrypt_env)
    app.command("exec", cls=_SplitAtDashes,
                short_help="Run a command with decrypted bundles in its environment.",
                epilog=examples(
        "envelope exec --key kms:alias/app ssm:/app/prod/env -- ./server --port 8080",
        "envelope exec --key file:app.key base.env.enc prod.json.enc env:OVERRIDES -- env",
        "envelope exec --pristine --key kms:alias/app secretsmanager:prod/app -- /usr/bin/python app.py"))(
        exec_command)
