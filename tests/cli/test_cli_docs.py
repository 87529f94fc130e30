"""The CLI's documentation cannot drift from the CLI.

- ``docs/cli-reference.md`` is generated from the typer app (``envelope_cli._reference``): the file must equal
  ``render()``, and each of its blocks must be exactly what ``envelope ... --help`` prints, through typer's test
  runner and through the console script's own entry point.
- Every command has an example in ``--help``; every option is in ``--help`` (hence in the reference) and has a
  help text; the pinned option names exist.
- The README documents every exit code and the pinned key-file shapes.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from envelope_cli._reference import PATH, WIDTH, command_paths, help_text, render
from envelope_cli.app import app
from envelope_cli.errors import ExitCode
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
REFERENCE = ROOT / PATH
COMMAND: Any = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)
REGENERATE = "python -m envelope_cli._reference --write"
runner = CliRunner()


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def options(name: str) -> list[str]:
    command = COMMAND.commands[name]
    found = []
    for param in command.params:
        if param.param_type_name == "option":
            found += [*param.opts, *param.secondary_opts]
    return found


def help_output(*args: str, flag: str = "--help") -> str:
    """``envelope ARGS --help`` through typer's runner, at the reference's width (click's runner would otherwise
    force 80 columns of text, where a real terminal of 80 columns gets 78)."""
    result = runner.invoke(app, [*args, flag], terminal_width=WIDTH)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def reference_block(*path: str) -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    title = " ".join(("envelope", *path))
    match = re.search(rf"^## {re.escape(title)}\n\n```text\n(.*?)```\n", text, re.S | re.M)
    assert match, f"{PATH} has no '## {title}' block; regenerate it: {REGENERATE}"
    return match.group(1)


def test_the_commands_are_the_pinned_ones() -> None:
    assert COMMANDS == ["decrypt", "encrypt", "inspect", "keygen"]


def test_reference_file_is_the_rendered_reference() -> None:
    written, rendered = REFERENCE.read_text(encoding="utf-8"), render()
    diff = "".join(list(difflib.unified_diff(written.splitlines(True), rendered.splitlines(True),
                                             str(PATH), "render()"))[:40])
    assert written == rendered, f"{PATH} is out of date; from the project root run: {REGENERATE}\n{diff}"


def test_reference_covers_every_command() -> None:
    assert sorted(path[0] for path in command_paths() if path) == COMMANDS
    assert command_paths()[0] == ()


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("envelope", *p)))
def test_reference_is_the_help_text(path: tuple[str, ...]) -> None:
    """Each block is what ``--help`` (and ``-h``) prints, word for word, not just the same option names."""
    block = reference_block(*path)
    assert block == help_output(*path), f"{PATH} differs from --help; run: {REGENERATE}"
    assert block == help_output(*path, flag="-h")
    assert block == help_text(*path)


def test_console_script_prints_the_reference() -> None:
    """The console script builds only the command named on the command line (``app.run``): in a terminal of 80
    columns its ``--help`` is the same text, so the reference is what users see."""
    env = {**os.environ, "COLUMNS": "80"}
    for path in command_paths():
        result = subprocess.run([sys.executable, "-m", "envelope_cli.main", *path, "--help"], capture_output=True,
                                text=True, env=env, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout == reference_block(*path), path


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_in_help_and_reference(name: str) -> None:
    text = help_output(name)
    reference = reference_block(name)
    assert "Example" in text  # a short example in every command's help
    # whole option names only: "-o" must not be found inside "--output"
    missing_help = [opt for opt in options(name) if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text)]
    missing_reference = [opt for opt in options(name)
                         if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", reference)]
    assert missing_help == [] and missing_reference == []


@pytest.mark.parametrize("name", COMMANDS)
def test_every_parameter_has_help(name: str) -> None:
    """The reference is only as good as the help texts it is made of."""
    undocumented = [param.name for param in COMMAND.commands[name].params
                    if not (getattr(param, "help", None) or "").strip() and param.name != "help"]
    assert undocumented == []


def test_pinned_option_names() -> None:
    pinned = {
        "keygen": "-o --namespace --name --bits --rsa --force",
        "encrypt": "-o --key -c --algorithm --frame-size --commitment-policy --encode -r --suffix --force "
                   "--metadata-output --progress --no-progress --workers --max-encrypted-data-keys",
        "decrypt": "-o --key --discovery -c --decode --commitment-policy --unsigned-only --max-encrypted-data-keys "
                   "-r --suffix --force --metadata-output --progress --no-progress --workers",
        "inspect": "--decode",
    }
    for name, names in pinned.items():
        assert set(names.split()) <= set(options(name)), name


def test_top_level_help_lists_commands_options_and_exit_codes() -> None:
    text = help_output()
    for item in [*COMMANDS, "--version", "--install-completion", "--show-completion"]:
        assert item in text
    flat = " ".join(text.split())
    assert "Exit codes: 0 success; 1 the message failed to authenticate or parse" in flat
    assert "2 usage error; 3 no key could open the data key; 4 I/O error" in flat
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in reference_block()


# ---------------------------------------------------------------------------------------------------------
# README sections the CLI points to


def test_exit_codes_are_documented() -> None:
    table = section("Exit codes")
    for code in (ExitCode.OK, ExitCode.MESSAGE, ExitCode.USAGE, ExitCode.KEY, ExitCode.IO, ExitCode.INTERNAL):
        assert re.search(rf"^\| {int(code)} \|", table, re.M), code
    assert "130, 143, 129" in table


def test_key_files_section_shows_the_pinned_shapes() -> None:
    text = section("Key files")
    assert '{"type": "raw-aes", "namespace": "envelope", "name": "app", "key": ' in text
    assert '"type": "raw-rsa"' in text and '"padding": "oaep-sha256"' in text and "public_key" in text
    for padding in ("pkcs1", "oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512"):
        assert f"`{padding}`" in text
