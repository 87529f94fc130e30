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


class _General(envelope.DefaultMaterialsManager):
    """The default manager under another type: encrypt() and decrypt() take their general path for it."""


def _seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.urandom, as the API and the raw AES keyring see it, from a fixed stream: both paths draw the same bytes
    in the same order (the data key and wrapping IV, then the message ID), so their messages must be equal."""
    stream = iter(bytes(range(256)) * 64)

    def urandom(n: int) -> bytes:
        return bytes(next(stream) for _ in range(n))

    import envelope._api
    import envelope._keyrings.raw_aes

    monkeypatch.setattr(envelope._api.os, "urandom", urandom)
    assert envelope._keyrings.raw_aes.os.urandom is urandom


@pytest.mark.parametrize("algorithm", [None, 0x0478, 0x0178, 0x0078])
@pytest.mark.parametrize("size", [0, 1, 1024, 4095])
def test_the_small_message_path_writes_the_general_paths_bytes(monkeypatch: pytest.MonkeyPatch,
                                                                 algorithm: int | None, size: int) -> None:
    """A message shorter than one frame through the default manager skips the request, materials and header
    objects (envelope._api._encrypt_final_only); the bytes are those of the general path, for every unsigned suite
    family (committing, HKDF, identity KDF) and the policy each needs."""
    keyring = envelope.RawAesKeyring("ns", "name", bytes(range(32)))
    plain = bytes(range(256)) * 16
    plain = plain[:size]
    policy = None if algorithm in (None, 0x0478) else "forbid-encrypt-allow-decrypt"
    kwargs = {"context": {"b": "2", "a": "1"}, "algorithm": algorithm, "commitment_policy": policy,
              "frame_length": 4096}
    messages = []
    for chosen in ({"keyring": keyring}, {"materials_manager": envelope.DefaultMaterialsManager(keyring)},
                   {"materials_manager": _General(keyring)}):
        _seeded(monkeypatch)
        messages.append(envelope.encrypt(plain, **chosen, **kwargs))  # type: ignore[arg-type]
        monkeypatch.undo()
    one, as_manager, other = messages
    assert one == as_manager == other
    assert one != envelope.encrypt(plain, keyring=keyring, **kwargs)  # unseeded: its own keys and message ID
    decrypt_policy = "require-encrypt-allow-decrypt" if policy else None
    for message in (one, other):
        assert envelope.decrypt(message, keyring=keyring, commitment_policy=decrypt_policy).plaintext == plain
        assert envelope.decrypt(message, materials_manager=_General(keyring),
                                commitment_policy=decrypt_policy).plaintext == plain


def test_the_small_message_path_keeps_the_general_paths_checks() -> None:
    keyring = envelope.RawAesKeyring("ns", "name", os.urandom(32))
    second = envelope.RawAesKeyring("ns", "other", os.urandom(32))
    both = envelope.MultiKeyring(keyring, [second])
    for manager in (None, _General):
        def run(**kwargs: object) -> bytes:
            ring = kwargs.pop("ring", keyring)
            chosen = {"keyring": ring} if manager is None else {"materials_manager": manager(ring)}
            return envelope.encrypt(b"x" * 100, **chosen, **kwargs)  # type: ignore[arg-type]

        with pytest.raises(envelope.UsageError, match="commits to its key"):
            run(algorithm=0x0478, commitment_policy="forbid-encrypt-allow-decrypt")
        with pytest.raises(envelope.UsageError, match="does not commit"):
            run(algorithm=0x0178)
        with pytest.raises(envelope.UsageError, match="reserved"):
            run(context={"aws-crypto-x": "1"})
        with pytest.raises(envelope.UsageError, match="2 encrypted data keys, more than the limit of 1"):
            run(ring=both, max_encrypted_data_keys=1)
        assert envelope.decrypt(run(ring=both, max_encrypted_data_keys=2), keyring=second).plaintext == b"x" * 100


@pytest.mark.parametrize("size", [0, 100])
def test_a_signed_default_suite_takes_the_general_path(size: int) -> None:
    """The policy that forbids commitment defaults to 0x0378, a signed suite: a small message still gets its
    signature (the footer), which the small-message path does not write."""
    keyring = envelope.RawAesKeyring("ns", "name", os.urandom(32))
    message = envelope.encrypt(b"s" * size, keyring=keyring, commitment_policy="forbid-encrypt-allow-decrypt")
    result = envelope.decrypt(message, keyring=keyring, commitment_policy="forbid-encrypt-allow-decrypt")
    assert result.suite.id == 0x0378 and result.plaintext == b"s" * size
    assert "aws-crypto-public-key" in result.header.encryption_context
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt(message[:-10], keyring=keyring, commitment_policy="forbid-encrypt-allow-decrypt")
