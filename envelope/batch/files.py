"""Local inputs and outputs: stdin and stdout ("-"), files and folders, and the two kinds registered for them.

Output rules (issues 3 and 12), one sink class per kind of destination:
- :class:`StdoutSink` / :class:`DescriptorSink`: standard output ("-"), and any path that names an open
  descriptor of this process (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``, or a symlink
  that leads to one): written through that descriptor, never created, renamed over or removed, with or
  without ``--force``. What went through it cannot be taken back (the library releases only authenticated
  plaintext; for signed suites the final frame waits for the signature).
- :class:`SpecialFileSink`: a destination that exists and is not a regular file (``/dev/null``, a FIFO, a
  terminal) is written directly, never replaced or unlinked.
- :class:`~envelope.batch.tempfiles.TemporaryFileSink`: a regular file, new or replaced with ``--force``, is
  written to an unnamed (or else a hidden named) temporary file beside it and put in place only after the
  library returned (``envelope.batch.tempfiles``). An output that is a symlink to a regular file is, with
  ``--force``, replaced where the link points (the temporary file is made in the target's folder), and the link
  stays a link; without ``--force`` it is an existing output. A dangling symlink is not written through.
- Nothing in ``/dev`` or ``/proc`` is ever created or replaced.
- Decrypted files get mode 0600; encrypted files get the mode of their input (or the default mode for a new
  file when the input is a pipe).
"""

from __future__ import annotations

import functools
import os
import re
import stat
import sys
from collections.abc import Hashable, Iterator, Sequence
from typing import BinaryIO

from .locations import Entry, FileProblem, Kind, Planned, Sink, SinkRules, Source, Walk, register
from .tempfiles import BUFFER, TemporaryFileSink, already_exists, close_quietly

__all__ = [
    "STDIO",
    "DescriptorSink",
    "DescriptorSource",
    "FileSource",
    "LocalFiles",
    "SpecialFileSink",
    "StdinSource",
    "Stdio",
    "StdoutSink",
    "descriptor_of",
    "grow_pipe",
    "in_system_folder",
    "is_terminal",
    "local_output",
]

STDIO = "-"


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


# ---------------------------------------------------------------------------------------------------------
# small helpers for streams and paths


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


_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd|proc/thread-self/fd|proc/(\d+)/fd|proc/self/task/\d+/fd)/(\d+)")
_SYSTEM = ("/dev", "/proc")
_FILES_ALLOWED = ("/dev/shm",)  # noqa: S108 - a tmpfs meant for files (plaintext kept off the disk)


def descriptor_of(path: str) -> int | None:
    """The descriptor of this process that ``path`` names (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``,
    ``/proc/PID/fd/N`` with our PID), directly or through a chain of symlinks; else None.

    The links are followed one at a time, because the last one (``/proc/self/fd/1``) is a "magic" link to
    whatever the descriptor is open on: resolving the whole path would name that file, and writing to it by
    name would bypass the descriptor (and its offset) or replace the file under the shell's feet."""
    current = os.path.abspath(path)
    if not current.startswith(_SYSTEM):  # elsewhere only a link can lead to one: most paths cost one lstat
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return None
        except (OSError, ValueError):
            return None
    for _ in range(40):  # the kernel's own limit on a chain of links
        if current in _STANDARD:
            return _STANDARD[current]
        match = _FD_PATH.fullmatch(current)
        if match and (match.group(1) is None or int(match.group(1)) == os.getpid()):
            return int(match.group(2))
        try:
            target = os.readlink(current)
        except OSError:
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
    return None


def _names_descriptor(absolute: str) -> bool:
    """``absolute`` is itself one of the names :func:`descriptor_of` knows (``/dev/stdout``, ``/dev/fd/3``).
    Any other path that is not a symlink names no descriptor: :func:`descriptor_of` would only find that out
    with a ``readlink`` (for each output under ``/dev/shm``, say)."""
    return absolute in _STANDARD or _FD_PATH.fullmatch(absolute) is not None


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    """The resolved form of an absolute folder path (planning asks for the same few folders many times)."""
    return os.path.realpath(folder)


def _where(path: str) -> tuple[str, str]:
    """(resolved folder, name) of ``path``: where a file of that name is created."""
    folder, name = os.path.split(os.path.abspath(path))
    return _real_folder(folder), name


def in_system_folder(path: str) -> bool:
    """``path`` is in ``/dev`` or ``/proc`` (after resolving links in its folder), where envelope never creates
    or replaces a file; ``/dev/shm`` is not counted."""
    return _in_system_folder(_where(path)[0])


@functools.lru_cache(maxsize=4096)
def _in_system_folder(folder: str) -> bool:  # cached: every output of a run is in one of a few folders
    def under(tops: tuple[str, ...]) -> bool:
        return any(folder == top or folder.startswith(top + "/") for top in tops)

    return under(_SYSTEM) and not under(_FILES_ALLOWED)


def _regular(info: os.stat_result) -> tuple[int | None, int | None]:
    """(size, mode) of a regular file; a size of 0 is not trusted (``/proc`` and ``/sys`` files say 0 and have
    content), so it is unknown."""
    if not stat.S_ISREG(info.st_mode):
        return None, None
    return info.st_size or None, stat.S_IMODE(info.st_mode) & 0o777


# ---------------------------------------------------------------------------------------------------------
# sources


class _OpenSource:
    """Size and mode, read from the open descriptor when the source is opened (what it reads from then)."""

    location: str
    size: int | None = None
    mode: int | None = None  # permission bits of a regular-file input: encrypted outputs keep them

    _stream: BinaryIO | None = None  # what open() made, closed by close()

    def _opened(self, stream: BinaryIO) -> BinaryIO:
        try:
            self.size, self.mode = _regular(os.fstat(stream.fileno()))
        except (OSError, ValueError, AttributeError):
            pass
        return stream

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # an inherited descriptor stays open: its stream was opened with closefd=False


class StdinSource(_OpenSource):
    """Standard input ("-", or ``/dev/stdin`` with no ``-o``); a regular file behind it has a size and mode."""

    location = STDIO

    def open(self) -> BinaryIO:
        grow_pipe(sys.stdin.buffer)
        return self._opened(sys.stdin.buffer)

    def close(self) -> None:
        pass  # standard input belongs to the process


class DescriptorSource(_OpenSource):
    """A path that names another open descriptor of this process (``/dev/fd/63`` from ``<(...)``): read through
    the descriptor, which stays open (reopening it by name fails for sockets)."""

    def __init__(self, fd: int, location: str) -> None:
        self.fd = fd
        self.location = location

    def open(self) -> BinaryIO:
        try:
            self._stream = open(self.fd, "rb", buffering=BUFFER, closefd=False)
        except OSError as exc:
            raise FileProblem("cannot read input", exc, self.location) from None
        return self._opened(self._stream)


class FileSource(_OpenSource):
    """A file, opened for buffered reading."""

    def __init__(self, path: str) -> None:
        self.location = path

    def open(self) -> BinaryIO:
        try:
            self._stream = open(self.location, "rb", buffering=BUFFER)
        except IsADirectoryError:
            raise _usage(f"input {self.location!r} is a folder, where a file is expected (add -r to process the "
                         "files in it)") from None
        except OSError as exc:
            raise FileProblem("cannot read input", exc, self.location) from None
        return self._opened(self._stream)


# ---------------------------------------------------------------------------------------------------------
# sinks


class StdoutSink:
    """Standard output: "-", or a path that names descriptor 1 (``/dev/stdout``). Nothing can be taken back
    from a pipe, so ``abort`` does nothing."""

    def __init__(self, rules: SinkRules, location: str = STDIO) -> None:
        self.location = location
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


class _DirectSink:
    """An output written as it goes, which cannot be taken back: ``commit`` flushes and closes our file object,
    ``abort`` just closes it."""

    def __init__(self, location: str, rules: SinkRules) -> None:
        self.location = location
        self.rules = rules
        self._stream: BinaryIO | None = None

    def commit(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()  # flushes (a descriptor sink's descriptor stays open: closefd=False)
            except OSError as exc:
                raise FileProblem("cannot write", exc, self.location) from None

    def abort(self) -> None:
        stream, self._stream = self._stream, None
        close_quietly(stream)


class DescriptorSink(_DirectSink):
    """A path that names another open descriptor of this process (``/dev/stderr``, ``/dev/fd/3``): written
    through the descriptor, which stays open; nothing is created, replaced or removed."""

    def __init__(self, fd: int, location: str, rules: SinkRules) -> None:
        super().__init__(location, rules)
        self.fd = fd

    def open(self) -> BinaryIO:
        try:
            os.fstat(self.fd)
            self._stream = open(self.fd, "wb", buffering=BUFFER, closefd=False)
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.location) from None
        if self.rules.refuse_terminal and is_terminal(self._stream):
            raise _usage(self.rules.refuse_terminal)
        grow_pipe(self._stream)
        return self._stream


class SpecialFileSink(_DirectSink):
    """An existing destination that is not a regular file (``/dev/null``, a FIFO, a terminal): written
    directly, never replaced or unlinked. Like stdout, what it received cannot be taken back."""

    def open(self) -> BinaryIO:
        try:
            self._stream = open(self.location, "wb")
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.location) from None
        if self.rules.refuse_terminal and is_terminal(self._stream):
            raise _usage(self.rules.refuse_terminal)
        return self._stream


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

    def expand(self, location: str, walk: Walk) -> tuple[bool, Sequence[Entry]]:
        size = None
        try:
            info = os.fstat(sys.stdin.fileno())
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
        except (OSError, ValueError, AttributeError):
            pass
        return False, [Entry(STDIO, STDIO, size)]

    def plan_output(self, location: str) -> Planned:
        return Planned(("fd", 1), _behind(1), False)

    def holds(self, location: str) -> Hashable | None:
        return _behind(0)


def _file_id(info: os.stat_result) -> Hashable | None:
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def _behind(fd: int) -> Hashable | None:
    """(device, inode) of the regular file behind descriptor ``fd``; None for a pipe, a terminal, a closed fd."""
    try:
        return _file_id(os.fstat(fd))
    except (OSError, ValueError):
        return None


def local_output(location: str) -> _Output:
    """What a local output path is (a descriptor, a special file, a regular file or nothing yet, and where a
    file would be written), refusing a folder, a dangling symlink and a new or replaced file in /dev or /proc."""
    return _Output(location)


class _Output:
    """What a local output path is, decided the same way when planning and when the sink is made."""

    def __init__(self, location: str, *, nothing_there: bool = False) -> None:
        """``nothing_there``: the caller knows no file is at ``location`` (its folder is empty or missing)."""
        self.location = location
        self.fd: int | None = None
        self.target = location  # where a file is written: the path, or for a symlink what it points to
        link: os.stat_result | None = None
        try:
            if not nothing_there:
                link = os.lstat(location)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FileProblem("cannot write", exc, location) from None
        self.info = link
        is_link = link is not None and stat.S_ISLNK(link.st_mode)
        absolute = os.path.abspath(location)
        if is_link or _names_descriptor(absolute):
            self.fd = descriptor_of(location)
            if self.fd is not None:
                return
        if is_link:
            self.target = os.path.realpath(location)
            try:
                self.info = os.stat(location)
            except FileNotFoundError:
                raise _usage(f"output {location!r} is a symlink to {self.target!r}, which does not exist (envelope "
                             "does not write through a dangling symlink)") from None
            except OSError as exc:
                raise FileProblem("cannot write", exc, location) from None
        if self.info is not None and stat.S_ISDIR(self.info.st_mode):
            raise _usage(f"output {location!r} is a folder, where a file is expected")
        if is_link:
            self.where = _where(self.target)  # (resolved folder, name): where the file goes
        else:
            folder, name = os.path.split(absolute)
            self.where = _real_folder(folder), name
        if self.regular is not False and _in_system_folder(self.where[0]):
            raise _usage(f"output {location!r}: envelope never creates or replaces files in /dev or /proc (name a "
                         "file elsewhere, or an existing device)")

    @property
    def regular(self) -> bool | None:
        """True: an existing regular file; False: a descriptor or special file; None: nothing there yet."""
        if self.fd is not None:
            return False
        return None if self.info is None else stat.S_ISREG(self.info.st_mode)


_NOT_NAMES = ("", ".", "..")  # what a listing never shows: such outputs are looked at on their own


def _empty_or_missing(folder: str) -> bool:
    """``folder`` holds nothing, or does not exist (nor does anything inside it, then)."""
    try:
        with os.scandir(folder) as listing:
            return next(listing, None) is None
    except FileNotFoundError:
        return True
    except OSError:  # not a folder, not readable: each output is looked at on its own, and refused there
        return False


class LocalFiles(Kind):
    """Paths on this machine: the catch-all kind, registered last."""

    name = "file"

    def claims(self, location: str) -> bool:
        return True

    def source(self, location: str) -> Source:
        fd = descriptor_of(location)
        if fd == 0:
            return StdinSource()
        return FileSource(location) if fd is None else DescriptorSource(fd, location)

    def sink(self, location: str, rules: SinkRules) -> Sink:
        out = _Output(location)
        if out.fd == 1:
            return StdoutSink(rules, location)
        if out.fd is not None:
            return DescriptorSink(out.fd, location, rules)
        if out.regular is False:
            return SpecialFileSink(location, rules)
        if out.regular and not rules.force:
            raise already_exists(location)
        return TemporaryFileSink(out.target, rules, replacing=bool(out.regular), location=location)

    def expand(self, location: str, walk: Walk) -> tuple[bool, Sequence[Entry]]:
        try:
            info = os.stat(location)
        except OSError as exc:
            raise FileProblem("cannot read input", exc, location) from None
        if not stat.S_ISDIR(info.st_mode):
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            return False, [Entry(location, os.path.basename(location), size)]
        if not walk.recursive:
            raise _usage(f"input {location!r} is a folder, where a file is expected (add -r to process the "
                         "files in it)")
        from .folders import walk_folder

        return True, walk_folder(location, walk)

    def split(self, location: str) -> tuple[str, str]:
        return os.path.split(location)

    def join(self, folder: str, *parts: str) -> str:
        return os.path.join(folder, *parts)

    def is_folder(self, location: str) -> bool:
        return location.endswith(("/", os.sep)) or os.path.isdir(location)

    def check_folder(self, location: str) -> None:
        if os.path.exists(location) and not os.path.isdir(location):
            raise _usage(f"-o {location!r} is a file, but with several inputs or -r it must be a folder")

    def plan_output(self, location: str, *, nothing_there: bool = False) -> Planned:
        out = _Output(location, nothing_there=nothing_there)
        if out.fd is not None:
            try:
                return Planned(("fd", out.fd), _file_id(os.fstat(out.fd)), False)
            except OSError as exc:
                raise FileProblem("cannot write", exc, location) from None
        return Planned(("path", *out.where), None if out.info is None else _file_id(out.info), bool(out.regular))

    def plan_outputs(self, locations: Sequence[str]) -> Iterator[Planned]:
        """As :meth:`plan_output` for each, but a folder that is missing or empty when it is first looked at is
        listed once instead of looking up each output in it (10,000 outputs into a new folder: one call, not
        10,000). Only "nothing at all there" is trusted: a name absent from a listing might still be there on
        a case-insensitive file system, so folders with anything in them are asked name by name."""
        empty: dict[str, bool] = {}
        for location in locations:
            folder, name = os.path.split(location)
            if folder not in empty:
                empty[folder] = _empty_or_missing(folder or ".")
            yield self.plan_output(location, nothing_there=name not in _NOT_NAMES and empty[folder])

    def mark_of(self, location: str) -> str | None:
        from .tempfiles import read_mark

        return read_mark(location)

    def holds(self, location: str) -> Hashable | None:
        try:
            info = os.lstat(location)
            if stat.S_ISLNK(info.st_mode):
                fd = descriptor_of(location)
                return _behind(fd) if fd is not None else _file_id(os.stat(location))
        except (OSError, ValueError):
            return None
        return _file_id(info)


register(LocalFiles(), last=True)
register(Stdio())
