"""Temporary output files: a regular-file destination is written here and put in place only at the end.

:class:`TemporaryFileSink` writes through a temporary file in the destination's folder that is put in place
only after the library returned, i.e. after every frame tag and the signature verified. On Linux it is an
:class:`UnnamedFile` (``O_TMPFILE``, mode 0600), linked into place at the end: a process killed meanwhile, even
by SIGKILL or the OOM killer, leaves nothing behind, because the kernel frees an unnamed file with its last
descriptor. (To replace a file with ``--force``, the finished file gets a hidden name for the instant before it
is renamed over the old one.) Where the file system has no unnamed files it is a :class:`NamedFile`
(``.NAME.XXXXXXXX.envelope-tmp``, mode 0600), removed on any failure and on SIGINT / SIGTERM / SIGHUP (the
registry below is what the signal watcher empties); only SIGKILL can leave that one behind. Either way the
destination is untouched until the end. An existing file is replaced only with ``--force``; without it the
file is put in place with a hard link, so a file that appears meanwhile is not replaced either.
"""

from __future__ import annotations

import errno
import os
import secrets
import sys
import threading
from typing import IO, Any, BinaryIO

from .locations import FileProblem, OutputExists, SinkRules

__all__ = ["BUFFER", "CREATED", "TEMP_SUFFIX", "NamedFile", "TemporaryFileSink", "UnnamedFile", "new_run",
           "abandon_temporary_files", "already_exists", "close_quietly", "remove_empty_folders",
           "remove_temporary_files"]

TEMP_SUFFIX = ".envelope-tmp"


def close_quietly(stream: IO[Any] | None) -> None:
    """Close an output that is being discarded: its write errors no longer matter."""
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


def already_exists(path: str) -> Exception:
    return OutputExists(f"output {path!r} already exists (add --force to replace it)")


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
_MADE: set[str] = set()  # output folders this process already made sure of (many files share one)
#: folders this process created, in order: a folder a failed run leaves empty is removed again
CREATED: list[str] = []


def _make_folders(folder: str) -> None:
    """``os.makedirs``, recording each folder it creates in :data:`CREATED`."""
    missing = []
    parent = os.path.abspath(folder)
    while not os.path.isdir(parent):
        missing.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise FileProblem("cannot create folder", OSError(errno.EEXIST, "a file is in the way"),
                                  path) from None
            continue
        except OSError as exc:
            raise FileProblem("cannot create folder", exc, path) from None
        CREATED.append(path)
    _MADE.add(os.path.abspath(folder))


def new_run() -> None:
    """Forget the folders made for an earlier run (a long-lived Dask worker serves many runs, and a folder made
    for one may be gone by the next)."""
    _MADE.clear()
    CREATED.clear()


def remove_empty_folders(folders: list[str]) -> None:
    """Remove the folders in ``folders`` (created by this run) that are still empty, the deepest first."""
    for path in sorted(set(folders), key=len, reverse=True):
        try:
            os.rmdir(path)
        except OSError:
            continue  # not empty (or gone): it holds outputs, or is not ours to remove
        _MADE.discard(path)
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
#: hard-link errors after which a new file is renamed into place instead (after checking the name is free)
_NO_HARD_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


#: The extended attribute that holds a run's mark on a local output (``SinkRules.mark``: Dask retries).
MARK_ATTRIBUTE = "user.envelope.run"


def set_mark(fd: int, mark: str | None) -> None:
    """Give the open file ``fd`` the run mark; quietly nothing where the file system has no user attributes."""
    if mark is not None and hasattr(os, "setxattr"):
        try:
            os.setxattr(fd, MARK_ATTRIBUTE, mark.encode("ascii"))
        except OSError:
            pass


def read_mark(path: str | int) -> str | None:
    """The run mark of the file at ``path`` (following links; or of the open descriptor), or None."""
    if not hasattr(os, "getxattr"):
        return None
    try:
        return os.getxattr(path, MARK_ATTRIBUTE).decode("ascii", "replace")
    except OSError:
        return None


def _temp_path(path: str) -> str:
    """A fresh hidden name beside ``path``: ``.NAME.XXXXXXXX.envelope-tmp``."""
    folder, name = os.path.split(path)
    return os.path.join(folder or ".", f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _forget(temp: str) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(temp)


def _move_into_place(temp: str, path: str, force: bool) -> None:
    """Give the finished file ``temp`` the name ``path``: replace with ``force``, else a hard link (which,
    unlike a rename, refuses to replace a file that appeared since the output was opened)."""
    if force:
        os.replace(temp, path)
        _forget(temp)
        return
    try:
        os.link(temp, path)
    except FileExistsError:
        raise already_exists(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINK:
            raise
        if os.path.lexists(path):
            raise already_exists(path) from None
        os.replace(temp, path)
        _forget(temp)
        return
    os.unlink(temp)
    _forget(temp)


class NamedFile:
    """A hidden temporary file beside the destination (mode 0600), registered so that a signal removes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.temp: str | None = None

    def create(self) -> int:
        temp = _temp_path(self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        with _LIVE_LOCK:
            fd = os.open(temp, flags, 0o600)
            _LIVE.add(temp)
        self.temp = temp
        return fd

    def place(self, stream: BinaryIO, *, force: bool) -> None:
        stream.close()
        self.move(force=force)

    def move(self, *, force: bool) -> None:
        """Rename the closed, finished file into place."""
        assert self.temp is not None
        _move_into_place(self.temp, self.path, force)
        self.temp = None

    def discard(self) -> None:
        temp, self.temp = self.temp, None
        if temp is not None:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            _forget(temp)


def _link_descriptor(fd: int, path: str) -> None:
    """Give the open unnamed file ``fd`` the name ``path`` (fails with FileExistsError if ``path`` exists)."""
    # linkat(proc, "N", ..., AT_SYMLINK_FOLLOW) (os.link without a dir_fd calls link(2), which does not follow)
    os.link(str(fd), path, src_dir_fd=_proc_fds(), follow_symlinks=True)


#: (process id, path) -> that process's /proc/self/fd folder, opened once (not once per file)
_PROC_DIR: dict[tuple[int, str], int] = {}


def _proc_fds() -> int:
    """This process's ``/proc/self/fd``, open. Kept per process id: a forked worker inherits its parent's,
    which lists the parent's descriptors. Where it cannot be opened, the OSError says why, each time."""
    key = (os.getpid(), _PROC_FD)
    fd = _PROC_DIR.get(key)
    if fd is None:
        fd = _PROC_DIR[key] = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd


class UnnamedFile:
    """An unnamed file (``O_TMPFILE``) in the destination's folder: it gets a name only when it is placed."""

    def __init__(self, path: str, replacing: bool) -> None:
        self.path = path
        self.replacing = replacing
        self.named: NamedFile | None = None  # the hidden name (or copy) it may get on the way

    @staticmethod
    def create(folder: str) -> int | None:
        """Readable too (for :meth:`_copy`); None where the kernel or file system has no unnamed files."""
        try:
            return os.open(folder, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in _NO_UNNAMED:
                return None
            raise

    def place(self, stream: BinaryIO, *, force: bool) -> None:
        keep = os.dup(stream.fileno())  # the file needs a descriptor to get a name, and dies with the last one
        try:
            stream.close()  # a late write error surfaces here, before the file has any name
            self._name(keep, force)
        finally:
            os.close(keep)
        if self.named is not None:
            self.named.move(force=force)

    def _name(self, fd: int, force: bool) -> None:
        """Link the file at the destination; to replace a file (``--force``) it gets a hidden name first, which
        is then renamed over the old file in one step: a SIGKILL in that instant leaves it under that name."""
        if not self.replacing:
            try:
                _link_descriptor(fd, self.path)
                return
            except FileExistsError:
                if not force:
                    raise already_exists(self.path) from None
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                self._copy(fd)
                return
        named = NamedFile(self.path)
        named.temp = _temp_path(self.path)
        try:
            with _LIVE_LOCK:
                _link_descriptor(fd, named.temp)
                _LIVE.add(named.temp)
            self.named = named
            return
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        self._copy(fd)

    def _copy(self, fd: int) -> None:
        """The link through /proc was refused: copy the data into a named temporary file. If that works, the
        folder takes files but not such links, so this process uses named files from now on; if it fails too,
        the destination itself is the problem and its error is reported."""
        self.named = NamedFile(self.path)
        out = self.named.create()
        try:
            size, offset = os.fstat(fd).st_size, 0
            while offset < size:
                sent = os.sendfile(out, fd, offset, size - offset)
                if not sent:
                    raise OSError(errno.EIO, "the temporary file ended early while copying it")
                offset += sent
            os.fchmod(out, os.fstat(fd).st_mode & 0o7777)
            set_mark(out, read_mark(fd))  # the run mark, if any, goes with the copy
            if self.replacing:
                os.fsync(out)
        finally:
            os.close(out)
        _UNNAMED["usable"] = False

    def discard(self) -> None:
        if self.named is not None:
            self.named.discard()


class TemporaryFileSink:
    """A regular-file destination, new or (``--force``) replaced: written to an :class:`UnnamedFile` where the
    file system has them, else to a :class:`NamedFile`, and put in place by :meth:`commit`."""

    def __init__(self, path: str, rules: SinkRules, *, replacing: bool, location: str | None = None) -> None:
        self.path = path  # where the file goes: the output, or the file a symlink output points to
        self.location = path if location is None else location  # as the user named it
        self.rules = rules
        self.replacing = replacing
        self._file: UnnamedFile | NamedFile | None = None
        self._stream: BinaryIO | None = None

    def open(self) -> BinaryIO:
        folder = os.path.dirname(self.path) or "."
        if self.rules.make_folders and os.path.abspath(folder) not in _MADE:
            _make_folders(folder)
        try:
            fd = UnnamedFile.create(folder) if _UNNAMED["usable"] else None
            if fd is not None:
                self._file = UnnamedFile(self.path, self.replacing)
            else:
                self._file = NamedFile(self.path)
                fd = self._file.create()
        except OSError as exc:
            if exc.errno == errno.ENOENT and not os.path.isdir(folder):
                exc = OSError(exc.errno, f"{exc.strerror} (the folder {folder!r} does not exist)")
            raise FileProblem("cannot write", exc, self.location) from None
        self._stream = open(fd, "wb", buffering=BUFFER)
        return self._stream

    def commit(self) -> None:
        """Flush, set the mode, sync when replacing a file, and put the file in place."""
        stream, file = self._stream, self._file
        assert stream is not None and file is not None
        try:
            stream.flush()
            fd = stream.fileno()
            os.fchmod(fd, self.rules.mode if self.rules.mode is not None else _NEW_FILE_MODE)
            set_mark(fd, self.rules.mark)  # before the file has its name: the name and the mark appear together
            if self.replacing:
                os.fsync(fd)  # a crash just after the rename must not leave an empty file where the old one was
            file.place(stream, force=self.rules.force)
            self._stream = self._file = None
        except OSError as exc:
            self.abort()
            if isinstance(exc, FileProblem):
                raise
            raise FileProblem("cannot write", exc, self.location) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        stream, self._stream = self._stream, None
        close_quietly(stream)
        file, self._file = self._file, None
        if file is not None:
            file.discard()
