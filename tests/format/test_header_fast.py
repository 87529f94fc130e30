"""parse_header's direct-offset path for framed v2 headers (_parse_header_v2) against the field-by-field parser.

Whatever the fast path accepts, the cursor parser must accept with the same header, authentication and length;
on anything else the fast path must step aside (None), so every error is still the cursor parser's. Checked on
valid messages of every suite, every hostile vector, every truncation of a header, and random mutations.
"""

from __future__ import annotations

import random

import envelope
from envelope import _format as fmt
from envelope._suites import SUITES
from envelope.errors import EnvelopeError
from testkit import vectors

_KEYS = [envelope.RawAesKeyring("ns", f"key-{i}", bytes([i]) * 32) for i in range(3)]
MULTI = envelope.MultiKeyring(_KEYS[0], _KEYS[1:])


def _slow(buf: bytes, limit: int | None) -> tuple[fmt.Header, fmt.HeaderAuth, int] | None:
    cur = fmt._Cursor(buf)
    try:
        header, auth = fmt._parse_header(cur, limit)
    except EnvelopeError:
        return None
    return header, auth, cur.pos


def _agree(buf: bytes, limit: int | None = None) -> bool:
    """True when the fast path took the header."""
    fast = fmt._parse_header_v2(buf, limit)
    if fast is None:
        return False
    slow = _slow(buf, limit)
    assert slow is not None, "the fast path accepted a header the cursor parser refuses"
    assert fast == slow
    assert fast[0].__dict__ == slow[0].__dict__  # _format._header makes what Header(...) makes
    assert type(fast[0]) is fmt.Header
    assert type(fast[1]) is fmt.HeaderAuth and fast[1].__dict__ == slow[1].__dict__
    for mine, theirs in zip(fast[0].encrypted_data_keys, slow[0].encrypted_data_keys, strict=True):
        assert type(mine) is fmt.EncryptedDataKey and mine.__dict__ == theirs.__dict__
        assert [type(x) for x in (mine.provider_id, mine.provider_info, mine.ciphertext)] == [str, bytes, bytes]
    assert fast[0].raw == slow[0].raw  # not part of Header equality
    assert [type(x) for x in (fast[0].message_id, fast[0].commitment, fast[1].iv, fast[1].tag)] == [bytes] * 4
    return True


def _seeds() -> list[bytes]:
    """Valid messages of every suite, framed and not (as the fuzz seeds: testkit and envelope.encrypt)."""
    data = vectors.plaintext(90)
    found = []
    for suite_id, suite in sorted(SUITES.items()):
        found.append(vectors.assemble(suite_id, [data[:32], data[32:64], data[64:]], frame_length=32))
        found.append(vectors.assemble(suite_id, [data[:5]], context={}))
        found.append(vectors.assemble(suite_id, [data], non_framed=True))
        policy = "require-encrypt-require-decrypt" if suite.committing else "forbid-encrypt-allow-decrypt"
        found.append(envelope.encrypt(b"sample plaintext!", keyring=vectors.KEYRING, algorithm=suite_id,
                                      frame_length=8, context={"a": "1", "b": "2"}, commitment_policy=policy))
    found.append(vectors.assemble(0x0578, [data[:50], data[50:]], frame_length=50, unsorted_context=True))
    return found


def _messages() -> list[bytes]:
    found = _seeds()
    found += [v.message for v in vectors.load_all()]
    found.append(envelope.encrypt(b"x" * 100, keyring=MULTI, context={"z": "1", "a": "\u00e9\u4e2d", "m": ""}))
    found.append(envelope.encrypt(b"", keyring=MULTI))
    return found


def test_fast_path_takes_the_common_header_and_agrees() -> None:
    message = envelope.encrypt(b"x" * 1024, keyring=MULTI, context={"purpose": "test"})
    assert _agree(message)
    header, _, used = fmt.parse_header(message)
    assert len(header.encrypted_data_keys) == 3 and header.encryption_context == {"purpose": "test"}
    assert used == len(header.raw) + fmt.TAG_LENGTH


def test_every_valid_and_hostile_message_agrees() -> None:
    taken = 0
    for message in _messages():
        taken += _agree(message)
        for limit in (0, 1, 2, 3, 256):
            _agree(message, limit)
    assert taken > 10  # the framed v2 seeds go the fast way


def test_every_truncation_agrees() -> None:
    for message in _messages()[:40]:
        for cut in range(min(len(message), 400)):
            _agree(message[:cut])


def test_random_mutations_agree() -> None:
    rng = random.Random(16)
    seeds = _messages()
    for _ in range(6000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(min(len(data), 300))
            kind = rng.randrange(4)
            if kind == 0:
                data[i] = rng.randrange(256)
            elif kind == 1:
                data[i:i + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x80\x00"])
            elif kind == 2:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        _agree(bytes(data), rng.choice([None, 1, 256]))
        _agree(memoryview(bytes(data)))  # type: ignore[arg-type]


def test_new_encrypted_data_key_is_the_constructors() -> None:
    fast = fmt.new_encrypted_data_key("ns", b"info", b"ct")
    slow = fmt.EncryptedDataKey("ns", b"info", b"ct")
    assert type(fast) is fmt.EncryptedDataKey and fast == slow and hash(fast) == hash(slow)
    assert fast.__dict__ == slow.__dict__ and repr(fast) == repr(slow) and fast.serialize() == slow.serialize()
