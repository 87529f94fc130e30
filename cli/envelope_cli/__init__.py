"""The envelope command-line interface (typer), installed as ``envelope_cli``. Entry point:
:func:`envelope_cli.main.run` (console script ``envelope``).

Modules: ``app`` (commands and options), ``options`` (option values -> typed library values), ``keys`` (key
SPEC -> keyring), ``jobs`` (typed job descriptions, materials, the task runner), ``planning`` (which input goes
to which output, checked before any work), ``locations`` (the source / sink protocol and the registry of
location kinds), ``files`` (stdin / stdout, descriptors and local files: the built-in kinds), ``s3_locations``
(``s3://`` objects and prefixes), ``stored_locations`` (``ssm:`` / ``secretsmanager:``), ``ranges`` (``decrypt
--range``), ``tempfiles``
(atomic outputs through temporary files), ``folders`` (``-r`` over a local folder), ``keyfiles`` (where keygen
writes), ``workers`` (worker processes), ``streams`` (base64, input meter, output writer), ``progress`` (rich,
lazily), ``headers`` (header JSON), ``errors`` (exit codes and every stderr line, one place), ``boundary`` (the
error boundary), ``helptext`` (``--help`` without type names), ``speedups`` (typer start-up), ``signals``.
The CLI uses only the library's public API (``import envelope``).
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
