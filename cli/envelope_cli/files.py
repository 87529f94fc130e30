"""Local inputs and outputs: stdin and stdout ("-"), files and folders, and the two kinds registered for them.

Output rules (issue 3, "Input and output rules"), one sink class per kind of destination:
- :class:`StdoutSink`: standard output ("-"). Written as the library releases authenticated plaintext; what
  reached a pipe cannot be taken back.
- :class:`SpecialFileSink`: a destination that exists and is not a regular file (``/dev/null``, a FIFO, a
  terminal) is written directly, never replaced or unlinked.
- :class:`~envelope_cli.tempfiles.TemporaryFileSink`: a regular file, new or replaced with ``--force``, is
  written to an unnamed (or else a hidden named) temporary file beside it and put in place only after the
  library returned (``envelope_cli.tempfiles``).
- Decrypted files get mode 0600; encrypted files get the mode of their input (or the default mode for a new
  file when the input is a pipe).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Hashable, Sequence
from typing import BinaryIO

from .errors import FileProblem
from .locations import Entry, Kind, Sink, SinkRules, register
from .tempfiles import BUFFER, TEMP_SUFFIX, TemporaryFileSink, already_exists, close_quietly

__all__ = [
    "STDIO",
    "FileSource",
    "LocalFiles",
    "SpecialFileSink",
    "StdinSource",
    "Stdio",
    "StdoutSink",
    "grow_pipe",
    "is_terminal",
]

STDIO = "-"


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


# ---------------------------------------------------------------------------------------------------------
# small helpers for streams


#: Pipe buffer we ask for on stdin and stdout (Linux F_SETPIPE_SZ; 1 MiB is the default pipe-max-size). With
#: the default 64 KiB buffer every batch of the library costs dozens of reads and context switches: measured
#: on 256 MiB, `cat f | envelope ... | cat` took 0.60 s with 64 KiB pipes and 0.52 s with 1 MiB pipes.
PIPE_BUFFER = 1024 * 1024


def grow_pipe(stream: BinaryIO) -> None:
    """Ask for a larger pipe buffer when ``stream`` is a pipe; quietly keep the old size if refused."""
    try:
        import fcntl

        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and hasattr(fcntl, "F_SETPIPE_SZ"):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
    except (OSError, ValueError, AttributeError, ImportError):
        pass


def is_terminal(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _regular_size(fd: int) -> int | None:
    try:
        info = os.fstat(fd)
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _regular_mode(info: os.stat_result) -> int | None:
    return stat.S_IMODE(info.st_mode) & 0o777 if stat.S_ISREG(info.st_mode) else None


def _stdin_size() -> int | None:
    try:
        return _regular_size(sys.stdin.fileno())
    except (ValueError, AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------------------------
# sources


class StdinSource:
    """Standard input ("-"); its size and mode are known when it is a regular file (``< file``)."""

    location = STDIO

    @property
    def size(self) -> int | None:
        return _stdin_size()

    @property
    def mode(self) -> int | None:
        try:
            return _regular_mode(os.fstat(sys.stdin.fileno()))
        except (OSError, ValueError, AttributeError):
            return None

    def open(self) -> BinaryIO:
        grow_pipe(sys.stdin.buffer)
        return sys.stdin.buffer

    def close(self) -> None:
        pass  # standard input belongs to the process


class FileSource:
    """A file, opened for buffered reading; size and mode come from the open descriptor."""

    def __init__(self, path: str) -> None:
        self.location = path
        self._stream: BinaryIO | None = None
        self._info: os.stat_result | None = None

    def _stat(self) -> os.stat_result | None:
        if self._info is None and self._stream is not None:
            try:
                self._info = os.fstat(self._stream.fileno())
            except (OSError, ValueError):
                return None
        return self._info

    @property
    def size(self) -> int | None:
        info = self._stat()
        return info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None

    @property
    def mode(self) -> int | None:
        """Permission bits of a regular-file input (encrypted outputs keep them)."""
        info = self._stat()
        return None if info is None else _regular_mode(info)

    def open(self) -> BinaryIO:
        try:
            self._stream = open(self.location, "rb", buffering=BUFFER)
        except IsADirectoryError:
            raise _usage(f"input {self.location!r} is a folder, where a file is expected (add -r to process the "
                         "files in it)") from None
        except OSError as exc:
            raise FileProblem("cannot read input", exc, self.location) from None
        return self._stream

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


# ---------------------------------------------------------------------------------------------------------
# sinks


class StdoutSink:
    """Standard output ("-"). Nothing can be taken back from a pipe: the library releases only authenticated
    plaintext (for signed suites the final frame waits for the signature), and ``abort`` does nothing."""

    location = STDIO

    def __init__(self, rules: SinkRules) -> None:
        self.rules = rules
        self._stream: BinaryIO | None = None

    def open(self) -> BinaryIO:
        stream = sys.stdout.buffer
        if self.rules.refuse_terminal and is_terminal(stream):
            raise _usage(self.rules.refuse_terminal)
        grow_pipe(stream)
        self._stream = stream
        return stream

    def commit(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except OSError as exc:
                raise FileProblem("cannot write", exc, self.location) from None

    def abort(self) -> None:
        pass


class SpecialFileSink:
    """An existing destination that is not a regular file (``/dev/null``, a FIFO, a terminal): written
    directly, never replaced or unlinked. Like stdout, what it received cannot be taken back."""

    def __init__(self, path: str, rules: SinkRules) -> None:
        self.location = path
        self.rules = rules
        self._stream: BinaryIO | None = None

    def open(self) -> BinaryIO:
        try:
            self._stream = open(self.location, "wb")
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.location) from None
        if self.rules.refuse_terminal and is_terminal(self._stream):
            raise _usage(self.rules.refuse_terminal)
        return self._stream

    def commit(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError as exc:
                raise FileProblem("cannot write", exc, self.location) from None

    def abort(self) -> None:
        stream, self._stream = self._stream, None
        close_quietly(stream)


# ---------------------------------------------------------------------------------------------------------
# the two local kinds


class Stdio(Kind):
    """"-": standard input as a source, standard output as a sink."""

    name = "stdio"

    def claims(self, location: str) -> bool:
        return location == STDIO

    def source(self, location: str) -> StdinSource:
        return StdinSource()

    def sink(self, location: str, rules: SinkRules) -> StdoutSink:
        return StdoutSink(rules)

    def expand(self, location: str, recursive: bool) -> tuple[bool, Sequence[Entry]]:
        return False, [Entry(STDIO, STDIO, _stdin_size())]


def _stat(path: str, action: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise FileProblem(action, exc, path) from None


class LocalFiles(Kind):
    """Paths on this machine: the catch-all kind, registered last."""

    name = "file"

    def claims(self, location: str) -> bool:
        return True

    def source(self, location: str) -> FileSource:
        return FileSource(location)

    def sink(self, location: str, rules: SinkRules) -> Sink:
        try:
            info: os.stat_result | None = os.stat(location)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise FileProblem("cannot write", exc, location) from None
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise _usage(f"output {location!r} is a folder, where a file is expected")
        if info is not None and not stat.S_ISREG(info.st_mode):
            return SpecialFileSink(location, rules)
        if info is not None and not rules.force:
            raise already_exists(location)
        return TemporaryFileSink(location, rules, replacing=info is not None)

    def expand(self, location: str, recursive: bool) -> tuple[bool, Sequence[Entry]]:
        info = _stat(location, "cannot read input")
        if not stat.S_ISDIR(info.st_mode):
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            return False, [Entry(location, os.path.basename(location), size)]
        if not recursive:
            raise _usage(f"input {location!r} is a folder, where a file is expected (add -r to process the "
                         "files in it)")
        return True, _walk(location)

    def split(self, location: str) -> tuple[str, str]:
        return os.path.split(location)

    def join(self, folder: str, *parts: str) -> str:
        return os.path.join(folder, *parts)

    def check_folder(self, location: str) -> None:
        if os.path.exists(location) and not os.path.isdir(location):
            raise _usage(f"-o {location!r} is a file, but with several inputs or -r it must be a folder")

    def check_output(self, location: str, *, force: bool, source: str | None = None) -> None:
        try:
            info = os.stat(location)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FileProblem("cannot write", exc, location) from None
        if stat.S_ISREG(info.st_mode) and source not in (None, STDIO) and os.path.samefile(source, location):
            raise _usage(f"input {source!r} would be overwritten by its own output")
        if stat.S_ISDIR(info.st_mode):
            raise _usage(f"output {location!r} is a folder, where a file is expected (with one input, -o names "
                         "the output file)")
        if stat.S_ISREG(info.st_mode) and not force:
            raise already_exists(location)

    def identity(self, location: str) -> Hashable:
        return os.path.abspath(location)


def _walk(root: str) -> list[Entry]:
    """The regular files under ``root``, sorted; symlinks to files are followed, to folders not; our own
    temporary files are skipped."""
    found: list[Entry] = []

    def visit(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise FileProblem("cannot read folder", exc, folder) from None
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    visit(entry.path, rel + os.sep)
                elif entry.is_file() and not entry.name.endswith(TEMP_SUFFIX):
                    found.append(Entry(os.path.join(root, rel), rel, entry.stat().st_size))
            except OSError as exc:
                raise FileProblem("cannot read", exc, entry.path) from None

    visit(root, "")
    return found


register(LocalFiles(), last=True)
register(Stdio())
