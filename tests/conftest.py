"""Shared fixtures. AWS fixtures (moto_server) live in tests/aws_fixtures.py."""

from __future__ import annotations

import os

import pytest

import envelope

pytest_plugins: list[str] = ["aws_fixtures"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Write the .pyc files of the packages the tests' CLI processes import, once: with an editable install and
    PYTHONDONTWRITEBYTECODE set (as on the machines we test on) every ``envelope`` process would otherwise recompile
    them (~80 ms a run). Bytecode only: nothing a test asserts depends on it."""
    import compileall
    import contextlib
    from pathlib import Path

    import envelope_cli

    import testkit

    with contextlib.redirect_stdout(None):
        for package in (envelope, envelope_cli, testkit):
            compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


@pytest.fixture
def aes_keyring() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("envelope", "test-key", os.urandom(32))


@pytest.fixture
def fast_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """typer rebuilds the click command from the annotations on every CliRunner.invoke (about 45 ms here);
    build it once: the same app, the same error boundary (envelope_cli.app._Group), only faster."""
    import typer.main
    import typer.testing
    from envelope_cli.app import app

    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _: command)
