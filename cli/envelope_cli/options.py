"""Command-line values -> the library's typed values, in one place: context pairs, suites, policies, seconds,
cache limits. Each conversion refuses what it cannot use with a :class:`envelope.UsageError` naming the option.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envelope import AlgorithmSuite, CommitmentPolicy

    from .jobs import CacheSettings

__all__ = ["DEFAULT_CACHE_CAPACITY", "cache_settings", "pairs", "policy", "seconds", "suite"]

#: ``--cache-capacity`` default: entries per cache (one per process).
DEFAULT_CACHE_CAPACITY = 1000


def pairs(values: list[str] | None) -> dict[str, str]:
    """``-c KEY=VALUE`` options -> a dict; the same key twice must have the same value."""
    from envelope import UsageError

    found: dict[str, str] = {}
    for item in values or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"-c {item!r}: expected KEY=VALUE")
        if key in found and found[key] != value:
            raise UsageError(f"-c: key {key!r} is given twice with different values")
        found[key] = value
    return found


def suite(text: str | None) -> AlgorithmSuite | None:
    """``--algorithm``: an ESDK name or hex id; None leaves the choice to the library."""
    import envelope

    return envelope.resolve_suite(text)


def policy(text: str | None) -> CommitmentPolicy | None:
    """``--commitment-policy``; None leaves the library's default."""
    import envelope

    return None if text is None else envelope.resolve_policy(text)


def seconds(text: str | None) -> float | None:
    from envelope import UsageError

    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--cache-max-age {text!r}: expected a number of seconds, such as 300 or 0.5") from None
    if not 0 < value < float("inf"):
        raise UsageError(f"--cache-max-age {text!r}: must be more than 0 seconds")
    return value


def cache_settings(max_age: str | None, max_messages: int | None, max_bytes: int | None,
                   capacity: int | None) -> CacheSettings | None:
    """``--cache-*`` -> the cache settings, with the library's defaults for limits not given; None (no cache)
    unless ``--cache-max-age`` is given."""
    import envelope

    from .jobs import CacheSettings

    age = seconds(max_age)
    if age is None:
        given = [name for name, value in (("--cache-max-messages", max_messages), ("--cache-max-bytes", max_bytes),
                                          ("--cache-capacity", capacity)) if value is not None]
        if given:
            raise envelope.UsageError(f"{given[0]} sets a limit of the data-key cache, which --cache-max-age "
                                      "SECONDS turns on")
        return None
    return CacheSettings(
        age, envelope.DEFAULT_CACHE_MAX_MESSAGES if max_messages is None else max_messages,
        envelope.DEFAULT_CACHE_MAX_BYTES if max_bytes is None else max_bytes,
        DEFAULT_CACHE_CAPACITY if capacity is None else capacity)
