"""The one-shot decrypt's result, made without the frozen ``__init__``, is the object the constructor makes."""

from __future__ import annotations

import dataclasses
import io
import os

import pytest

import envelope
from envelope._api import DecryptResult


def test_one_frame_result_equals_the_constructors() -> None:
    keyring = envelope.RawAesKeyring("ns", "name", os.urandom(32))
    plain = os.urandom(1024)
    result = envelope.decrypt(envelope.encrypt(plain, keyring=keyring, context={"a": "b"}), keyring=keyring)
    slow = DecryptResult(result.plaintext, result.header)
    assert type(result) is DecryptResult and result == slow and result.__dict__ == slow.__dict__
    assert result.plaintext == plain and result.context == {"a": "b"} and result.suite.id == 0x0478
    assert repr(plain) not in repr(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.plaintext = b""  # type: ignore[misc]


@pytest.mark.parametrize("change", ["trailing", "cut", "two frames"])
def test_an_irregular_body_after_a_fast_parsed_header_goes_to_the_streaming_reader(change: str) -> None:
    """decrypt() reads a regular body from memory; anything else gets a Source over the body (made then) and
    the streaming reader's own result or error, the same as decrypt_stream's."""
    keyring = envelope.RawAesKeyring("ns", "name", os.urandom(32))
    plain = os.urandom(3000)
    message = envelope.encrypt(plain, keyring=keyring, frame_length=2048 if change == "two frames" else None)
    if change == "trailing":
        message += b"\x00"
    elif change == "cut":
        message = message[:-1]
    stream_error: Exception | None = None
    try:
        expected = envelope.decrypt_stream(io.BytesIO(message), io.BytesIO(), keyring=keyring)
    except envelope.EnvelopeError as exc:
        stream_error = exc
    if stream_error is None:
        assert expected.bytes_read == len(message)
        assert envelope.decrypt(message, keyring=keyring).plaintext == plain
    else:
        with pytest.raises(type(stream_error)) as got:
            envelope.decrypt(message, keyring=keyring)
        assert str(got.value) == str(stream_error)
