"""The CLI reference, ``docs/cli-reference.md``: every command's full ``--help`` text, rendered from the typer app.

    python -m envelope_cli._reference --write     # regenerate docs/cli-reference.md (from the project root)
    python -m envelope_cli._reference             # print it

The page is generated, never edited by hand, so it cannot drift from the CLI (as sqlite-utils does with cog):
``tests/cli/test_cli_docs.py`` checks that the file equals :func:`render` and that each block in it is what
``envelope ... --help`` prints. Help is rendered at click's width for a terminal of 80 columns or more, so the
page does not depend on the terminal it was made in.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from .app import app

__all__ = ["PATH", "WIDTH", "command_paths", "help_text", "render"]

#: Where ``--write`` puts the page, relative to the project root.
PATH = Path("docs") / "cli-reference.md"
#: click's help width in any terminal of 80 columns or more (it caps the text at 80 and keeps a margin of 2).
WIDTH = 78

_INTRO = """\
# `envelope` command-line reference

<!-- Generated from the typer app by `python -m envelope_cli._reference --write`: do not edit by hand.
     tests/cli/test_cli_docs.py checks that this page is what `envelope ... --help` prints. -->

The full `--help` text of every command, as `envelope COMMAND --help` (or `-h`) prints it. What the options mean
in practice (key specs, output names, what is never lost, metadata lines, progress) is in [cli.md](cli.md);
examples are in the [README](../README.md#command-line); AWS KMS keys in [kms.md](kms.md), the data-key cache
in [cache.md](cache.md), exit codes in the [README](../README.md#exit-codes).
"""


def _root() -> TyperGroup:
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


def command_paths() -> list[tuple[str, ...]]:
    """``()`` for ``envelope`` itself, then ``(name,)`` for each command in the order ``--help`` lists them, each
    followed by its own subcommands if it has any (``(group, name)``, ...)."""
    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...], ctx: typer.Context | None) -> None:
        paths.append(path)
        if isinstance(command, TyperGroup):
            here = _context(command, path[-1] if path else "envelope", ctx)
            for name in command.list_commands(here):
                walk(command.get_command(here, name), (*path, name), here)

    walk(_root(), (), None)
    return paths


def help_text(*path: str) -> str:
    """What ``envelope PATH... --help`` prints (``help_text()`` for ``envelope --help``), ending in a newline."""
    command: Any = _root()
    ctx = _context(command, "envelope", None)
    for name in path:
        sub = command.get_command(ctx, name) if isinstance(command, TyperGroup) else None
        if sub is None:
            raise KeyError(f"envelope has no command {' '.join(path)!r}")
        command, ctx = sub, _context(sub, name, ctx)
    return str(command.get_help(ctx)) + "\n"


def _context(command: Any, name: str, parent: typer.Context | None) -> typer.Context:
    """The context click makes for ``command`` on a real command line (its ``context_settings`` applied, so
    ``-h`` shows as it does), at the fixed :data:`WIDTH`."""
    settings = {**command.context_settings, "terminal_width": WIDTH}
    return typer.Context(command, info_name=name, parent=parent, **settings)


def _anchor(title: str) -> str:
    return title.replace(" ", "-")


def render() -> str:
    """The whole page: a short introduction, a list of the commands, then each command's ``--help`` text."""
    paths = command_paths()
    titles = [" ".join(("envelope", *path)) for path in paths]
    parts = [_INTRO, "\n".join(f"- [`{title}`](#{_anchor(title)})" for title in titles) + "\n"]
    parts += [f"## {title}\n\n```text\n{help_text(*path)}```\n" for title, path in zip(titles, paths, strict=True)]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        if not PATH.parent.is_dir():
            sys.stderr.write(f"envelope_cli._reference: no {PATH.parent}/ folder here: run this from the project "
                             "root\n")
            return 2
        PATH.write_text(render(), encoding="utf-8")
        sys.stderr.write(f"envelope_cli._reference: wrote {PATH}\n")
        return 0
    if argv:
        sys.stderr.write("usage: python -m envelope_cli._reference [--write]\n")
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
