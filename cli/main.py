"""Console-script entry point (``envelope = cli.main:run``); also ``python -m cli.main``.

Start-up matters (scripts and CI jobs run ``envelope`` many times): ``envelope --version`` answers before typer
is imported, typer is imported only to parse a real command line, and the library, rich and boto3 only by the
commands that need them.
"""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    if sys.argv[1:] == ["--version"]:
        from . import version

        sys.stdout.write(f"envelope {version()}\n")
        return
    from . import signals

    signals.install()  # before any thread starts: see cli/signals.py
    from .app import app

    app(prog_name="envelope")


if __name__ == "__main__":
    run()
