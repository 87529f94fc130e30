"""Inputs and outputs: which file goes where, opening inputs, and atomic outputs.

Output rules (issue 3, "Input and output rules"):
- A regular-file destination is written through a temporary file in the same folder that is put in place
  only after the library returned, i.e. after every frame tag and the signature verified. On Linux it is an
  unnamed file (``O_TMPFILE``, mode 0600), linked into place at the end: a process killed meanwhile, even by
  SIGKILL or the OOM killer, leaves nothing behind, because the kernel frees an unnamed file with its last
  descriptor. (To replace a file with ``--force``, the finished file gets a hidden name for the instant before
  it is renamed over the old one.) Where the file system has no unnamed files it is a hidden named one
  (``.NAME.XXXXXXXX.envelope-tmp``, mode 0600), removed on any failure and on SIGINT / SIGTERM / SIGHUP;
  only SIGKILL can leave that one behind. Either way the destination is untouched until the end.
- An existing regular file is replaced only with ``--force``; without it the rename is a hard link, so a file
  that appears meanwhile is not replaced either.
- A destination that exists and is not a regular file (``/dev/null``, a FIFO, a terminal) is written directly,
  never replaced or unlinked. Standard output ("-") likewise.
- Decrypted files get mode 0600; encrypted files get the mode of their input (or the default mode for a new
  file when the input is stdin).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Literal

__all__ = [
    "Destination",
    "FileProblem",
    "Job",
    "Plan",
    "output_name",
    "plan_jobs",
    "abandon_temporary_files",
    "remove_temporary_files",
]

Direction = Literal["encrypt", "decrypt"]
TEMP_SUFFIX = ".envelope-tmp"
STDIO = "-"
DEFAULT_SUFFIX = ".encrypted"
DECRYPTED_SUFFIX = ".decrypted"


class FileProblem(OSError):
    """An OSError that says what the CLI was doing: ``cannot read input 'x': No such file or directory``."""

    def __init__(self, action: str, exc: OSError, filename: str | None = None) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), filename if filename is not None else exc.filename)
        self.action = action


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


# ---------------------------------------------------------------------------------------------------------
# temporary files: a registry so that a signal handler can remove them even while other threads write


_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def remove_temporary_files() -> None:
    """Remove every temporary output still registered (the CLI's last step, whatever happened)."""
    with _LIVE_LOCK:
        _unlink_all()


def abandon_temporary_files() -> None:
    """For a signal: remove them and keep the registry locked, so that no thread creates another one before
    the process exits (the caller ends the process)."""
    _LIVE_LOCK.acquire()
    _unlink_all()


def _unlink_all() -> None:
    for path in list(_LIVE):
        try:
            os.unlink(path)
        except OSError:
            pass
    _LIVE.clear()


def _default_mode() -> int:
    mask = os.umask(0o022)  # there is no getter: read it once, at import, before any thread or worker starts
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _default_mode()
_MADE: set[str] = set()  # output folders this process already created (many files share one)
#: Buffer of our file objects. Giving it explicitly also spares the isatty() and fstat() calls open() makes
#: to choose one; the library reads and writes whole batches, which bypass the buffer anyway.
BUFFER = 64 * 1024
#: Unnamed temporary files (Linux ``O_TMPFILE``) are linked into place through their ``/proc/self/fd`` entry
#: (``linkat`` with ``AT_SYMLINK_FOLLOW``; ``AT_EMPTY_PATH`` would need a capability). Cleared for the rest of
#: the process when that link is refused but a named file works (no /proc, a sandbox).
_UNNAMED = {"usable": hasattr(os, "O_TMPFILE") and sys.platform.startswith("linux")}
_PROC_FD = "/proc/self/fd"
#: open(O_TMPFILE) errors that mean "not here": the kernel or file system has no unnamed files
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL, errno.ENOSYS})
#: link errors after which the data is copied to a named temporary file instead
_NO_LINK = frozenset({errno.ENOENT, errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP,
                      errno.EXDEV, errno.EINVAL, errno.ENOTDIR})


# ---------------------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class Job:
    source: str  # a path or "-"
    destination: str  # a path or "-"
    size: int | None  # input bytes, when the input is a regular file


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    many: bool  # several inputs or -r: -o is a folder

    @property
    def to_stdout(self) -> bool:
        return any(job.destination == STDIO for job in self.jobs)


def output_name(name: str, direction: Direction, suffix: str | None) -> str:
    """encrypt: NAME + SUF (default .encrypted). decrypt: NAME without SUF when it ends with it, else NAME.decrypted."""
    suf = DEFAULT_SUFFIX if suffix is None else suffix
    if direction == "encrypt":
        if not suf:
            raise _usage("--suffix must not be empty when encrypting")
        return name + suf
    if suf and name.endswith(suf) and len(name) > len(suf):
        return name[:-len(suf)]
    return name + DECRYPTED_SUFFIX


def _stat(path: str, action: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise FileProblem(action, exc, path) from None


def _walk(root: str) -> list[tuple[str, int]]:
    """(path relative to ``root``, size) of the regular files under ``root``, sorted; symlinks to files are
    followed, to folders not; our own temporary files are skipped."""
    found: list[tuple[str, int]] = []

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
                    found.append((rel, entry.stat().st_size))
            except OSError as exc:
                raise FileProblem("cannot read", exc, entry.path) from None

    visit(root, "")
    return found


def plan_jobs(inputs: list[str], output: str | None, *, direction: Direction, recursive: bool,
              suffix: str | None, force: bool) -> Plan:
    """Turn INPUT arguments and ``-o`` into (source, destination) pairs, checking everything that can be checked
    before any work: missing inputs, folders without -r, -o that is a folder (or is not), existing destinations
    without --force, two inputs with the same destination."""
    inputs = inputs or [STDIO]
    if STDIO in inputs and len(inputs) > 1:
        raise _usage("'-' (stdin) cannot be combined with other inputs")
    many = len(inputs) > 1 or recursive
    jobs: list[Job] = []
    if inputs == [STDIO]:
        if recursive:
            raise _usage("-r needs folder inputs, not stdin")
        jobs.append(Job(STDIO, output or STDIO, _stdin_size()))
    else:
        if many and output is not None:
            if output == STDIO:
                raise _usage("with several inputs or -r, -o names a folder; it cannot be '-' (stdout)")
            if os.path.exists(output) and not os.path.isdir(output):
                raise _usage(f"-o {output!r} is a file, but with several inputs or -r it must be a folder")
        for item in inputs:
            info = _stat(item, "cannot read input")
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    raise _usage(f"input {item!r} is a folder, where a file is expected (add -r to process the "
                                 "files in it)")
                base = output if output is not None else item
                for rel, bytes_ in _walk(item):
                    folder, name = os.path.split(rel)
                    jobs.append(Job(os.path.join(item, rel),
                                    os.path.join(base, folder, output_name(name, direction, suffix)), bytes_))
                continue
            size = info.st_size if stat.S_ISREG(info.st_mode) else None
            folder, name = os.path.split(item)
            if output is None or many:
                base = output if output is not None else folder
                jobs.append(Job(item, os.path.join(base, output_name(name, direction, suffix)), size))
            else:
                jobs.append(Job(item, output, size))
    _check_destinations(jobs, force)
    return Plan(jobs, many)


def _stdin_size() -> int | None:
    try:
        info = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _check_destinations(jobs: list[Job], force: bool) -> None:
    seen: dict[str, str] = {}
    for job in jobs:
        if job.destination == STDIO:
            continue
        key = os.path.abspath(job.destination)
        if key in seen:
            raise _usage(f"inputs {seen[key]!r} and {job.source!r} would both be written to {job.destination!r}")
        seen[key] = job.source
        try:
            info = os.stat(job.destination)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise FileProblem("cannot write", exc, job.destination) from None
        if stat.S_ISREG(info.st_mode) and job.source != STDIO and os.path.samefile(job.source, job.destination):
            raise _usage(f"input {job.source!r} would be overwritten by its own output")
        if stat.S_ISDIR(info.st_mode):
            raise _usage(f"output {job.destination!r} is a folder, where a file is expected (with one input, "
                         "-o names the output file)")
        if stat.S_ISREG(info.st_mode) and not force:
            raise _usage(f"output {job.destination!r} already exists (add --force to replace it)")


# ---------------------------------------------------------------------------------------------------------
# inputs


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


def open_input(path: str) -> BinaryIO:
    """A buffered binary reader: stdin for '-', else the file (not yet metered)."""
    if path == STDIO:
        grow_pipe(sys.stdin.buffer)
        return sys.stdin.buffer
    try:
        return open(path, "rb", buffering=BUFFER)
    except IsADirectoryError:
        raise _usage(f"input {path!r} is a folder, where a file is expected (add -r to process the files in it)"
                     ) from None
    except OSError as exc:
        raise FileProblem("cannot read input", exc, path) from None


def input_mode(stream: BinaryIO) -> int | None:
    """Permission bits of a regular-file input (encrypted outputs keep them)."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return stat.S_IMODE(info.st_mode) & 0o777 if stat.S_ISREG(info.st_mode) else None


def is_terminal(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------------
# outputs


def _link_descriptor(fd: int, path: str) -> None:
    """Give the open unnamed file ``fd`` the name ``path`` (fails with FileExistsError if ``path`` exists)."""
    proc = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # this process's, also in a worker
    try:
        os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


class Destination:
    """An output that appears only when :meth:`commit` is called (see the module docstring).

    Use as a context manager: leaving the block with an exception discards everything that was written.
    ``mode`` is the final permission bits of a new file (None: the default for new files).
    """

    def __init__(self, path: str, *, force: bool, mode: int | None, make_folders: bool = False,
                 refuse_terminal: str | None = None) -> None:
        self.path = path
        self.force = force
        self.mode = mode
        self.make_folders = make_folders
        self.refuse_terminal = refuse_terminal  # a message when binary output must not go to a terminal
        self.temp: str | None = None  # the name of a named temporary file, while it exists
        self.unnamed = False  # writing to an unnamed (O_TMPFILE) file
        self.stream: BinaryIO | None = None
        self._own_stream = False
        self._replacing = False

    # -- opening

    def open(self) -> BinaryIO:
        if self.path == STDIO:
            stream = sys.stdout.buffer
            self._check_terminal(stream)
            grow_pipe(stream)
            self.stream = stream
            return stream
        try:
            info: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.path) from None
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise _usage(f"output {self.path!r} is a folder, where a file is expected")
        if info is not None and not stat.S_ISREG(info.st_mode):
            return self._open_direct()
        if info is not None and not self.force:
            raise _usage(f"output {self.path!r} already exists (add --force to replace it)")
        self._replacing = info is not None
        return self._open_temp()

    def _check_terminal(self, stream: BinaryIO) -> None:
        if self.refuse_terminal and is_terminal(stream):
            raise _usage(self.refuse_terminal)

    def _open_direct(self) -> BinaryIO:
        try:
            stream = open(self.path, "wb")
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.path) from None
        self._own_stream = True
        self.stream = stream
        try:
            self._check_terminal(stream)
        except BaseException:
            self.abort()
            raise
        return stream

    def _open_temp(self) -> BinaryIO:
        folder = os.path.dirname(self.path) or "."
        if self.make_folders and folder not in _MADE:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                raise FileProblem("cannot create folder", exc, folder) from None
            _MADE.add(folder)
        try:
            fd = self._open_unnamed(folder)
            if fd is None:
                fd = self._open_named()
        except OSError as exc:
            raise FileProblem("cannot write", exc, self.path) from None
        self.stream = open(fd, "wb", buffering=BUFFER)
        self._own_stream = True
        return self.stream

    def _open_unnamed(self, folder: str) -> int | None:
        """An unnamed file in ``folder`` (readable too, for :meth:`_copy_unnamed`), or None where there are none."""
        if not _UNNAMED["usable"]:
            return None
        try:
            fd = os.open(folder, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in _NO_UNNAMED:
                return None
            raise
        self.unnamed = True
        return fd

    def _temp_path(self) -> str:
        """A fresh hidden name beside the destination: ``.NAME.XXXXXXXX.envelope-tmp``."""
        folder, name = os.path.split(self.path)
        return os.path.join(folder or ".", f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")

    def _open_named(self) -> int:
        """A hidden temporary file beside the destination, registered so that a signal removes it."""
        temp = self._temp_path()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        with _LIVE_LOCK:
            fd = os.open(temp, flags, 0o600)
            _LIVE.add(temp)
        self.temp = temp
        return fd

    # -- finishing

    def commit(self) -> None:
        """Make the output visible: flush, set the mode, rename the temporary file into place."""
        stream = self.stream
        assert stream is not None
        try:
            if not self._own_stream:
                stream.flush()
                return
            if self.temp is None and not self.unnamed:  # a destination opened directly (a FIFO, a device)
                stream.close()
                return
            stream.flush()
            fd = stream.fileno()
            os.fchmod(fd, self.mode if self.mode is not None else _NEW_FILE_MODE)
            if self._replacing:
                os.fsync(fd)  # a crash just after the rename must not leave an empty file where the old one was
            if self.unnamed:
                keep = os.dup(fd)  # the file needs a descriptor to get a name, and dies with the last one
                try:
                    stream.close()  # a late write error surfaces here, before the file has any name
                    self._place_unnamed(keep)
                finally:
                    os.close(keep)
            else:
                stream.close()
            if self.temp is not None:
                self._rename()
        except OSError as exc:
            self.abort()
            if isinstance(exc, FileProblem):
                raise
            raise FileProblem("cannot write", exc, self.path) from None
        except BaseException:
            self.abort()
            raise

    def _place_unnamed(self, fd: int) -> None:
        """Link the unnamed file at the destination. To replace a file (``--force``) it gets a hidden name
        first, which :meth:`_rename` then moves over the old file in one step: a SIGKILL in that instant
        leaves the finished file under its hidden name."""
        if not self._replacing:
            try:
                _link_descriptor(fd, self.path)
                return
            except FileExistsError:
                if not self.force:
                    raise _usage(f"output {self.path!r} already exists (add --force to replace it)") from None
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                self._copy_unnamed(fd)
                return
        self._name_unnamed(fd)

    def _name_unnamed(self, fd: int) -> None:
        """Give the unnamed file a hidden temporary name (a link, or else a copy) for :meth:`_rename`."""
        temp = self._temp_path()
        try:
            with _LIVE_LOCK:
                _link_descriptor(fd, temp)
                _LIVE.add(temp)
            self.temp = temp
            return
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        self._copy_unnamed(fd)

    def _copy_unnamed(self, fd: int) -> None:
        """The link through /proc was refused: copy the data into a named temporary file for :meth:`_rename`.
        If that works, the folder takes files but not such links, so this process uses named files from now
        on; if it fails too, the destination itself is the problem and its error is reported."""
        out = self._open_named()
        try:
            size, offset = os.fstat(fd).st_size, 0
            while offset < size:
                sent = os.sendfile(out, fd, offset, size - offset)
                if not sent:
                    raise OSError(errno.EIO, "the temporary file ended early while copying it")
                offset += sent
            os.fchmod(out, os.fstat(fd).st_mode & 0o7777)
            if self._replacing:
                os.fsync(out)
        finally:
            os.close(out)
        _UNNAMED["usable"] = False

    def _rename(self) -> None:
        assert self.temp is not None
        if self.force:
            os.replace(self.temp, self.path)
        else:
            try:  # link, unlike rename, refuses to replace a file that appeared since open()
                os.link(self.temp, self.path)
            except FileExistsError:
                raise _usage(f"output {self.path!r} already exists (add --force to replace it)") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
                                     errno.ENOSYS):
                    raise
                if os.path.lexists(self.path):
                    raise _usage(f"output {self.path!r} already exists (add --force to replace it)") from None
                os.replace(self.temp, self.path)
                self._forget_temp()
                return
            os.unlink(self.temp)
        self._forget_temp()

    def _forget_temp(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self.temp or "")
        self.temp = None

    def abort(self) -> None:
        """Discard the output: close and remove the temporary file (a direct destination is just closed)."""
        stream, self.stream = self.stream, None
        if stream is not None and self._own_stream:
            try:
                stream.close()
            except OSError:
                pass
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            self._forget_temp()

    def __enter__(self) -> BinaryIO:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
