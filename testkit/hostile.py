"""Hostile headers and bodies (issue 7): messages declaring something huge, and how to run one.

Each case is a message *declaring* something large (65,535 EDKs, 65,535-byte EDK fields, a 64 KiB context,
frame length 2^32 - 1, a non-framed body of 2^36 bytes, frames that stop or skip numbers) and is generated
lazily by :class:`~testkit.sources.HostileSource`, so declaring 12 GB costs nothing. Decrypt runs with the
default limits (envelope.DEFAULT_MAX_*) unless the case raises one on purpose.

:func:`run_case` decrypts a case in this process (tests/api/test_hardening_limits.py checks what is
deterministic: the error class, the bytes read, the keyring calls and the Python allocations);
:func:`measure` runs it in a fresh interpreter (``python -m testkit.hostile --child NAME``) and adds its peak
RSS, with the growth over the same process just before the decrypt (interpreter, imports and the source
already in place). ``python -m benchmarks.hostile`` prints the table of every case.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envelope import _format as fmt
from envelope._suites import SUITES

from .sources import HostileSource

__all__ = ["CASES", "Case", "CountingKeyring", "measure", "run_case"]

MiB = 1024 * 1024


@dataclass
class CountingKeyring:
    """Counts unwrap calls of the keyring it wraps: a refusal "before any key is used" must leave it at 0."""

    inner: Any
    calls: int = 0

    def wrap(self, suite: Any, context: Any, data_key: Any = None) -> Any:
        return self.inner.wrap(suite, context, data_key)

    def unwrap(self, suite: Any, context: Any, edks: Any) -> bytes:
        self.calls += 1
        return bytes(self.inner.unwrap(suite, context, edks))


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    make: Callable[[], HostileSource]
    error: str  # the envelope.errors class decrypt must raise
    max_read: int  # bytes decrypt may read before it refuses
    keyring_called: bool  # whether a keyring may be asked at all
    options: Mapping[str, Any] = field(default_factory=dict)  # decrypt keyword arguments
    max_python: int | None = 8 * MiB  # peak Python allocations (tracemalloc) the tests allow; None: RSS only


# ---------------------------------------------------------------------------------------------------------
# message pieces (esdk-format.md sections 1.2, 3.1, 3.2, 7.1), written with envelope._format

_MESSAGE_ID = bytes(range(32))


def _v2_header(context: Mapping[str, str], edk_count: int, frame_length: int) -> tuple[bytes, bytes]:
    """A framed v2 header of suite 0x0478 around its EDK list: (version to EDK count, content type to the
    header tag). The EDKs go between, as segments; the tag is garbage: no key is needed to refuse these."""
    edk = fmt.EncryptedDataKey("", b"", b"")
    header = fmt.Header(2, SUITES[0x0478], _MESSAGE_ID, context, (edk,), fmt.CONTENT_FRAMED, frame_length,
                        b"\x11" * fmt.COMMITMENT_LENGTH)
    data = fmt.serialize_header_body(header) + b"\x22" * fmt.TAG_LENGTH
    fields = {name: (start, end) for name, start, end in fmt.header_fields(data)}
    count_at, _ = fields["encrypted data key count"]
    tail_at, _ = fields["content type"]
    return data[:count_at] + fmt.U16.pack(edk_count), data[tail_at:]


def _edk(provider_id: str, info_length: int, ciphertext_length: int) -> bytes:
    return fmt.EncryptedDataKey(provider_id, b"i" * info_length, b"c" * ciphertext_length).serialize()


def _context(pairs: int, value_length: int) -> dict[str, str]:
    return {f"{i:04x}": "v" * value_length for i in range(pairs)}


def _garbage(total: int) -> tuple[bytes, int]:
    return b"\x5a" * 65536, total // 65536


def _valid(frame_length: int, *, non_framed: bool = False) -> bytes:
    """A real header (and, for non-framed, the body IV) under testkit.vectors.KEYRING, up to the first body byte."""
    from .vectors import assemble

    message = assemble(0x0478, [b"x"], frame_length=frame_length, non_framed=non_framed)
    _, _, used = fmt.parse_header(message)
    return message[:used]


def _non_framed_length(length: int) -> bytes:
    """A non-framed body's IV and content length (section 3.2)."""
    return bytes(fmt.IV_LENGTH) + fmt.U64.pack(length)


def _frames(frame_length: int, numbers: Sequence[int]) -> list[tuple[bytes, int]]:
    return [(fmt.serialize_frame(fmt.Frame(n, bytes(fmt.IV_LENGTH), b"\x33" * frame_length,
                                           bytes(fmt.TAG_LENGTH), False)), 1) for n in numbers]


def _cases() -> list[Case]:
    body = _garbage(1 << 40)  # 1 TiB of declared body after each header
    edk6 = _edk("", 0, 0)
    big = _edk("p" * 65535, 65535, 65535)
    other = (_edk("other", 4, 48), 1)

    def framed(context: Mapping[str, str], edks: Sequence[tuple[bytes, int]], frame_length: int = 4096
               ) -> list[tuple[bytes, int]]:
        head, tail = _v2_header(context, sum(times for _, times in edks), frame_length)
        return [(head, 1), *edks, (tail, 1), body]

    return [
        Case("edk-count-65535", "65,535 EDKs of 6 bytes (393 KB), default limit 256: refused at the count",
             lambda: HostileSource(framed({}, [(edk6, 65535)])), "PolicyError", 4096, False),
        Case("edk-count-65535-allowed", "the same read with max_encrypted_data_keys=65535: parsed, no key matches",
             lambda: HostileSource(framed({}, [(edk6, 65535)])),
             "KeyringError", 2 * (65535 * 6 + 4096), True, {"max_encrypted_data_keys": 65535}, None),
        Case("edk-fields-65535-x256", "256 EDKs with three 65,535-byte fields each (50 MB of header): refused at "
             "the 1 MiB header limit", lambda: HostileSource(framed({}, [(big, 256)])),
             "PolicyError", MiB + 4096, False),
        Case("edk-fields-65535-x65535", "65,535 such EDKs (12.9 GB of header), no EDK limit: the header limit "
             "still stops it", lambda: HostileSource(framed({}, [(big, 65535)])),
             "PolicyError", MiB + 4096, False, {"max_encrypted_data_keys": None}),
        Case("context-64k", "a 65,535-byte context (one pair) and an EDK for another key",
             lambda: HostileSource(framed(_context(1, 65535 - 2 - 2 - 4 - 2), [other])),
             "KeyringError", 2 * (65535 + 4096), True),
        Case("context-64k-8190-pairs", "a 65,520-byte context of 8,190 pairs",
             lambda: HostileSource(framed(_context(8190, 0), [other])),
             "KeyringError", 2 * (65535 + 4096), True),
        Case("frame-length-4294967295", "frame length 2^32 - 1, then 1 TiB: refused after the header, before "
             "any key", lambda: HostileSource(framed({}, [other], 2**32 - 1)),
             "PolicyError", 4096, False),
        Case("non-framed-2-36", "a valid non-framed header whose body says 2^36 bytes (above 2^36 - 32)",
             lambda: HostileSource([(_valid(0, non_framed=True), 1), (_non_framed_length(2**36), 1), body]),
             "FormatError", 8192, True),
        Case("non-framed-2-36-minus-32", "a valid non-framed header whose body says 2^36 - 32 bytes: above the "
             "64 MiB block limit", lambda: HostileSource([(_valid(0, non_framed=True), 1),
                                                          (_non_framed_length(2**36 - 32), 1), body]),
             "PolicyError", 8192, True),
        Case("non-framed-2-36-minus-32-allowed", "the same with max_frame_length=2^36 and 16 MiB of body before "
             "the input ends: memory follows the bytes that arrive, not the 64 GiB declared",
             lambda: HostileSource([(_valid(0, non_framed=True), 1), (_non_framed_length(2**36 - 32), 1),
                                    (b"\x5a" * 65536, 256)]),
             "TruncatedError", 16 * MiB + 8192, True, {"max_frame_length": 2**36}, 40 * MiB),
        Case("frame-length-64mib-truncated", "a valid header with frame length 64 MiB (the limit) and 16 MiB of "
             "a first frame before the input ends",
             lambda: HostileSource([(_valid(64 * MiB), 1), (fmt.SEQUENCE_NUMBER.pack(1) + bytes(fmt.IV_LENGTH), 1),
                                    (b"\x5a" * 65536, 256)]),
             "TruncatedError", 16 * MiB + 8192, True, {}, 40 * MiB),
        Case("sequence-gap", "a valid header, frames of 64 KiB numbered 1, 2, 4: refused before the third "
             "frame's tag is checked", lambda: HostileSource([(_valid(65536), 1), *_frames(65536, [1, 2, 4]),
                                                               body]),
             "FormatError", 4 * MiB + 8 * 65536, True),
        Case("sequence-wrap", "a valid header and a first frame numbered 0 (a wrapped 32-bit counter)",
             lambda: HostileSource([(_valid(65536), 1), *_frames(65536, [0]), body]),
             "FormatError", 4 * MiB + 8 * 65536, True),
    ]


CASES = _cases()


def run_case(case: Case) -> dict[str, Any]:
    """Decrypt the case's stream into a null sink; return what happened (in this process)."""
    import envelope

    from .vectors import KEYRING

    keyring = CountingKeyring(KEYRING)
    source = case.make()
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        envelope.decrypt_stream(source, _Null(), keyring=keyring, threads=0, **case.options)  # type: ignore[arg-type]
    except envelope.EnvelopeError as exc:
        error = exc
    return {"case": case.name, "input": source.declared, "read": source.read_bytes,
            "error": type(error).__name__ if error else None, "message": str(error) if error else "",
            "keyring_calls": keyring.calls, "seconds": round(time.perf_counter() - started, 4)}


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def _child(name: str) -> None:
    case = next(c for c in CASES if c.name == name)
    import envelope  # noqa: F401 - imports are part of the baseline, not of the case

    case.make()  # warm the builders (they import the format layer and the test key) before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_case(case)
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["growth_kib"] = result["maxrss_kib"] - before
    sys.stdout.write(json.dumps(result) + "\n")


def measure(name: str) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return its result with peak RSS figures."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "testkit.hostile", "--child", name], capture_output=True,  # noqa: S603
                          timeout=300, cwd=root, check=True)
    return dict(json.loads(proc.stdout.decode().splitlines()[-1]))


if __name__ == "__main__":  # python -m testkit.hostile --child NAME: what measure() runs
    if sys.argv[1:2] != ["--child"] or len(sys.argv) != 3:
        sys.exit("usage: python -m testkit.hostile --child CASE (python -m benchmarks.hostile prints every case)")
    _child(sys.argv[2])
