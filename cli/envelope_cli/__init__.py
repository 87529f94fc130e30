"""The envelope command-line interface (typer), installed as ``envelope_cli``. Entry point:
:func:`envelope_cli.main.run` (console script ``envelope``).

Modules: ``app`` (commands and options), ``options`` (option values -> typed library values), ``runner`` (runs
a plan through the library's task runner: progress, error lines, ``--metadata-output``), ``ranges`` (``decrypt
--range``), ``environment`` (``encrypt-env``, ``exec``), ``keyfiles`` (where keygen writes), ``progress`` (rich,
lazily), ``errors`` (exit codes and every stderr line, one place), ``boundary`` (the error boundary), ``helptext``
(``--help`` without type names), ``speedups`` (typer start-up), ``signals``, ``_reference`` (docs/cli-reference.md).
What a command does to its inputs is the library's ``envelope.batch`` (locations, planning, jobs, the task
runner and its executors), which ``envelope.batch.encrypt_many`` / ``decrypt_many`` run too. The CLI uses only
the library's public modules.
"""

from __future__ import annotations

__all__ = ["version"]


def version() -> str:
    """``envelope.__version__``, read without importing the library (which takes ~150 ms) when possible."""
    from importlib.util import find_spec

    spec = find_spec("envelope")
    if spec is not None and spec.origin:
        try:
            with open(spec.origin, encoding="utf-8") as source:
                for line in source:
                    if line.startswith("__version__ = "):
                        return line.split("=", 1)[1].strip().strip("\"'")
        except OSError:
            pass
    import envelope

    return envelope.__version__
