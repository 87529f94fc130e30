"""Every command and option is in ``--help`` and in README's command-line reference; exit codes are documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from envelope_cli.app import app
from envelope_cli.errors import ExitCode
from typer.testing import CliRunner

README = Path(__file__).resolve().parents[2] / "README.md"
#: Commands documented in docs/secrets.md (issue 14) until README's reference takes them in.
SECRETS_DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"
SECRETS_COMMANDS = ("encrypt-env", "exec")
COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)  # type: ignore[attr-defined]
runner = CliRunner()


def section(title: str, doc: Path = README) -> str:
    text = doc.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def options(name: str) -> list[str]:
    command = COMMAND.commands[name]  # type: ignore[attr-defined]
    found = []
    for param in command.params:
        if param.param_type_name == "option":
            found += [*param.opts, *param.secondary_opts]
    return found


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_the_commands_are_the_pinned_ones() -> None:
    assert COMMANDS == ["decrypt", "encrypt", "encrypt-env", "exec", "inspect", "keygen"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_in_help_and_readme(name: str) -> None:
    reference = section("Command-line reference", SECRETS_DOC if name in SECRETS_COMMANDS else README)
    text = help_text(name)
    assert f"### `envelope {name}`" in reference
    assert "Example" in text  # a short example in every command's help
    # whole option names only: "-o" must not be found inside "--output"
    missing_help = [opt for opt in options(name) if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text)]
    missing_readme = [opt for opt in options(name)
                      if not re.search(rf"`[^`]*(?<![\w-]){re.escape(opt)}(?![\w-])", reference)]
    assert missing_help == [] and missing_readme == []


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
    text = help_text()
    for item in [*COMMANDS, "--version", "--install-completion", "--show-completion"]:
        assert item in text
    flat = " ".join(text.split())
    assert "Exit codes: 0 success; 1 the message failed to authenticate or parse" in flat
    assert "2 usage error; 3 no key could open the data key; 4 I/O error" in flat
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in section("Command-line reference")


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
