"""The README's Python example runs as written (against a key file and a file it creates)."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import pytest

from envelope._keyrings.keyfile import generate_aes_key_file, write_key_file

README = Path(__file__).resolve().parents[2] / "README.md"


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
