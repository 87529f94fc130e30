"""The envelope command-line interface (typer)."""
