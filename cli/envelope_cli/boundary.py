"""The error boundary: every command runs inside :class:`Group`, so every failure is one ``envelope: error:``
line and an exit code (``envelope_cli.errors`` says which), and temporary outputs are removed whatever happened.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from typer.core import TyperGroup

from .errors import Terminated, classify, print_error
from .speedups import Coerce

__all__ = ["Group", "report"]


class Group(TyperGroup):
    """Runs the commands with one error boundary: every failure is one ``envelope: error:`` line + exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        Coerce.install()
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except Terminated as exc:
            code = report(exc)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the one error boundary
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                code = 0
            else:
                code = report(exc)
        finally:
            tempfiles = sys.modules.get("envelope.batch.tempfiles")  # loaded by any command that writes outputs
            if tempfiles is not None:
                tempfiles.remove_temporary_files()
        code = int(code or 0)
        if standalone_mode:
            sys.exit(code)
        return code


def report(exc: BaseException) -> int:
    """Print the one line for ``exc``; return its exit code."""
    code, message = classify(exc)
    print_error(message)
    return code
