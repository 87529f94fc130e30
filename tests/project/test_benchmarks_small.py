"""The ``small`` benchmark group (issue 16): its child measurement and how the report judges its figures."""

from __future__ import annotations

import math

import pytest

from benchmarks import report, small_group


@pytest.mark.parametrize("op", ["encrypt", "decrypt"])
@pytest.mark.parametrize("cache", [False, True])
def test_the_envelope_child_times_messages_and_counts_keyring_calls(op: str, cache: bool) -> None:
    got = small_group.small_child({"tool": "envelope", "op": op, "cache": cache, "messages": 30})
    assert got["messages"] == 30 and got["seconds"] > 0
    assert got["us_min"] <= got["seconds"] / 30 * 1e6 <= got["us_max"]
    if not cache:
        assert "keyring_calls" not in got
    elif op == "encrypt":
        assert got["keyring_calls"] == math.ceil(got["total_messages"] / small_group.MAX_MESSAGES)
    else:  # the DISTINCT messages share one data key: one unwrap, then hits
        assert got["keyring_calls"] == math.ceil(small_group.DISTINCT / small_group.MAX_MESSAGES)


def test_small_targets_and_ratios_are_judged() -> None:
    def row(rid: str, value: float) -> dict[str, object]:
        return {"id": rid, "value": value}

    results = {
        "small/envelope/no-cache/encrypt": row("small/envelope/no-cache/encrypt", 12.0),
        "small/envelope/no-cache/decrypt": row("small/envelope/no-cache/decrypt", 16.0),
        "small/esdk/no-cache/encrypt": row("small/esdk/no-cache/encrypt", 120.0),
        "small/envelope/cache/encrypt": row("small/envelope/cache/encrypt", 15.0),
    }
    rows = {r["label"]: r for r in report.compute_ratios(results, 1 << 20, 1 << 30)}
    assert rows["small 1 KiB envelope.encrypt, uncached: us per message"]["status"] == "PASS"
    assert rows["small 1 KiB envelope.decrypt, uncached: us per message"]["status"] == "MISS"
    assert rows["small 1 KiB envelope.encrypt, cached: us per message"]["status"] == "PASS"  # <= 15 us
    assert "small 1 KiB envelope.decrypt, cached: us per message" not in rows  # not measured: no row
    speedup = rows["small 1 KiB encrypt, uncached: ESDK time / envelope time per message"]
    assert (speedup["value"], speedup["status"], speedup["issue"]) == (10.0, "info", "#16")
    assert rows["small 1 KiB decrypt, uncached: ESDK time / envelope time per message"]["status"] == "n/a"
