"""In-process CLI runs (typer's CliRunner) for the tests of remote locations, rewrap and the ESDK CLI's
spellings: run a command, require success, or require one error line with an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envelope_cli.app import app
from typer.testing import CliRunner

__all__ = ["ok", "one_error_line", "run"]

runner = CliRunner()


def run(*args: str | Path, input: bytes | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input)


def ok(*args: str | Path, input: bytes | None = None) -> Any:
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return result


def one_error_line(result: Any, code: int, *words: str) -> str:
    """Exit ``code`` and exactly one ``envelope: error:`` line on stderr, holding every one of ``words``."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, lines)
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return str(lines[0])
