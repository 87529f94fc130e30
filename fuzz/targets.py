"""Fuzz targets: what must hold for *any* input bytes. atheris runs them (``python -m fuzz run``) and so does
hypothesis in the normal test suite (``tests/format/test_fuzz.py``).

Each target returns normally or raises ``AssertionError`` / a foreign exception, which a fuzzer reports as a
crash. The only exceptions an input may cause are ``envelope.errors`` classes:

- :func:`header`: ``parse_header`` raises :class:`FormatError` or parses; then ``header.raw`` is exactly the
  input's header body, re-serialising gives the same bytes (the same structure when the context was not
  sorted: readers accept any order, section 6.1) and the EDK limit refuses exactly the counts above it. If the
  input is a whole message, ``parse_message`` / ``serialize_message`` round-trip it the same way, and the
  in-memory frame walk of one-shot ``decrypt`` (``framed_layout``) finds the same frames. The parser walks
  frames with ``regular_frames``, the function the streaming decrypt runs on each batch.
- :func:`decrypt`: one-shot ``decrypt`` and ``decrypt_stream`` from a source that returns a few bytes per read
  agree (same plaintext, or the same error), under the key of the seed messages; a message that decrypts also
  parses, and the stream wrote exactly the plaintext. It returns whether the input decrypted.
"""

from __future__ import annotations

import io
from typing import Any

import envelope
from envelope import _format as fmt
from envelope.errors import EnvelopeError, FormatError, PolicyError
from testkit.sources import Trickle
from testkit.vectors import KEYRING, READ_ANY, assemble, plaintext

__all__ = ["decrypt", "header", "seeds"]


def _sorted(header: fmt.Header) -> bool:
    keys = [k.encode("utf-8") for k in header.encryption_context]
    return keys == sorted(keys)


def header(data: bytes) -> None:
    try:
        parsed, auth, used = fmt.parse_header(data)
    except FormatError:
        return
    raw = parsed.raw
    assert raw == data[:len(raw)], "header.raw is not the input's header body"
    assert data[len(raw):used] == fmt.serialize_header_auth(parsed, auth)
    body = fmt.serialize_header_body(parsed)
    if _sorted(parsed):
        assert body == raw, "parse then serialise changed the header body"
    else:
        again, _, _ = fmt.parse_header(body + data[len(raw):used])
        assert again == parsed, "re-serialising an unsorted context changed the header"
    count = len(parsed.encrypted_data_keys)
    fmt.parse_header(data, max_encrypted_data_keys=count)
    try:
        fmt.parse_header(data, max_encrypted_data_keys=count - 1)
    except PolicyError:
        pass
    else:
        raise AssertionError(f"{count} EDKs passed a limit of {count - 1}")
    try:
        message = fmt.parse_message(data)
    except FormatError:
        return
    if isinstance(message.body, tuple):  # the one-shot decrypt's walk over frames agrees with the parser's
        frames, footer = message.body, message.footer
        body_length = len(data) - used - (fmt.footer_length(len(footer.signature)) if footer is not None else 0)
        assert fmt.framed_layout(memoryview(data)[used:], parsed.frame_length) == \
            (len(frames) - 1, len(frames[-1].ciphertext), body_length), "framed_layout and parse_message disagree"
    out = fmt.serialize_message(message)
    if _sorted(parsed):
        assert out == data, "parse then serialise changed the message"
    else:
        assert fmt.parse_message(out) == message


def _outcome(call: Any) -> tuple[str, object]:
    try:
        return "ok", call()
    except EnvelopeError as exc:  # anything else escapes: the fuzzer's crash
        return type(exc).__name__, str(exc)


def decrypt(data: bytes) -> bool:
    """Returns whether ``data`` decrypted (the tests check that nothing but a seed does)."""
    one = _outcome(lambda: envelope.decrypt(data, keyring=KEYRING, commitment_policy=READ_ANY).plaintext)
    out = io.BytesIO()
    two = _outcome(lambda: envelope.decrypt_stream(Trickle(data), out, keyring=KEYRING,  # type: ignore[arg-type]
                                                   commitment_policy=READ_ANY, threads=0).bytes_written)
    if one[0] == "ok":
        assert two[0] == "ok", f"one-shot decrypt succeeded, streaming failed: {two}"
        assert out.getvalue() == one[1]
        fmt.parse_message(data)  # what decrypts is well formed
        return True
    assert one[0] == two[0], f"one-shot and streaming disagree: {one} / {two}"
    return False


def seeds() -> list[bytes]:
    """Valid messages under :data:`KEYRING` for every suite, framed and not, for fuzzers to start from: written
    by testkit (also non-framed and unsorted-context ones) and by ``envelope.encrypt`` (frames of 8 bytes)."""
    from envelope._suites import SUITES

    data = plaintext(90)
    found = []
    for suite_id in sorted(SUITES):
        found.append(assemble(suite_id, [data[:32], data[32:64], data[64:]], frame_length=32))
        found.append(assemble(suite_id, [data[:5]], context={}))
        policy = "require-encrypt-require-decrypt" if SUITES[suite_id].committing else "forbid-encrypt-allow-decrypt"
        found.append(envelope.encrypt(b"sample plaintext!", keyring=KEYRING, algorithm=suite_id, frame_length=8,
                                      context={"a": "1", "b": "2"}, commitment_policy=policy))
    found.append(assemble(0x0478, [data], non_framed=True))
    found.append(assemble(0x0578, [data], non_framed=True))
    found.append(assemble(0x0578, [data[:50], data[50:]], frame_length=50, unsorted_context=True))
    return found
