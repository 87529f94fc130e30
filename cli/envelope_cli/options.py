"""Command-line values -> the library's typed values, in one place: context pairs, suites, policies, seconds,
cache limits. Each conversion refuses what it cannot use with a :class:`envelope.UsageError` naming the option.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envelope import AlgorithmSuite, CommitmentPolicy
    from envelope.batch.jobs import CacheSettings

__all__ = ["DEFAULT_CACHE_CAPACITY", "cache_settings", "check_inputs_are_not_pairs", "decrypt_pairs", "frame_size",
           "in_range", "pairs", "part_size", "policy", "seconds", "ssm_tier", "suite", "version_stage"]

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


def decrypt_pairs(values: list[str] | None) -> tuple[dict[str, str], dict[str, str | None]]:
    """``decrypt -c`` / ``rewrap -c``: (reproduced pairs from KEY=VALUE, required keys from KEY alone: the message
    must store them, with any value, as the ESDK CLI allows)."""
    from envelope import UsageError

    with_values = [item for item in values or [] if "=" in item]
    keys = [item for item in values or [] if "=" not in item]
    reproduced = pairs(with_values)
    required: dict[str, str | None] = {}
    for key in keys:
        if not key:
            raise UsageError("-c needs KEY=VALUE, or KEY alone to require the key with any value")
        required[key] = None
    return reproduced, required


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
    if not 0 < value < float("inf"):  # also refuses nan
        raise UsageError(f"--cache-max-age {text!r}: must be more than 0 seconds and finite, such as 300 or 0.5")
    return value


def in_range(option: str, value: int | None, low: int, high: int, high_text: str) -> int | None:
    """A whole-number option within [low, high] (typer checks only that it is a number)."""
    from envelope import UsageError

    if value is not None and not low <= value <= high:
        raise UsageError(f"{option} {value}: must be between {low} and {high_text}")
    return value


def frame_size(value: int | None, *, allow_large: bool) -> int | None:
    """``--frame-size``: at most 2^31 - 1 (the format's limit), and above what envelope's own decrypt reads by
    default (64 MiB) only with ``--allow-large-frames``."""
    import envelope

    in_range("--frame-size", value, 1, 2**31 - 1, "2^31 - 1 bytes")
    limit = envelope.DEFAULT_MAX_FRAME_LENGTH
    if value is not None and value > limit and not allow_large:
        raise envelope.UsageError(
            f"--frame-size {value} is above {limit // 2**20} MiB, the largest frame envelope decrypt reads by "
            f"default: readers would need --max-frame-length {value} and hold each frame in memory; add "
            "--allow-large-frames if you mean it")
    return value


def check_inputs_are_not_pairs(inputs: list[str] | None, context: list[str] | None) -> None:
    """``-c a=b c=d`` (the ESDK CLI's spelling) makes ``c=d`` an INPUT: say to repeat -c instead."""
    import os

    from envelope import UsageError

    if not context:
        return
    for item in inputs or []:
        key, equals, _ = item.partition("=")
        if equals and key and "/" not in key and os.sep not in key and not os.path.lexists(item):
            raise UsageError(f"input {item!r} does not exist and looks like a context pair: repeat -c for each "
                             f"pair (-c {context[-1]} -c {item})")


def cache_settings(max_age: str | None, max_messages: int | None, max_bytes: int | None,
                   capacity: int | None) -> CacheSettings | None:
    """``--cache-*`` -> the cache settings, with the library's defaults for limits not given; None (no cache)
    unless ``--cache-max-age`` is given."""
    import envelope
    from envelope.batch.jobs import CacheSettings

    age = seconds(max_age)
    if age is None:
        given = [name for name, value in (("--cache-max-messages", max_messages), ("--cache-max-bytes", max_bytes),
                                          ("--cache-capacity", capacity)) if value is not None]
        if given:
            raise envelope.UsageError(f"{given[0]} sets a limit of the data-key cache, which --cache-max-age "
                                      "SECONDS turns on")
        return None
    in_range("--cache-max-messages", max_messages, 1, envelope.DEFAULT_CACHE_MAX_MESSAGES, "2^32")
    in_range("--cache-max-bytes", max_bytes, 0, envelope.DEFAULT_CACHE_MAX_BYTES, "2^63 - 1")
    return CacheSettings(
        age, envelope.DEFAULT_CACHE_MAX_MESSAGES if max_messages is None else max_messages,
        envelope.DEFAULT_CACHE_MAX_BYTES if max_bytes is None else max_bytes,
        DEFAULT_CACHE_CAPACITY if capacity is None else capacity)


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}


def part_size(text: str | None) -> int | None:
    """``--part-size``: bytes, or a number with KiB / MiB / GiB (K, M, G: the same), between the S3 limits
    (``envelope.s3.MIN_PART_SIZE``, 5 MiB, and ``MAX_PART_SIZE``, 5 GiB); None: the library's default."""
    if text is None:  # before the imports: a run without s3:// never loads envelope.s3
        return None
    import re

    import envelope.s3
    from envelope import UsageError

    match = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise UsageError(f"--part-size {text!r}: expected bytes or a size such as 8MiB or 16MiB")
    value = int(match.group(1)) * unit
    low, high = envelope.s3.MIN_PART_SIZE, envelope.s3.MAX_PART_SIZE
    if not low <= value <= high:
        shown = f"{low // 2**20} MiB" if low % 2**20 == 0 else f"{low} bytes"
        raise UsageError(f"--part-size {text!r}: S3 parts must be at least {shown} (S3's minimum for every part "
                         f"but the last) and at most {high // 2**30} GiB")
    return value


def ssm_tier(text: str | None) -> str:
    """``--ssm-tier``: standard (the default) or advanced."""
    if text is None:  # the default, without loading envelope.aws (with envelope.s3: ~6 ms a run, measured)
        return "standard"
    import envelope.aws
    from envelope import UsageError

    tier = "standard" if text is None else text.lower()
    if tier not in envelope.aws.SSM_TIERS:
        raise UsageError(f"--ssm-tier {text!r}: use standard (4,096 characters) or advanced (8,192)")
    return tier


def version_stage(text: str | None) -> str | None:
    """``--version-stage``: 1 to 256 printable characters (Secrets Manager's staging labels)."""
    from envelope import UsageError

    if text is not None and not (1 <= len(text) <= 256 and text.isprintable()):
        raise UsageError("--version-stage: a version stage is 1 to 256 printable characters, such as AWSPREVIOUS")
    return text
