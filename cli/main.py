"""Placeholder until the CLI issue lands."""

import typer

app = typer.Typer(pretty_exceptions_show_locals=False)


def run() -> None:
    app()
