"""``--help`` in the CLI's own words: arguments are listed by name and help only.

typer lists each argument with its Python type (``INPUT <list[str]>``); :class:`Command` leaves the type out.
Options keep typer's formatting (their metavars are set, so no type shows). Range checks are option callbacks
rather than typer's ``min=``, which would print ``[x>=1]`` after the help.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

__all__ = ["Command"]


class Command(TyperCommand):
    """A typer command whose help lists arguments without their type names."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                arguments.append((f"{name}..." if param.nargs != 1 else name, getattr(param, "help", "") or ""))
            elif param.param_type_name == "option":
                options.append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)
