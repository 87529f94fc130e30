"""The CLI's documentation cannot drift from the CLI.

- ``docs/cli-reference.md`` is generated from the typer app (``envelope_cli._reference``): the file must equal
  ``render()``, and each of its blocks must be exactly what ``envelope ... --help`` prints, through typer's test
  runner and through the console script's own entry point.
- Every command has an example in ``--help``; every option is in ``--help`` (hence in the reference) and has a
  help text; the pinned option names exist.
- Every ``envelope ...`` command line in the README's and docs' shell blocks parses with the real CLI, so an
  example cannot use an option that does not exist (or no longer exists).
- The README documents every exit code and the pinned key-file shapes.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
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


def section(title: str, doc: Path = README) -> str:
    text = doc.read_text(encoding="utf-8")
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
    assert COMMANDS == ["decrypt", "encrypt", "encrypt-env", "exec", "inspect", "keygen", "rewrap"]


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
                   "--metadata-output --progress --no-progress --workers --max-encrypted-data-keys "
                   "--required-context-key -i --input --encryption-context --frame-length",
        "decrypt": "-o --key --discovery -c --decode --commitment-policy --unsigned-only --max-encrypted-data-keys "
                   "-r --suffix --force --metadata-output --progress --no-progress --workers -i --input "
                   "--encryption-context",
        "inspect": "--decode",
        "rewrap": "-o --key --old-key --discovery -c --verify --no-verify --commitment-policy -r --force "
                  "--metadata-output --workers",
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
# command lines in the README and docs/

DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "(", ")"}


def _shell_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M)


def _envelope_calls(block: str) -> list[list[str]]:
    """The argument lists of every ``envelope`` (or ``.venv/bin/envelope``) call in a shell block, also inside
    quoted commands (``ssh host 'envelope decrypt ...'``)."""
    lexer = shlex.shlex(block.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words, calls = list(lexer), []
    for i, word in enumerate(words):
        if " " in word and "envelope " in word:
            calls += _envelope_calls(word)
        elif os.path.basename(word) == "envelope" and (i == 0 or words[i - 1] in _SHELL_OPERATORS
                                                        or "=" in words[i - 1] or words[i - 1] == "\n"):
            args = []
            for arg in words[i + 1:]:
                if arg in _SHELL_OPERATORS:
                    break
                args.append(arg)
            calls.append(args)
    return calls


def _documented_calls() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        if path == REFERENCE:
            continue
        for block in _shell_blocks(path):
            for line in block.replace("\\\n", " ").splitlines():
                found += [(f"{path.relative_to(ROOT)}: {line.strip()}", args) for args in _envelope_calls(line)]
    return found


def test_docs_have_command_lines_to_check() -> None:
    where = {line.split(":")[0] for line, _ in _documented_calls()}
    assert {"README.md", "docs/cli.md", "docs/kms.md", "docs/cache.md", "docs/from-esdk-cli.md",
            "docs/rewrap.md"} <= where


@pytest.mark.parametrize("line, args", _documented_calls(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_lines_parse(line: str, args: list[str]) -> None:
    """Parsing checks the command, every option name and the option values' types, without running anything."""
    assert args, line
    if args[0].startswith("-"):
        assert set(args) <= {"--version", "--help", "-h", "--install-completion", "--show-completion"}, line
        return
    ctx = COMMAND.make_context("envelope", [args[0]], resilient_parsing=True)
    command = COMMAND.get_command(ctx, args[0])
    assert command is not None, f"{line}: no command {args[0]!r}"
    try:
        command.make_context(args[0], args[1:], parent=ctx)
    except Exception as exc:  # noqa: BLE001 - click's usage errors (an unknown option, a bad value), any kind
        pytest.fail(f"{line}: {type(exc).__name__}: {getattr(exc, 'message', exc)}")


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
