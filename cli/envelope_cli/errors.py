"""The one place where exceptions become exit codes and one-line messages.

    0  success
    1  the message failed to authenticate or parse, or a setting refused it (FormatError, AuthenticationError,
       PolicyError including ContextMismatchError)
    2  usage error (bad option, UsageError, KeyFileError, a destination that exists, a folder given for a file,
       an output that is one of the inputs)
    3  no key could open or make the data key (KeyringError, KmsError)
    4  an I/O error (missing input, unwritable output, disk full, an input that changed while being read, an S3
       object or parameter that cannot be read or written): OSError, StorageError
    70 an unexpected error (a bug); 129 / 130 / 143 stopped by SIGHUP / SIGINT / SIGTERM
    141 the output pipe was closed by its reader (``envelope decrypt ... | head``): no message, like a
       process killed by SIGPIPE, after the usual clean-up

Every failure prints exactly one line to stderr, starting ``envelope: error:``; set ``ENVELOPE_DEBUG=1`` for a
traceback as well. Every line envelope writes to stderr (errors, warnings, ``-v`` lines) goes through
:func:`escape`: it is cut to :data:`MAX_LINE` characters and shows control and bidirectional-formatting
characters escaped, because parts of it (file names, EDK provider IDs, context keys) may be hostile. Library
messages name the library's keyword arguments; :data:`CLI_WORDS` restates them with the CLI's options. This
module imports nothing heavy:
``envelope.errors`` is looked up in ``sys.modules``, because an error from the library can only exist once the
library has been imported.
"""

from __future__ import annotations

import enum
import errno
import os
import sys
import threading

__all__ = ["CLI_WORDS", "DEBUG_ENV", "STOPPING", "ExitCode", "Terminated", "classify", "classify_task", "escape",
           "print_error", "print_warning", "say"]

DEBUG_ENV = "ENVELOPE_DEBUG"
PREFIX = "envelope: error: "
WARNING = "envelope: warning: "
MAX_LINE = 1000
BROKEN_PIPE = "the output was closed before the end (broken pipe)"

#: Set by the signal watcher (``envelope_cli.signals``) when it starts ending the process: from then on the
#: watcher prints the one line, and an error that another thread meets meanwhile (a worker pool broken by the
#: workers being stopped, an upload the watcher aborted) is not printed: that thread waits for the end.
STOPPING = threading.Event()
#: ... for at most this many seconds (the watcher waits up to 90 s for worker processes), then prints after all.
STOPPING_WAIT = 180.0

#: What ESDK messages look like in base64 (esdk-format.md section 9): v1 (01 80), v2 suites 0x0478 and 0x0578.
BASE64_PREFIXES = (b"AY", b"AgR4", b"AgV4")


class ExitCode(enum.IntEnum):
    OK = 0
    MESSAGE = 1
    USAGE = 2
    KEY = 3
    IO = 4
    INTERNAL = 70
    HANGUP = 129  # 128 + SIGHUP
    INTERRUPTED = 130  # 128 + SIGINT
    BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer killed by SIGPIPE
    TERMINATED = 143  # 128 + SIGTERM


#: Library wording -> the CLI's own (the library names its keyword arguments; a CLI user sees options).
CLI_WORDS = (
    ("refused by the unsigned-only option", "refused by --unsigned-only"),
    ("(raise max_frame_length, or --max-frame-length, to read it)", "(raise --max-frame-length to read it)"),
    ("(raise max_header_length to read it)", "(the most envelope reads)"),
    ("pass region= (CLI --region) or set", "give --region or set"),
    ("AWS_RETRY_MODE / retry_mode", "AWS_RETRY_MODE"),
    ("AWS_MAX_ATTEMPTS / max_attempts", "AWS_MAX_ATTEMPTS"),
    ("(reproduced_context=)", "(-c KEY=VALUE)"),
    ("(raise max_frame_length, or --max-frame-length, to verify it)", "(raise --max-frame-length to verify it)"),
)


class Terminated(SystemExit):
    """Raised by the SIGTERM / SIGHUP handler so that ``finally`` blocks remove temporary files."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _library_code(exc: BaseException) -> ExitCode | None:
    errors = sys.modules.get("envelope.errors")
    if errors is None:
        return None
    if isinstance(exc, errors.KeyringError):  # includes KmsError
        return ExitCode.KEY
    if isinstance(exc, (errors.FormatError, errors.AuthenticationError, errors.PolicyError)):
        return ExitCode.MESSAGE
    if isinstance(exc, (errors.UsageError, errors.KeyFileError)):
        return ExitCode.USAGE
    if isinstance(exc, errors.StorageError):
        return ExitCode.IO
    if isinstance(exc, errors.EnvelopeError):
        return ExitCode.MESSAGE
    return None


def _os_message(exc: OSError) -> str:
    if exc.errno == errno.EPIPE:
        return BROKEN_PIPE
    reason = exc.strerror or str(exc)
    action = getattr(exc, "action", None)
    if exc.filename is not None:
        if exc.filename == "-":
            where = "stdout" if action and "write" in action else "stdin"
        else:
            where = repr(os.fsdecode(exc.filename))
        return f"{action} {where}: {reason}" if action else f"{where}: {reason}"
    return f"{action}: {reason}" if action else reason


def _in_cli_words(text: str) -> str:
    for library, cli in CLI_WORDS:
        if library in text:
            text = text.replace(library, cli)
    return text


def _format_message(exc: BaseException, head: bytes | None, decoding: bool) -> str:
    errors = sys.modules["envelope.errors"]
    text = str(exc)
    if isinstance(exc, errors.FormatError) and head is not None:
        if exc.field == "message" and exc.offset == 0:
            return "the input is empty: there is no ESDK message to read"
        if not isinstance(exc, errors.TruncatedError) and exc.at_start:
            if not decoding and head.startswith(BASE64_PREFIXES):
                return ("the input is not an ESDK message, but it looks like one in base64 (ESDK messages in "
                        "base64 start with AY, AgR4 or AgV4): add --decode")
            return f"the input is not an ESDK message ({text})"
    return _in_cli_words(text)


def classify(exc: BaseException, *, head: bytes | None = None, decoding: bool = False) -> tuple[int, str]:
    """Map an exception to (exit code, one-line message).

    ``head`` (the first bytes of the input, when the error came from reading one) and ``decoding`` (--decode)
    give specific messages for input that is empty or not an ESDK message.
    """
    code: int | None = _library_code(exc)
    if code is not None:
        message = _format_message(exc, head, decoding)
    elif isinstance(exc, Terminated):
        code, message = 128 + exc.signum, "terminated by a signal; temporary files were removed"
    elif isinstance(exc, KeyboardInterrupt):
        code, message = ExitCode.INTERRUPTED, "interrupted; temporary files were removed"
    elif isinstance(exc, OSError):
        code = ExitCode.BROKEN_PIPE if exc.errno == errno.EPIPE else ExitCode.IO
        message = _os_message(exc)
    else:
        usage = _typer_usage(exc)
        if usage is not None:
            code, message = ExitCode.USAGE, usage
        else:
            code = ExitCode.INTERNAL
            message = f"unexpected {type(exc).__name__}; run with {DEBUG_ENV}=1 for a traceback"
    return code, escape(message)


def classify_task(exc: BaseException, head: bytes | None, decoding: bool) -> tuple[int, str]:
    """:func:`classify` for a task's failure (``envelope.batch.jobs.Run.classify``: it runs in the process that
    ran the task, a worker process or a Dask worker), with the traceback on stderr when ENVELOPE_DEBUG is set."""
    if debug():
        import traceback

        traceback.print_exc(file=sys.stderr)
    return classify(exc, head=head, decoding=decoding)


def escape(message: str) -> str:
    """One line: control and formatting characters escaped (``\\x1b``, ``\\n``, ``\\u202e``: a terminal must
    not interpret text from a file name or a message, and no second line may be forged), cut to MAX_LINE."""
    text = message.strip("\n")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... ({len(text) - MAX_LINE} more characters)"
    return text


def _typer_usage(exc: BaseException) -> str | None:
    typer = sys.modules.get("typer")
    if typer is None or not isinstance(exc, typer.TyperException):
        return None
    message = " ".join(str(exc.format_message()).splitlines())  # typer's own text: lines joined
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def print_error(message: str) -> None:
    """Write one ``envelope: error:`` line to stderr (escaped; a traceback too when ENVELOPE_DEBUG is set).

    A broken output pipe prints nothing (exit 141): the reader went away on purpose (``| head``), as for any
    tool killed by SIGPIPE. Standard output is pointed at /dev/null if it still holds data that cannot be
    written, so that the interpreter's exit does not complain about it either.

    While the signal watcher ends the process (:data:`STOPPING`), nothing is printed: the caller waits for the
    end, so that a stopped run prints exactly the watcher's one line."""
    if STOPPING.is_set():
        threading.Event().wait(STOPPING_WAIT)
    if message.endswith(BROKEN_PIPE):
        _quiet_stdout()
        if not debug():
            return
    if debug() and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc(file=sys.stderr)
    _line(PREFIX + escape(message))


def print_warning(message: str) -> None:
    """One ``envelope: warning:`` line (``-q`` leaves these out: the caller decides)."""
    _line(WARNING + escape(message))


def say(message: str) -> None:
    """One ``envelope:`` line that reports what was done (``-v``, keygen)."""
    _line("envelope: " + escape(message))


def _line(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nothing left to tell
        pass


def _quiet_stdout() -> None:
    stream = sys.stdout
    if stream is None:
        return
    try:
        stream.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
