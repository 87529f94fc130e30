"""Planning: which input goes to which output, checked before any work.

INPUT arguments and ``-o`` become a :class:`Plan` of :class:`Task` pairs. What each INPUT names (one input, or
with ``-r`` the files of a folder) comes from its location kind's ``expand`` (``envelope_cli.locations``), and
output names are built with the output kind's ``split`` / ``join``, so a kind that lists remote prefixes
(``s3://bucket/dir/`` with ``-r``) plugs in without a change here. Output names follow :class:`Naming`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from .locations import kind_of

__all__ = ["Naming", "Plan", "Task", "plan_tasks"]

STDIO = "-"
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

    @property
    def to_stdout(self) -> bool:
        return any(task.destination == STDIO for task in self.tasks)


class Naming(NamedTuple):
    """Default output names: encrypt NAME + SUF (default .encrypted); decrypt NAME without SUF when it ends
    with it (default .encrypted), else NAME.decrypted."""

    mode: Literal["encrypt", "decrypt"]
    suffix: str | None = None

    def output_name(self, name: str) -> str:
        suf = DEFAULT_SUFFIX if self.suffix is None else self.suffix
        if self.mode == "encrypt":
            if not suf:
                raise _usage("--suffix must not be empty when encrypting")
            return name + suf
        if suf and name.endswith(suf) and len(name) > len(suf):
            return name[:-len(suf)]
        return name + DECRYPTED_SUFFIX


def plan_tasks(inputs: list[str], output: str | None, *, naming: Naming, recursive: bool, force: bool) -> Plan:
    """Turn INPUT arguments and ``-o`` into tasks, checking everything that can be checked before any work:
    missing inputs, folders without -r, -o that is a folder (or is not), existing destinations without
    --force, two inputs with the same destination."""
    inputs = inputs or [STDIO]
    if STDIO in inputs and len(inputs) > 1:
        raise _usage("'-' (stdin) cannot be combined with other inputs")
    many = len(inputs) > 1 or recursive
    tasks: list[Task] = []
    if inputs == [STDIO]:
        if recursive:
            raise _usage("-r needs folder inputs, not stdin")
        _, [entry] = kind_of(STDIO).expand(STDIO, False)
        tasks.append(Task(STDIO, output or STDIO, entry.size))
    else:
        if many and output is not None:
            if output == STDIO:
                raise _usage("with several inputs or -r, -o names a folder; it cannot be '-' (stdout)")
            kind_of(output).check_folder(output)
        for item in inputs:
            kind = kind_of(item)
            folder_input, entries = kind.expand(item, recursive)
            if folder_input:
                base = output if output is not None else item
                out = kind_of(base)
                for entry in entries:
                    folder, name = kind.split(entry.relative)
                    tasks.append(Task(entry.location, out.join(base, folder, naming.output_name(name)), entry.size))
                continue
            [entry] = entries
            if output is None or many:
                base = output if output is not None else kind.split(item)[0]
                tasks.append(Task(item, kind_of(base).join(base, naming.output_name(entry.relative)), entry.size))
            else:
                tasks.append(Task(item, output, entry.size))
    _check_destinations(tasks, force)
    return Plan(tasks, many)


def _check_destinations(tasks: list[Task], force: bool) -> None:
    seen: dict[object, str] = {}
    for task in tasks:
        if task.destination == STDIO:
            continue
        kind = kind_of(task.destination)
        key = kind.identity(task.destination)
        if key in seen:
            raise _usage(f"inputs {seen[key]!r} and {task.source!r} would both be written to {task.destination!r}")
        seen[key] = task.source
        kind.check_output(task.destination, force=force, source=task.source)
