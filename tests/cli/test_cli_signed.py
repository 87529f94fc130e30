"""Signed suites through the CLI as real processes (issue 16): messages of several batches, so that the frame
engine runs its threads and the signature's SHA-384 runs on its own thread, and the process ends with
``envelope_cli.main._exit_now`` (no interpreter teardown).

The ESDK for Python is the oracle: it must verify the signature of what the CLI wrote (so the hash saw every
byte once, in order), and the CLI must verify what the ESDK wrote. A message whose signature was changed is
refused with exit 1 and one error line, leaves no output file and no temporary file, and never releases the
final frame's plaintext, also through a pipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import envelope, key_file, one_error
from helpers import esdk_aes_key, esdk_decrypt, esdk_encrypt

from envelope._stream import BATCH_BYTES
from testkit.messages import flip

SUITE = 0x0578
FRAME = 1024 * 1024
SIZE = 2 * BATCH_BYTES + FRAME + 12345  # two full batches, then a batch that ends in the final frame


@pytest.fixture
def plaintext() -> bytes:
    return bytes((i * 131 + 7) % 256 for i in range(SIZE))


def _esdk_key() -> object:
    return esdk_aes_key("issue12", "k", bytes(range(32)))  # the key of cli_support.KEY_FILE


def test_what_the_cli_signs_the_esdk_verifies_and_back(tmp_path: Path, plaintext: bytes) -> None:
    key = key_file(tmp_path)
    (tmp_path / "plain").write_bytes(plaintext)
    done = envelope("encrypt", "plain", "-o", "msg", "--key", f"file:{key}", "--algorithm", f"0x{SUITE:04x}",
                    "--frame-size", str(FRAME), "-c", "purpose=test", cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    message = (tmp_path / "msg").read_bytes()
    assert message[1:3] == SUITE.to_bytes(2, "big")
    verified, context = esdk_decrypt(message, _esdk_key())
    assert verified == plaintext and context["purpose"] == "test" and "aws-crypto-public-key" in context

    theirs = esdk_encrypt(plaintext, _esdk_key(), SUITE, context={"purpose": "test"}, frame_length=FRAME)
    (tmp_path / "theirs").write_bytes(theirs)
    done = envelope("decrypt", "theirs", "-o", "back", "--key", f"file:{key}", cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert (tmp_path / "back").read_bytes() == plaintext
    piped = envelope("decrypt", "-", "--key", f"file:{key}", cwd=tmp_path, input=theirs)  # stdout: flushed
    assert piped.returncode == 0 and piped.stdout == plaintext


@pytest.mark.parametrize("where", ["signature", "signature length"])
def test_a_changed_signature_is_refused_and_releases_no_final_frame(tmp_path: Path, plaintext: bytes,
                                                                    where: str) -> None:
    key = key_file(tmp_path)
    message = esdk_encrypt(plaintext, _esdk_key(), SUITE, context={}, frame_length=FRAME)
    at = len(message) - 5 if where == "signature" else len(message) - 104  # the footer: u16 length, 103 bytes
    assert int.from_bytes(message[-105:-103], "big") == 103
    (tmp_path / "bad").write_bytes(flip(message, at))
    result = envelope("decrypt", "bad", "-o", "out", "--key", f"file:{key}", cwd=tmp_path)
    one_error(result, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "k.key"]  # no output, no temporary file
    piped = envelope("decrypt", "-", "--key", f"file:{key}", cwd=tmp_path, input=flip(message, at))
    one_error(piped, 1)
    final = SIZE % FRAME
    assert len(piped.stdout) <= SIZE - final and plaintext.startswith(piped.stdout)  # whole verified frames only
