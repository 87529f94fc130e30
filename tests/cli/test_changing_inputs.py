"""Issue 12, "Inputs that change are refused": a file that shrinks or grows while it is encrypted fails with
exit 4 and one line ("changed while being read"), and leaves no output; decrypt of a changing input fails too.

The file is changed at a chosen point of the read, deterministically: the library's streaming call is wrapped
so that the input file is truncated or extended on disk after the CLI opened it and the library has read its
first bytes (the CLI's own open file, meter and checks are the real ones). Today a shrinking file gave exit 0
and a message of neither the old nor the new content; a growing one gave exit 2 ("declared plaintext length").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import key_file
from envelope_cli.app import app
from typer.testing import CliRunner

import envelope

pytestmark = pytest.mark.usefixtures("fast_cli")
runner = CliRunner()
SIZE = 6 * 1024 * 1024 + 77  # more than one 4 MiB batch: the change lands between reads


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    key_file(tmp_path)
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    return tmp_path


class ChangesAfterFirstRead:
    """Wraps the stream the library reads; runs ``change`` once, right after the first read returned."""

    def __init__(self, inner: Any, change: Callable[[], None]) -> None:
        self.inner = inner
        self.change: Callable[[], None] | None = change

    def readinto(self, buf: Any) -> int:
        n: int = self.inner.readinto(buf)
        if self.change is not None:
            change, self.change = self.change, None
            change()
        return n


def _wrap(monkeypatch: pytest.MonkeyPatch, name: str, change: Callable[[], None]) -> None:
    real = getattr(envelope, name)

    def call(source: Any, destination: Any, **kwargs: Any) -> Any:
        return real(ChangesAfterFirstRead(source, change), destination, **kwargs)

    monkeypatch.setattr(envelope, name, call)


def _truncate(path: Path, size: int) -> Callable[[], None]:
    return lambda: os.truncate(path, size)


def _append(path: Path, data: bytes) -> Callable[[], None]:
    def append() -> None:
        with open(path, "ab") as f:
            f.write(data)

    return append


@pytest.mark.parametrize("change, read", [("shrinks", "1048576"), ("grows", "more")])
def test_encrypt_refuses_an_input_that_changes(work: Path, monkeypatch: pytest.MonkeyPatch, change: str,
                                                read: str) -> None:
    big = work / "big.bin"
    _wrap(monkeypatch, "encrypt_stream", _truncate(big, 1024 * 1024) if change == "shrinks"
          else _append(big, b"x" * 5000))
    for extra in ([], ["-o", "out.enc"], ["-o", "-"]):
        big.write_bytes(os.urandom(SIZE))
        result = runner.invoke(app, ["encrypt", "big.bin", "-k", "k.key", *extra])
        lines = result.stderr.splitlines()
        assert result.exit_code == 4, (extra, result.stderr)
        assert lines == [f"envelope: error: cannot read input 'big.bin': it changed while being read (it had "
                         f"{SIZE} bytes when opened, {read} were read)"], lines
        assert sorted(p.name for p in work.iterdir()) == ["big.bin", "k.key"]  # no output, no temporary file


def test_encrypt_of_an_unchanged_input_still_works(work: Path) -> None:
    result = runner.invoke(app, ["encrypt", "big.bin", "-k", "k.key", "-o", "out.enc"])
    assert result.exit_code == 0, result.stderr
    keyring = envelope.load_keyring(work / "k.key")
    assert envelope.decrypt((work / "out.enc").read_bytes(), keyring=keyring).plaintext == (work / "big.bin"
                                                                                          ).read_bytes()


@pytest.mark.parametrize("change", ["rewritten in place", "shrinks"])
def test_decrypt_of_a_changing_input_fails_and_leaves_nothing(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                              change: str) -> None:
    keyring = envelope.load_keyring(work / "k.key")
    message = envelope.encrypt((work / "big.bin").read_bytes(), keyring=keyring, frame_length=64 * 1024)
    path = work / "m.enc"
    path.write_bytes(message)

    def rewrite() -> None:  # the same length: only authentication can tell
        with open(path, "r+b") as f:
            f.seek(len(message) - 1000)
            f.write(bytes(b ^ 0x55 for b in message[-1000:]))

    _wrap(monkeypatch, "decrypt_stream", rewrite if change == "rewritten in place" else _truncate(path, 3 << 20))
    (work / "existing.out").write_bytes(b"keep")
    result = runner.invoke(app, ["decrypt", "m.enc", "-k", "k.key", "-o", "existing.out", "--force"])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    if change == "rewritten in place":
        assert result.exit_code == 1 and "failed to authenticate" in lines[0]
    else:
        assert result.exit_code == 4 and "changed while being read" in lines[0]
    assert (work / "existing.out").read_bytes() == b"keep"
    assert sorted(p.name for p in work.iterdir()) == ["big.bin", "existing.out", "k.key", "m.enc"]
