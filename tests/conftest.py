"""Shared fixtures. AWS fixtures (moto_server) live in tests/aws_fixtures.py."""

from __future__ import annotations

import os

import pytest

import envelope

pytest_plugins: list[str] = ["aws_fixtures"]


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
