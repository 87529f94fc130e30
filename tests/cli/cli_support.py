"""Helpers for the issue-12 CLI tests: real processes, an ordinary user, a private /dev.

- :func:`envelope` runs ``python -m envelope_cli.main`` as a real process (cwd: the test's folder).
- :func:`as_ordinary_user` runs it without root's powers when the tests run as root, because root reads and
  writes where an ordinary user cannot: ``setpriv`` clears every capability (bounding, inheritable and ambient
  sets), so the process keeps uid 0 but permission bits apply to it as to any user's process. (Switching to
  ``nobody`` instead fails wherever the checkout or its venv is private to root, as in a fresh clone under a
  0700 temporary folder.) As any other user the tests already are an ordinary user.
- :func:`in_private_dev` runs a shell command in private user and mount namespaces (``unshare -rm``) whose
  ``/dev`` is a fresh tmpfs holding only the standard links (``stdin``, ``stdout``, ``stderr``, ``fd``) and
  the usual devices bound from the real ``/dev``. A test of ``-o /dev/stdout`` runs there, so that even if the
  bug came back it could only replace the private link, never the machine's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "envelope_cli.main"]
KEY_FILE = ('{"type": "raw-aes", "namespace": "issue12", "name": "k", "key": '
            '"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}')

_PRIVATE_DEV = r"""
set -e
spare="$1"; shift
mount --make-rprivate / 2>/dev/null || true
for d in null zero urandom random full; do : > "$spare/$d"; mount --bind "/dev/$d" "$spare/$d"; done
mount -t tmpfs -o mode=755 envelope-private-dev /dev
for d in null zero urandom random full; do : > "/dev/$d"; mount --bind "$spare/$d" "/dev/$d"; done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
: > /dev/.private-dev
exec sh -c "$1"
"""


def key_file(folder: Path) -> Path:
    path = folder / "k.key"
    path.write_text(KEY_FILE)
    path.chmod(0o600)
    return path


def envelope(*args: str | Path, cwd: Path, input: bytes | None = None, user: bool = False,
             stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """``envelope ARGS`` in ``cwd``; ``user``: as an ordinary user; ``stdout``: a file object to write to."""
    prefix = as_ordinary_user(cwd) if user else []
    return subprocess.run([*prefix, *CLI, *map(str, args)], cwd=cwd, input=input, timeout=120,
                          stdout=stdout, stderr=subprocess.PIPE)  # type: ignore[call-overload]


def one_error(result: subprocess.CompletedProcess[bytes], code: int, *words: str) -> str:
    lines = result.stderr.decode(errors="replace").splitlines()
    assert result.returncode == code, (result.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("envelope: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def as_ordinary_user(folder: Path) -> list[str]:
    """The command prefix that runs a command as root without capabilities (see the module docstring), or
    nothing when the tests already run as an ordinary user. ``folder`` is where the command works."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running the tests as root needs setpriv (util-linux) to test as an ordinary user"
    return [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


def private_dev_works(spare: Path) -> bool:
    result = subprocess.run(["unshare", "-rm", "sh", "-c", _PRIVATE_DEV, "sh", str(spare), "test -e /dev/.private-dev"],
                            capture_output=True, timeout=30)
    return result.returncode == 0


def in_private_dev(command: str, *, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (sh) in private namespaces with a private /dev (see the module docstring). Fails the test
    rather than ever running it against the real /dev."""
    if shutil.which("unshare") is None:
        pytest.fail("needs unshare (util-linux) to run /dev tests in a private mount namespace")
    spare = cwd / ".spare-dev"
    spare.mkdir(exist_ok=True)
    guarded = f"test -e /dev/.private-dev || exit 99; {command}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", _PRIVATE_DEV, "sh", str(spare), guarded], cwd=cwd,
                            capture_output=True, timeout=120)
    assert result.returncode != 99, "the private /dev was not in place: nothing was run"
    shutil.rmtree(spare, ignore_errors=True)
    return result


def shell(*parts: str | Path) -> str:
    return " ".join(shlex.quote(str(part)) for part in parts)
