"""The README's examples run as written: the quick start, the Python API example, and the test command is the
one ``.ci/run`` runs."""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from envelope._keyrings.keyfile import generate_aes_key_file, write_key_file

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q . && \\\n"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q"


def shell_blocks() -> list[str]:
    """The fenced shell blocks, in order (what ``../shared/tools/newcomer`` runs: the first two)."""
    text = README.read_text(encoding="utf-8")
    return [b for b in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S) if b.strip()]


def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    match = re.search(r"## Python API\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match, "README has no Python API example"
    monkeypatch.chdir(tmp_path)
    write_key_file("app.key", generate_aes_key_file(name="app"))
    original = os.urandom(3 * 1024 * 1024 + 5)
    Path("big.tar").write_bytes(original)
    script = tmp_path / "example.py"
    script.write_text(match.group(1), encoding="utf-8")
    namespace = runpy.run_path(str(script))
    assert Path("big.tar").read_bytes() == original  # encrypted, then decrypted back over the original
    assert namespace["header"].encryption_context == {"app": "web"}
    assert namespace["result"].plaintext == b"secret"


def test_quick_start_runs(tmp_path: Path) -> None:
    """The first block, after its install step, with this environment's ``envelope``: keygen, encrypt, inspect,
    decrypt, compare. (``newcomer`` runs it whole, install included, from a fresh clone.)"""
    first = shell_blocks()[0]
    assert first.startswith(INSTALL), "the quick start should begin by installing into .venv"
    assert first.count("\n") <= 12 and all(len(line) <= 120 for line in first.splitlines())  # readable
    envelope = f"{shlex.quote(sys.executable)} -m envelope_cli.main"
    script = first[len(INSTALL):].replace(".venv/bin/envelope", envelope)
    assert ".venv/bin/envelope" not in script
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("round trip OK")
    assert '"encryption_context"' in result.stdout  # inspect printed the header
    demo = tmp_path / "demo"
    assert (demo / "config.decrypted.txt").read_bytes() == (demo / "config.txt").read_bytes()
    assert (demo / "config.decrypted.txt").stat().st_mode & 0o777 == 0o600
    assert b"hunter2" not in (demo / "config.txt.encrypted").read_bytes()


def test_test_command_is_what_ci_runs() -> None:
    assert shell_blocks()[1].strip() == TEST_COMMAND
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    setup, tests = TEST_COMMAND.rsplit(" && ", 1)
    assert setup in ci and tests in ci, ".ci/run must run the README's test command"
