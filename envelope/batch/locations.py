"""Where data comes from and where it goes: one protocol for sources, one for sinks, and a registry of kinds.

A *location* is what the user typed as an INPUT or after ``-o``: ``-``, a path, and later ``s3://bucket/key``,
``ssm:/name``, ``secretsmanager:name``. :func:`kind_of` gives the first registered :class:`Kind` that claims
it; the local-file kind (``envelope.batch.files``) claims everything no other kind does, so it is registered
last. The job runner (``envelope.batch.jobs``) and the planner (``envelope.batch.planning``) only ever call this
module, so a new kind needs no change in either:

    source = open_source(location)        # a Source; size is known now, or after open(), or never (None)
    stream = source.open()                # a binary stream with readinto()
    sink = create_sink(location, rules)   # a Sink, not yet open
    out = sink.open()                     # a binary stream the library writes to
    ... the library encrypts or decrypts ...
    sink.commit()                         # only after the library returned: the output becomes visible
    # on any failure: sink.abort() (also when open() itself failed); always: source.close()

To add a kind (say ``s3://``), subclass :class:`Kind` and register an instance before the command runs
(``register`` puts it ahead of the local files)::

    class S3(Kind):
        name = "s3"
        def claims(self, location): return location.startswith("s3://")
        def source(self, location): return S3Source(location)      # size: the object's ContentLength
        def sink(self, location, rules): return S3Sink(location, rules)
        # commit() completes the multipart upload, abort() aborts it: nothing partial is ever visible
        def expand(self, location, walk): ...       # -r: (True, [Entry(location, relative, size), ...])
        def split(self, location): ...              # ("s3://b/dir", "name"); the default splits at "/"
        def join(self, folder, *parts): ...         # the default joins with "/"
        def plan_output(self, location): ...        # Planned(identity, overwrites, exists): one HEAD
        def holds(self, location): ...              # ("s3", bucket, key): what plan_output's overwrites says
    register(S3())

Planning (``envelope.batch.planning``) then refuses, for every kind alike and before any work, two outputs with
one identity, an output that overwrites what an input holds, and an existing output without ``--force``. Only
the methods a kind supports need writing: the defaults refuse to read or write and say nothing exists.

What a run tells the kinds besides each location (INPUTs hold messages or plaintext, ``--encode`` /
``--decode``, each kind's own options such as an S3 part size) is one picklable :class:`Settings`. It travels in
the run's description, and :func:`configure` applies it in the process that runs a task (the job runner calls it
before each task, so a worker process or a Dask worker sees what the main process saw); a kind reads it with
:func:`settings` and its own options with ``settings().option(self.name)``. The built-in kinds (stdin/stdout,
local files, ``s3://``, ``ssm:`` / ``secretsmanager:``) register themselves on the first :func:`kind_of`.

A location that cannot be read or written raises :class:`envelope.StorageError` (exit 4), a malformed one
:class:`envelope.UsageError` (exit 2). The runner wraps the streams: an ``OSError`` while reading or writing
is restated naming the location (``cannot write 'x': No space left on device``), and a source is held to its
``size``. Sources and sinks are made and opened in the process that runs the task (a worker process, later a
Dask worker), so they need not be picklable; the location strings, :class:`SinkRules` and the job description
are what travels.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, BinaryIO, NamedTuple, Protocol

from ..errors import UsageError

__all__ = ["BUILTIN_KINDS", "Entry", "FileProblem", "Kind", "OutputExists", "Planned", "Settings", "Sink",
           "SinkRules", "Source", "Walk", "configure", "create_sink", "kind_of", "open_source", "register",
           "settings"]


class OutputExists(UsageError):
    """An output exists and may not be replaced (no ``--force``): exit 2, as planning's own refusal."""


class FileProblem(OSError):
    """An OSError that says what was being done: ``cannot read input 'x': No such file or directory``.

    The location "-" is shown as stdin (reading) or stdout (writing) by the CLI's messages."""

    def __init__(self, action: str, exc: OSError, filename: str | None = None) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), filename if filename is not None else exc.filename)
        self.action = action


class Source(Protocol):
    """One input. ``open()`` returns a binary stream (``readinto``) at the start of the data and is called
    once; ``close()`` releases it and may be called more than once, also when ``open()`` failed.

    ``size`` is the number of bytes, when the source knows it (a regular file, an S3 object's ContentLength),
    at the latest once ``open()`` returned; None otherwise (a pipe). The runner holds the source to it: fewer
    or more bytes mean the input changed while being read, and the task fails (exit 4) before its output is
    committed. ``mode`` is the permission bits an encrypted output keeps (None: the default mode)."""

    location: str

    @property
    def size(self) -> int | None: ...

    @property
    def mode(self) -> int | None: ...

    def open(self) -> BinaryIO: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """One output. ``open()`` returns a binary stream the library writes whole batches to.

    ``commit()`` is called only after the library returned (every frame and the signature verified): it makes
    the output complete and visible, and on failure leaves it as it was before and raises. ``abort()`` is
    called on any failure, at any point after the sink was made (also when ``open()`` raised), possibly more
    than once: it discards what was written, so nothing is left at the location that was not there before.
    A destination that cannot take data back (stdout, a pipe) says so in its docstring."""

    location: str

    def open(self) -> BinaryIO: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class SinkRules(NamedTuple):
    """What a sink is told besides its location."""

    force: bool = False  # replace an existing output
    mode: int | None = None  # permission bits of a new file (None: the default for new files)
    make_folders: bool = False  # create missing folders on the way (several inputs or -r)
    refuse_terminal: str | None = None  # the usage error to raise when the output is a terminal
    expected_size: int | None = None  # the input's size when known: what the output will be about (S3 part sizes)
    mark: str | None = None  # a run id the output carries, where its kind can store one (Kind.mark_of)


class Settings(NamedTuple):
    """What a run tells every kind, besides the locations (see the module docstring). Picklable.

    ``reads_messages``: INPUTs hold ESDK messages (decrypt, inspect, exec), else plaintext (encrypt), and so
    outputs hold plaintext, else messages. ``base64_input`` / ``base64_output``: ``--decode`` / ``--encode``.
    ``force``: ``--force``. ``options``: (kind name, that kind's options) pairs; each kind defines and documents
    its own."""

    reads_messages: bool = False
    base64_input: bool = False
    base64_output: bool = False
    force: bool = False  # --force: existing outputs may be replaced (a kind may skip asking whether they exist)
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, kind: str, default: Any = None) -> Any:
        """The options given for the kind named ``kind`` (``default`` when none were)."""
        for name, value in self.options:
            if name == kind:
                return value
        return default


_SETTINGS: list[Settings] = [Settings()]


def configure(run_settings: Settings) -> None:
    """Make ``run_settings`` what every kind of this process sees (until the next call)."""
    _SETTINGS[0] = run_settings


def settings() -> Settings:
    """The settings of the run this process works for (:func:`configure`)."""
    return _SETTINGS[0]


def _ignore(location: str, why: str) -> None:
    pass


class Walk(NamedTuple):
    """How :meth:`Kind.expand` looks at an INPUT: ``recursive`` (-r), ``follow_symlinks`` (--follow-symlinks),
    and ``skipped(location, why)``, called for each entry -r leaves out (FIFOs, sockets, devices, dangling or
    outside links), so that nothing is skipped silently."""

    recursive: bool = False
    follow_symlinks: bool = False
    skipped: Callable[[str, str], None] = _ignore


class Planned(NamedTuple):
    """What planning learns about one output. ``identity``: where it goes (two outputs with the same identity
    collide). ``overwrites``: the data already there that it would replace, comparable with what inputs
    :meth:`Kind.holds` (local files: device and inode), or None. ``exists``: there is something to replace
    (refused without ``--force``)."""

    identity: Hashable
    overwrites: Hashable | None
    exists: bool


class Entry(NamedTuple):
    """One input found by :meth:`Kind.expand`: its location, its name relative to what the user named (with
    ``-r``: the path inside the folder; else the base name), and its size when known without opening it.
    ``holds``: what :meth:`Kind.holds` says of it, when the listing found that out anyway (a folder walk has
    each file's device and inode), so that planning does not ask again; None: not known, planning asks."""

    location: str
    relative: str
    size: int | None
    holds: Hashable | None = None


class Kind:
    """How one kind of location is read, written, listed and named. Every method has a default that refuses,
    so a read-only or write-only kind implements only what it supports."""

    name = "location"
    #: Frame-engine worker threads for a task that reads or writes this kind (the lowest of its two kinds
    #: counts); None: the library's choice (``envelope.stream_threads``).
    engine_threads: int | None = None

    def claims(self, location: str) -> bool:
        raise NotImplementedError

    def source(self, location: str) -> Source:
        from envelope import UsageError

        raise UsageError(f"{location!r}: a {self.name} location cannot be read")

    def sink(self, location: str, rules: SinkRules) -> Sink:
        from envelope import UsageError

        raise UsageError(f"{location!r}: a {self.name} location cannot be written")

    def expand(self, location: str, walk: Walk) -> tuple[bool, Sequence[Entry]]:
        """Planning: what an INPUT names. Returns (is a folder, entries): one entry for a single input; with
        ``walk.recursive``, the inputs inside a folder or prefix. Refuses missing inputs and folders without
        -r; reports what it leaves out through ``walk.skipped``."""
        return False, [Entry(location, self.split(location)[1], None)]

    def split(self, location: str) -> tuple[str, str]:
        """(folder, name): where default output names go beside the input, and the name they derive from."""
        folder, _, name = location.rpartition("/")
        return folder, name

    def join(self, folder: str, *parts: str) -> str:
        return "/".join(part for part in (folder.rstrip("/"), *parts) if part)

    def is_folder(self, location: str) -> bool:
        """``-o`` with one input: a folder (or prefix) to write into, rather than the output's own name."""
        return location.endswith("/")

    def check_folder(self, location: str) -> None:
        """``-o`` with several inputs or -r names a folder: refuse a location that cannot be one."""

    def plan_output(self, location: str) -> Planned:
        """Planning, before any work: refuse an output that cannot be written (a folder, say), and tell where it
        goes, what it would overwrite and whether it exists (see :class:`Planned`)."""
        return Planned((self.name, location), None, False)

    def plan_outputs(self, locations: Sequence[str]) -> Iterator[Planned]:
        """:meth:`plan_output` of each of ``locations`` (all of this kind), in order and lazily, so that a refusal
        comes where that output is in the plan. A kind may answer for many at once (local files: one listing of
        an empty output folder instead of one lookup per output)."""
        return (self.plan_output(location) for location in locations)

    def holds(self, location: str) -> Hashable | None:
        """Planning: what an input holds, in the terms of :attr:`Planned.overwrites` (a run refuses to write
        over any of its inputs); None when nothing could overwrite it (a pipe)."""
        return (self.name, location)

    def exists_error(self, location: str, exc: BaseException) -> bool:
        """``exc`` (from a task writing to ``location``) says that output exists and may not be replaced."""
        return isinstance(exc, OutputExists)

    def mark_of(self, location: str) -> str | None:
        """The run id an existing output carries (:attr:`SinkRules.mark`); None: none, or no output there."""
        return None


_KINDS: list[Kind] = []
#: Modules that register the built-in kinds when imported (``files`` registers the local files, last of all).
BUILTIN_KINDS = ("files", "s3_locations", "stored_locations")
_LOADED: list[bool] = []


def register(kind: Kind, *, last: bool = False) -> None:
    """Add a kind, checked before the ones registered earlier (``last``: after them, for a catch-all)."""
    if last:
        _KINDS.append(kind)
    else:
        _KINDS.insert(0, kind)


def kind_of(location: str) -> Kind:
    if not _LOADED:
        import importlib

        for module in BUILTIN_KINDS:  # each registers its kinds on import
            importlib.import_module(f"{__package__}.{module}")
        _LOADED.append(True)
    for kind in _KINDS:
        if kind.claims(location):
            return kind
    raise LookupError(f"no kind of location claims {location!r}")  # the local-file kind claims everything


def open_source(location: str) -> Source:
    return kind_of(location).source(location)


def create_sink(location: str, rules: SinkRules) -> Sink:
    return kind_of(location).sink(location, rules)
