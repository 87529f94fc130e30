"""Planning: which input goes to which output, checked before any work.

INPUT arguments and ``-o`` become a :class:`Plan` of :class:`Task` pairs. What each INPUT names (one input, or
with ``-r`` the files of a folder) comes from its location kind's ``expand`` (``envelope.batch.locations``), and
output names are built with the output kind's ``split`` / ``join``, so a kind that lists remote prefixes
(``s3://bucket/dir/`` with ``-r``) plugs in without a change here. Output names follow :class:`Naming`.

Everything that can be refused is refused here, before any output exists (exit 2 unless said otherwise):
missing inputs (exit 4), folders without -r, an ``-o`` that must be a folder and is not, two inputs with one
output, an existing output without ``--force`` (with ``--skip-existing`` its task is left out instead, and
listed in :attr:`Plan.existing`: a resumed run does only what is missing), and any output that would write over
one of the run's own inputs, by any route (``-r --force``, two inputs that map to each other's names, a symlink
or hard link, ``--metadata-output`` naming an input or an output): compared by what is stored there (device and
inode for local files), not by spelling.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Literal, NamedTuple

from .locations import Kind, Walk, kind_of

__all__ = ["Naming", "Plan", "Task", "in_this_process", "plan_pairs", "plan_tasks"]

STDIO = "-"
STDOUT = ("fd", 1)  # the identity every kind gives standard output
DEFAULT_SUFFIX = ".encrypted"
DECRYPTED_SUFFIX = ".decrypted"


def _usage(message: str) -> Exception:
    from envelope import UsageError

    return UsageError(message)


class Task(NamedTuple):
    """One input and the output it goes to (locations as the user would write them)."""

    source: str
    destination: str
    size: int | None  # input bytes, when known while planning (for the progress bar)


class Plan(NamedTuple):
    tasks: list[Task]
    many: bool  # several inputs or -r: -o is a folder
    make_folders: bool  # output folders are created as needed (-o names a folder)
    to_stdout: bool  # an output is standard output ("-", /dev/stdout, ...)
    existing: tuple[Task, ...] = ()  # left out with skip_existing: their outputs exist

    @property
    def reads_stdin(self) -> bool:
        return any(_reads_stdin(task.source) for task in self.tasks)


class Naming(NamedTuple):
    """Default output names: encrypt NAME + SUF (default .encrypted); decrypt NAME without SUF when it ends
    with it (default .encrypted), else NAME.decrypted; rewrap NAME (in another folder: ``-o`` is required)."""

    mode: Literal["encrypt", "decrypt", "rewrap"]
    suffix: str | None = None

    def output_name(self, name: str) -> str:
        if self.mode == "rewrap":
            return name
        suf = DEFAULT_SUFFIX if self.suffix is None else self.suffix
        if self.mode == "encrypt":
            if not suf:
                raise _usage("--suffix must not be empty when encrypting")
            return name + suf
        if suf and name.endswith(suf) and len(name) > len(suf):
            return name[:-len(suf)]
        return name + DECRYPTED_SUFFIX


def _descriptor(location: str) -> int | None:
    """The descriptor a local path names (``/dev/stdin`` 0, ``/dev/fd/3`` 3), else None."""
    from .files import descriptor_of

    return 0 if location == STDIO else descriptor_of(location)


def in_this_process(location: str) -> bool:
    """``location`` can only be opened by this process: stdin / stdout (``-``) or another descriptor of it
    (``/dev/fd/3``), not by a worker elsewhere (``--dask``)."""
    return location == STDIO or _descriptor(location) is not None


def _reads_stdin(location: str) -> bool:
    return _descriptor(location) == 0


def plan_tasks(inputs: list[str], output: str | None, *, naming: Naming, walk: Walk, force: bool,
               metadata_output: str | None = None, key_files: tuple[str, ...] = (), skip_existing: bool = False
               ) -> Plan:
    """Turn INPUT arguments and ``-o`` into tasks, checking everything the module docstring lists.
    ``key_files`` are read by the run too: no output may overwrite them either."""
    if skip_existing and force:
        raise _usage("--skip-existing leaves existing outputs alone and --force replaces them: give one of them")
    inputs = inputs or [STDIO]
    if len(inputs) > 1 and any(_reads_stdin(item) for item in inputs):
        raise _usage("'-' (stdin) cannot be combined with other inputs")
    many = len(inputs) > 1 or walk.recursive
    into_folder = many or (output is not None and output != STDIO and kind_of(output).is_folder(output))
    tasks: list[Task] = []
    held: dict[str, Hashable] = {}  # what the inputs hold, where their listing said (a folder walk)
    if len(inputs) == 1 and _reads_stdin(inputs[0]):
        if walk.recursive:
            raise _usage("-r needs folder inputs, not stdin")
        if into_folder:
            raise _usage(f"-o {output!r} is a folder; with stdin as the input, -o names the output file")
        _, [entry] = kind_of(STDIO).expand(STDIO, walk)
        tasks.append(Task(inputs[0], output or STDIO, entry.size))
    else:
        if many and output is not None:
            if output == STDIO:
                raise _usage("with several inputs or -r, -o names a folder; it cannot be '-' (stdout)")
            kind_of(output).check_folder(output)
        for item in inputs:
            kind = kind_of(item)
            folder_input, entries = kind.expand(item, walk)
            if folder_input:
                base = output if output is not None else item
                out = kind_of(base)
                for entry in entries:
                    folder, name = kind.split(entry.relative)
                    tasks.append(Task(entry.location, out.join(base, folder, naming.output_name(name)), entry.size))
                    if entry.holds is not None:
                        held[entry.location] = entry.holds
                continue
            [entry] = entries
            if output is None and _descriptor(item) is not None:
                tasks.append(Task(item, STDIO, entry.size))  # /dev/fd/N has no name to put beside: stdout
            elif output is None or into_folder:
                base = output if output is not None else kind.split(item)[0]
                tasks.append(Task(item, kind_of(base).join(base, naming.output_name(entry.relative)), entry.size))
            else:
                tasks.append(Task(item, output, entry.size))
    to_stdout, existing = _check_outputs(tasks, force, metadata_output, key_files, skip_existing, held)
    return _plan(tasks, many, into_folder, to_stdout, existing)


def _plan(tasks: list[Task], many: bool, make_folders: bool, to_stdout: bool, existing: set[Task]) -> Plan:
    """The plan of ``tasks`` without those in ``existing``, which it lists (both in plan order)."""
    return Plan([task for task in tasks if task not in existing], many, make_folders, to_stdout,
                tuple(task for task in tasks if task in existing))


def plan_pairs(pairs: list[tuple[str, str]], *, force: bool, key_files: tuple[str, ...] = (),
               skip_existing: bool = False) -> Plan:
    """(input, output) pairs named one by one (``envelope.batch.encrypt_many``), checked as :func:`plan_tasks`
    checks its own; folders on the way to an output are created. Standard input and output are refused."""
    if skip_existing and force:
        raise _usage("skip_existing leaves existing outputs alone and force replaces them: give one of them")
    tasks: list[Task] = []
    for source, destination in pairs:
        if in_this_process(source) or in_this_process(destination):
            raise _usage(f"({source!r}, {destination!r}): pairs name files or objects, not standard input or "
                         "output or another descriptor")
        _, [entry] = kind_of(source).expand(source, Walk())
        tasks.append(Task(source, destination, entry.size))
    to_stdout, existing = _check_outputs(tasks, force, None, key_files, skip_existing)
    return _plan(tasks, True, True, to_stdout, existing)


def _check_outputs(tasks: list[Task], force: bool, metadata_output: str | None, key_files: tuple[str, ...],
                   skip_existing: bool = False, known: dict[str, Hashable] | None = None) -> tuple[bool, set[Task]]:
    """Refuse outputs that collide, overwrite an input or exist (without ``force``). Returns whether one is
    stdout, and (with ``skip_existing``) the tasks whose outputs exist, which are left out, unchecked.
    ``known``: what some inputs hold, from their listing (``Entry.holds``); the others' kinds are asked."""
    known = known or {}
    held: dict[Hashable, str] = {}  # what the inputs hold -> the first input that holds it, as messages name it
    for path in key_files:
        key = kind_of(path).holds(path)
        if key is not None:
            held.setdefault(key, f"the key file {path!r}")
    for task in tasks:
        key = known.get(task.source)
        if key is None:
            key = kind_of(task.source).holds(task.source)
        if key is not None:
            held.setdefault(key, f"the input {task.source!r}")
    seen: dict[Hashable, Task] = {}
    existing: set[Task] = set()
    kinds = [kind_of(task.destination) for task in tasks]
    destinations: dict[Kind, list[str]] = {}
    for task, kind in zip(tasks, kinds, strict=True):
        destinations.setdefault(kind, []).append(task.destination)
    answers = {kind: kind.plan_outputs(locations) for kind, locations in destinations.items()}
    for task, kind in zip(tasks, kinds, strict=True):
        planned = next(answers[kind])
        if planned.exists and skip_existing:
            existing.add(task)  # nothing is written there: it can neither collide nor overwrite
            continue
        for key in planned[:2]:
            if key is None:
                continue
            victim = held.get(key)
            if victim is not None:
                if victim == f"the input {task.source!r}":
                    raise _usage(f"input {task.source!r} would be overwritten by its own output")
                raise _usage(f"the output {task.destination!r} of input {task.source!r} would overwrite {victim}")
            if key in seen and seen[key] is not task:
                raise _usage(f"inputs {seen[key].source!r} and {task.source!r} would both be written to "
                             f"{task.destination!r}")
            seen[key] = task
        if planned.exists and not force:
            raise _usage(f"output {task.destination!r} already exists (add --force to replace it)")
    if metadata_output is not None and metadata_output != STDIO:
        planned = kind_of(metadata_output).plan_output(metadata_output)
        if planned.overwrites is not None and planned.overwrites in held:
            raise _usage(f"--metadata-output {metadata_output!r} is {held[planned.overwrites]}")
        for key in planned[:2]:
            if key is not None and key in seen:
                raise _usage(f"--metadata-output {metadata_output!r} is the output {seen[key].destination!r} of "
                             f"input {seen[key].source!r}")
    return STDOUT in seen, existing
