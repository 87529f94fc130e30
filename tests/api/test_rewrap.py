"""envelope.rewrap_stream (issue 15): new encrypted data keys for the same data key, the body copied unchanged.

Every case checks the promise both ways: the output decrypts with the new keys to exactly the original plaintext
(with envelope and with the real aws-encryption-sdk), and no longer with the old keys. The matrix covers all 11
suites, framed and non-framed bodies (the ESDK writes those with frame_length=0), v1 and v2 headers, and the three
ways the body is copied (frames checked, frames walked, a file copied in the kernel).
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import aws_encryption_sdk
import pytest
from helpers import ALL_SUITE_IDS, READ_ANY, SIGNED_IDS, esdk_aes_key, esdk_decrypt, esdk_encrypt

import envelope
from envelope import _format as fmt
from envelope._suites import SUITES
from testkit.messages import flip

OLD_KEY, NEW_KEY, RECOVERY_KEY = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
CONTEXT = {"app": "archive", "ünïcode": "välue"}
PLAINTEXT = os.urandom(3 * 4096 + 123)


def old() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("rotation", "old", OLD_KEY)


def new() -> envelope.RawAesKeyring:
    return envelope.RawAesKeyring("rotation", "new", NEW_KEY)


def rewrap(message: bytes, *, old_keyring: envelope.Keyring | envelope.MaterialsManager | None = None,
           new_keyring: envelope.Keyring | None = None, **options: object) -> tuple[bytes, envelope.RewrapResult]:
    out = io.BytesIO()
    result = envelope.rewrap_stream(io.BytesIO(message), out, old=old_keyring or old(), new=new_keyring or new(),
                                    commitment_policy=READ_ANY, **options)  # type: ignore[arg-type]
    assert result.bytes_written == len(out.getvalue()) and result.bytes_read == len(message)
    return out.getvalue(), result


def body_of(message: bytes) -> bytes:
    """The body bytes: after the header, before the footer."""
    used = fmt.parse_header(message)[2]
    footer = fmt.parse_message(message).footer
    return message[used:len(message) - (fmt.footer_length(len(footer.signature)) if footer is not None else 0)]


def assert_rewrapped(original: bytes, output: bytes) -> None:
    """Same message, same body bytes, only the new key's EDK; the old key no longer opens it."""
    before, after = fmt.parse_header(original)[0], fmt.parse_header(output)[0]
    for name in ("version", "suite", "message_id", "content_type", "frame_length", "commitment"):
        assert getattr(before, name) == getattr(after, name), name
    public = "aws-crypto-public-key"
    assert {k: v for k, v in after.encryption_context.items() if k != public} == \
        {k: v for k, v in before.encryption_context.items() if k != public}
    if before.suite.signed:
        assert after.encryption_context[public] != before.encryption_context[public]  # a fresh signing key
    assert [(e.provider_id, envelope.readable_key_name(e.provider_info)) for e in after.encrypted_data_keys] == \
        [("rotation", "new")]
    assert body_of(output) == body_of(original)
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt(output, keyring=old(), commitment_policy=READ_ANY)


# ---------------------------------------------------------------------------------------------------------
# the interop matrix: all 11 suites, framed and non-framed, written by the ESDK and by envelope


@pytest.mark.parametrize("frame_length", [4096, 0], ids=["framed", "non-framed"])
@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS, ids=lambda s: f"0x{s:04x}")
def test_esdk_message_rewrapped_decrypts_with_the_esdk_under_the_new_key(suite_id: int, frame_length: int) -> None:
    message = esdk_encrypt(PLAINTEXT, esdk_aes_key("rotation", "old", OLD_KEY), suite_id, context=CONTEXT,
                           frame_length=frame_length)
    assert fmt.parse_header(message)[0].framed == bool(frame_length)
    outputs = [rewrap(message, verify=verify)[0] for verify in (True, False)]
    for output in outputs:
        assert_rewrapped(message, output)
        plaintext, context = esdk_decrypt(output, esdk_aes_key("rotation", "new", NEW_KEY))
        assert plaintext == PLAINTEXT and {k: context[k] for k in CONTEXT} == CONTEXT
        with pytest.raises(aws_encryption_sdk.exceptions.AWSEncryptionSDKClientError):
            esdk_decrypt(output, esdk_aes_key("rotation", "old", OLD_KEY))
        assert envelope.decrypt(output, keyring=new(), commitment_policy=READ_ANY).plaintext == PLAINTEXT


@pytest.mark.parametrize("suite_id", ALL_SUITE_IDS, ids=lambda s: f"0x{s:04x}")
def test_envelope_message_rewrapped_decrypts_with_both(suite_id: int) -> None:
    policy = "forbid-encrypt-allow-decrypt" if not SUITES[suite_id].committing else None
    for plaintext in (PLAINTEXT, b"", os.urandom(8192)):  # several frames, an empty body, an exact multiple
        message = envelope.encrypt(plaintext, keyring=old(), context=CONTEXT, algorithm=suite_id, frame_length=4096,
                                   commitment_policy=policy)
        output, result = rewrap(message)
        assert result.verified is SUITES[suite_id].signed  # the default: on for signed suites only
        assert result.original.message_id == result.header.message_id
        assert_rewrapped(message, output)
        assert envelope.decrypt(output, keyring=new(), commitment_policy=READ_ANY).plaintext == plaintext
        assert esdk_decrypt(output, esdk_aes_key("rotation", "new", NEW_KEY))[0] == plaintext


def test_rewrap_to_several_keys_and_back() -> None:
    recovery = envelope.RawAesKeyring("rotation", "recovery", RECOVERY_KEY)
    message = envelope.encrypt(PLAINTEXT, keyring=old(), context=CONTEXT)
    both, _ = rewrap(message, new_keyring=envelope.MultiKeyring(new(), [recovery]))
    for ring in (new(), recovery):
        assert envelope.decrypt(both, keyring=ring).plaintext == PLAINTEXT
    only_recovery, _ = rewrap(both, old_keyring=new(), new_keyring=recovery)  # drop a departed team's key
    assert envelope.decrypt(only_recovery, keyring=recovery).plaintext == PLAINTEXT
    with pytest.raises(envelope.KeyringError):
        envelope.decrypt(only_recovery, keyring=new())


def test_old_keys_as_a_caching_manager() -> None:
    manager = envelope.CachingMaterialsManager(old(), envelope.LocalCache(4), max_age=60)
    message = envelope.encrypt(PLAINTEXT, keyring=old())
    for _ in range(2):
        output, _ = rewrap(message, old_keyring=manager)
        assert envelope.decrypt(output, keyring=new()).plaintext == PLAINTEXT
    assert manager.stats.hits == 1


def test_required_context_stays_required() -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=old(), context={**CONTEXT, "tenant": "acme"},
                               required_context_keys=["tenant"])
    with pytest.raises(envelope.KeyringError):
        rewrap(message)  # the old key cannot open it without the pair
    output, result = rewrap(message, reproduced_context={"tenant": "acme"})
    assert "tenant" not in result.header.encryption_context
    with pytest.raises(envelope.KeyringError, match="reproduced"):
        envelope.decrypt(output, keyring=new())
    assert envelope.decrypt(output, keyring=new(), reproduced_context={"tenant": "acme"}).plaintext == PLAINTEXT


# ---------------------------------------------------------------------------------------------------------
# what is checked, and what is refused before anything is written


def test_nothing_is_written_when_the_old_keys_or_the_header_fail() -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=old(), context=CONTEXT)
    for wrong, error in ((envelope.RawAesKeyring("rotation", "old", NEW_KEY), envelope.KeyringError),):
        out = io.BytesIO()
        with pytest.raises(error):
            envelope.rewrap_stream(io.BytesIO(message), out, old=wrong, new=new())
        assert out.getvalue() == b""
    tag_at = fmt.parse_header(message)[2] - 1
    out = io.BytesIO()
    with pytest.raises(envelope.AuthenticationError, match="header authentication"):
        envelope.rewrap_stream(io.BytesIO(flip(message, tag_at)), out, old=old(), new=new())
    assert out.getvalue() == b""
    with pytest.raises(envelope.ContextMismatchError):
        envelope.rewrap_stream(io.BytesIO(message), out, old=old(), new=new(), required_context={"app": "other"})
    with pytest.raises(envelope.PolicyError):  # a v1 message under the default (committing) policy
        v1 = envelope.encrypt(b"x", keyring=old(), algorithm=0x0178, commitment_policy="forbid-encrypt-allow-decrypt")
        envelope.rewrap_stream(io.BytesIO(v1), out, old=old(), new=new())
    assert out.getvalue() == b""


def test_a_changed_frame_fails_with_verify_and_is_carried_without() -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=old(), frame_length=4096)
    changed = flip(message, len(message) - 20)  # inside the final frame's content
    with pytest.raises(envelope.AuthenticationError, match="final frame 4"):
        rewrap(changed, verify=True)
    middle = flip(message, fmt.parse_header(message)[2] + 4096)  # inside frame 1
    with pytest.raises(envelope.AuthenticationError, match="frame 1 failed"):
        rewrap(middle, verify=True)
    output, result = rewrap(changed, verify=False)  # the frames are walked, not opened: documented
    assert not result.verified
    with pytest.raises(envelope.AuthenticationError):
        envelope.decrypt(output, keyring=new())  # the change is still caught where it always was


@pytest.mark.parametrize("suite_id", SIGNED_IDS, ids=lambda s: f"0x{s:04x}")
def test_signed_suites_check_the_old_signature_even_without_verify(suite_id: int) -> None:
    policy = "forbid-encrypt-allow-decrypt" if not SUITES[suite_id].committing else None
    message = envelope.encrypt(PLAINTEXT, keyring=old(), algorithm=suite_id, commitment_policy=policy)
    for verify in (True, False):
        out = io.BytesIO()
        with pytest.raises(envelope.AuthenticationError, match="signature"):
            envelope.rewrap_stream(io.BytesIO(flip(message, len(message) - 3)), out, old=old(), new=new(),
                                   commitment_policy=READ_ANY, verify=verify)
        assert out.getvalue()[-50:] != message[-50:]  # no footer was written


def test_truncated_and_extended_messages_are_refused() -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=old(), frame_length=4096)
    with pytest.raises(envelope.FormatError):
        rewrap(message[:-1])
    with pytest.raises(envelope.FormatError, match="trailing bytes"):
        rewrap(message + b"\0")
    signed = envelope.encrypt(PLAINTEXT, keyring=old(), algorithm=0x0578)
    with pytest.raises(envelope.FormatError):
        rewrap(signed[:-10])
    with pytest.raises(envelope.FormatError, match="trailing bytes"):
        rewrap(signed + b"x")


def test_the_new_keyring_must_wrap_the_data_key_it_is_given() -> None:
    class Impostor:
        def wrap(self, suite, context, data_key=None):  # type: ignore[no-untyped-def]
            return new().wrap(suite, context, None)  # ignores data_key: a key that opens nothing

        def unwrap(self, suite, context, edks):  # type: ignore[no-untyped-def]
            raise envelope.KeyringError("no")

    message = envelope.encrypt(PLAINTEXT, keyring=old())
    with pytest.raises(envelope.KeyringError, match="did not wrap the data key"):
        rewrap(message, new_keyring=Impostor())  # type: ignore[arg-type]
    with pytest.raises(envelope.UsageError, match="new= must be a keyring"):
        rewrap(message, new_keyring=envelope.DefaultMaterialsManager(new()))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# file to file: the body copied in the kernel


def _rewrap_file(src: Path, dst: Path, offset: int = 0, **options: object) -> envelope.RewrapResult:
    with open(src, "rb") as s, open(dst, "wb") as d:
        s.seek(offset)
        return envelope.rewrap_stream(s, d, old=old(), new=new(), **options)  # type: ignore[arg-type]


def test_files_are_copied_in_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = envelope.encrypt(PLAINTEXT * 50, keyring=old(), frame_length=4096)
    (tmp_path / "m").write_bytes(b"prefix" + message)
    copied: list[int] = []
    real = os.copy_file_range

    def counting(src: int, dst: int, count: int, offset_src: int | None = None, *args: object) -> int:
        got = real(src, dst, count, offset_src, *args)  # type: ignore[arg-type]
        copied.append(got)
        return got

    monkeypatch.setattr(os, "copy_file_range", counting)
    result = _rewrap_file(tmp_path / "m", tmp_path / "out", offset=len(b"prefix"))
    output = (tmp_path / "out").read_bytes()
    assert sum(copied) == len(body_of(message)) and result.bytes_read == len(message)
    assert envelope.decrypt(output, keyring=new()).plaintext == PLAINTEXT * 50
    assert_rewrapped(message, output)

    # where copy_file_range cannot copy between the two (EXDEV on older kernels): sendfile, same bytes
    def refuses(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuses)
    _rewrap_file(tmp_path / "m", tmp_path / "out2", offset=len(b"prefix"))
    assert envelope.decrypt((tmp_path / "out2").read_bytes(), keyring=new()).plaintext == PLAINTEXT * 50
    assert body_of((tmp_path / "out2").read_bytes()) == body_of(message)


def test_files_are_checked_at_their_end_without_being_read(tmp_path: Path) -> None:
    message = envelope.encrypt(PLAINTEXT, keyring=old(), frame_length=4096)
    for name, data in (("short", message[:-1]), ("long", message + b"\0"), ("cut", message[:-4200])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(envelope.FormatError):
            _rewrap_file(tmp_path / name, tmp_path / "out")
    non_framed = esdk_encrypt(PLAINTEXT, esdk_aes_key("rotation", "old", OLD_KEY), 0x0478, context={},
                              frame_length=0)
    (tmp_path / "nf").write_bytes(non_framed + b"\0")
    with pytest.raises(envelope.FormatError, match="body content length"):
        _rewrap_file(tmp_path / "nf", tmp_path / "out")
    (tmp_path / "nf").write_bytes(non_framed)
    _rewrap_file(tmp_path / "nf", tmp_path / "out")
    assert envelope.decrypt((tmp_path / "out").read_bytes(), keyring=new()).plaintext == PLAINTEXT


def test_a_pipe_is_read_through_and_still_walked(tmp_path: Path) -> None:
    message = envelope.encrypt(PLAINTEXT * 300, keyring=old(), frame_length=4096)  # several batches
    read_fd, write_fd = os.pipe()
    import threading

    def feed() -> None:
        with open(write_fd, "wb") as w:
            w.write(message)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(read_fd, "rb") as r, open(tmp_path / "out", "wb") as d:
        result = envelope.rewrap_stream(r, d, old=old(), new=new(), threads=2)
    feeder.join()
    assert result.bytes_read == len(message)
    assert envelope.decrypt((tmp_path / "out").read_bytes(), keyring=new()).plaintext == PLAINTEXT * 300
