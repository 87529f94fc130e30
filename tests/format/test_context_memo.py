"""The memos of serialised and parsed encryption contexts (envelope._format): a hit is only ever the same context."""

from __future__ import annotations

import random

import envelope
from envelope import _format as fmt

KEYRING = envelope.RawAesKeyring("memo", "key", bytes(range(32)))


def _fresh(context: dict[str, str]) -> bytes:
    return fmt._serialize_context(context, True)


def test_a_different_context_never_gets_a_remembered_serialisation() -> None:
    rng = random.Random(5)
    seen: dict[bytes, dict[str, str]] = {}
    for _ in range(2000):
        context = {rng.choice("abc"): rng.choice(["1", "2", "", "\u00e9"]) for _ in range(rng.randint(1, 3))}
        out = fmt.serialize_context(context)
        assert out == _fresh(context)
        assert fmt.parse_context(out) == context
        seen.setdefault(out, context)
        assert seen[out] == context  # one serialisation, one context


def test_a_context_changed_in_place_is_serialised_again() -> None:
    context = {"purpose": "one"}
    first = fmt.serialize_context(context)
    context["purpose"] = "two"
    assert fmt.serialize_context(context) != first
    assert fmt.parse_context(fmt.serialize_context(context)) == {"purpose": "two"}


def test_order_of_the_mapping_does_not_matter() -> None:
    assert fmt.serialize_context({"b": "2", "a": "1"}) == fmt.serialize_context({"a": "1", "b": "2"})


class _Sly(str):
    """Equal to anything and hashed as "a": a lookup with it must never be served a remembered context."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("a")


def test_str_subclasses_are_neither_remembered_nor_matched() -> None:
    fmt.serialize_context({"a": "1"})
    out = fmt.serialize_context({_Sly("zz"): "1"})
    assert out == _fresh({"zz": "1"})
    assert fmt.parse_context(out) == {"zz": "1"}


def test_the_memos_stay_bounded() -> None:
    for i in range(3 * fmt._CONTEXT_MEMO_SIZE):
        context = {"n": str(i)}
        assert fmt.parse_header(envelope.encrypt(b"", keyring=KEYRING, context=context))[0].encryption_context \
            == context
        assert len(fmt._CONTEXT_MEMO) <= fmt._CONTEXT_MEMO_SIZE
        assert len(fmt._PARSED_CONTEXTS) <= fmt._CONTEXT_MEMO_SIZE
    big = {"k": "x" * (fmt._CONTEXT_MEMO_BYTES + 1)}
    fmt.serialize_context(big)
    assert tuple(big.items()) not in fmt._CONTEXT_MEMO


def test_parsed_contexts_are_per_header_and_per_bytes() -> None:
    one = envelope.encrypt(b"x", keyring=KEYRING, context={"purpose": "one"})
    two = envelope.encrypt(b"x", keyring=KEYRING, context={"purpose": "two"})
    first = fmt.parse_header(one)[0]
    first.encryption_context["purpose"] = "changed"  # type: ignore[index]
    assert fmt.parse_header(one)[0].encryption_context == {"purpose": "one"}
    assert fmt.parse_header(two)[0].encryption_context == {"purpose": "two"}
    assert envelope.decrypt(two, keyring=KEYRING).context == {"purpose": "two"}
