"""The envelope command-line interface (typer), installed as ``envelope_cli``. Entry point:
:func:`envelope_cli.main.run` (console script ``envelope``).

Modules: ``app`` (commands and options), ``keys`` (key SPEC -> keyring), ``files`` (which input goes where,
atomic outputs), ``jobs`` (running the library over files, worker processes), ``streams`` (base64, input
meter), ``progress`` (rich, lazily), ``headers`` (header JSON), ``errors`` (exit codes, one place).
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
