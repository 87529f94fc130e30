"""Hostile headers and bodies (issue 7): how much decrypt reads, allocates and takes before it refuses them.

    python -m benchmarks.hostile            # every case, each in a fresh interpreter; prints a table
    python -m benchmarks.hostile --json     # the same as JSON lines
    python -m benchmarks.hostile --case edk-fields-65535-x256

Each case is a message *declaring* something large (65,535 EDKs, 65,535-byte EDK fields, a 64 KiB context,
frame length 2^32 - 1, a non-framed body of 2^36 bytes, frames that stop or skip numbers) and is generated
lazily by :class:`HostileSource`, so declaring 12 GB costs nothing. Decrypt runs with the default limits
(envelope.DEFAULT_MAX_*) unless the case raises one on purpose. Peak RSS is the child's own ``ru_maxrss``,
reported with its growth over the same process just before the decrypt (interpreter, imports and the source
already in place). tests/api/test_hardening_limits.py runs the same cases in-process and checks what is
deterministic: the error class, the bytes read, the keyring calls and the Python allocations (tracemalloc).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "Case", "CountingKeyring", "HostileSource", "run_case"]

MiB = 1024 * 1024


class HostileSource(io.RawIOBase):
    """A binary stream made of (bytes, repeat) segments, generated as it is read. ``declared`` is its total
    length, ``read_bytes`` what was served so far.

    Nothing is materialised: a segment repeated 65,535 times is one small ``bytes``.
    """

    def __init__(self, segments: Sequence[tuple[bytes, int]]) -> None:
        self._segments = [(bytes(chunk), times) for chunk, times in segments if chunk and times]
        self.declared = sum(len(chunk) * times for chunk, times in self._segments)
        self.read_bytes = 0
        self._index = 0  # segment
        self._pos = 0  # offset inside the current segment's total

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        n = 0
        while n < len(view) and self._index < len(self._segments):
            chunk, times = self._segments[self._index]
            total = len(chunk) * times
            if self._pos >= total:
                self._index += 1
                self._pos = 0
                continue
            offset = self._pos % len(chunk)
            take = min(len(chunk) - offset, len(view) - n, total - self._pos)
            view[n:n + take] = chunk[offset:offset + take]
            n += take
            self._pos += take
        self.read_bytes += n
        return n


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
# message pieces (esdk-format.md sections 1.2, 3.1, 3.2, 7.1)

_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_MESSAGE_ID = bytes(range(32))


def _v2_head(context_aad: bytes, edk_count: int) -> bytes:
    """Version 2, suite 0x0478, message ID, AAD, EDK count (the EDKs follow)."""
    return b"\x02\x04\x78" + _MESSAGE_ID + _U16.pack(len(context_aad)) + context_aad + _U16.pack(edk_count)


def _edk(provider_id: bytes, info_length: int, ciphertext_length: int) -> bytes:
    return (_U16.pack(len(provider_id)) + provider_id + _U16.pack(info_length) + b"i" * info_length
            + _U16.pack(ciphertext_length) + b"c" * ciphertext_length)


def _v2_tail(frame_length: int, content_type: int = 2) -> bytes:
    """Content type, frame length, commitment, header tag (the tag is garbage: no key is needed to refuse)."""
    return bytes((content_type,)) + _U32.pack(frame_length) + b"\x11" * 32 + b"\x22" * 16


def _context(pairs: int, value_length: int) -> bytes:
    out = [_U16.pack(pairs)]
    for i in range(pairs):
        key = b"%04x" % i
        out += [_U16.pack(len(key)), key, _U16.pack(value_length), b"v" * value_length]
    return b"".join(out)


def _garbage(total: int) -> tuple[bytes, int]:
    return b"\x5a" * 65536, total // 65536


def _valid(frame_length: int, *, non_framed: bool = False) -> bytes:
    """A real header (and, for non-framed, the body IV) under fuzz.vectors.KEYRING, up to the first body byte."""
    from envelope import _format as fmt
    from fuzz.vectors import assemble

    message = assemble(0x0478, [b"x"], frame_length=frame_length, non_framed=non_framed)
    _, _, used = fmt.parse_header(message)
    return message[:used]


def _frames(frame_length: int, numbers: Sequence[int]) -> list[tuple[bytes, int]]:
    return [(_U32.pack(n) + bytes(12) + b"\x33" * frame_length + bytes(16), 1) for n in numbers]


def _cases() -> list[Case]:
    body = _garbage(1 << 40)  # 1 TiB of declared body after each header
    edk6 = _edk(b"", 0, 0)
    big = _edk(b"p" * 65535, 65535, 65535)
    return [
        Case("edk-count-65535", "65,535 EDKs of 6 bytes (393 KB), default limit 256: refused at the count",
             lambda: HostileSource([(_v2_head(b"", 65535), 1), (edk6, 65535), (_v2_tail(4096), 1), body]),
             "PolicyError", 4096, False),
        Case("edk-count-65535-allowed", "the same read with max_encrypted_data_keys=65535: parsed, no key matches",
             lambda: HostileSource([(_v2_head(b"", 65535), 1), (edk6, 65535), (_v2_tail(4096), 1), body]),
             "KeyringError", 2 * (65535 * 6 + 4096), True, {"max_encrypted_data_keys": 65535}, None),
        Case("edk-fields-65535-x256", "256 EDKs with three 65,535-byte fields each (50 MB of header): refused at "
             "the 1 MiB header limit", lambda: HostileSource([(_v2_head(b"", 256), 1), (big, 256),
                                                              (_v2_tail(4096), 1), body]),
             "PolicyError", MiB + 4096, False),
        Case("edk-fields-65535-x65535", "65,535 such EDKs (12.9 GB of header), no EDK limit: the header limit "
             "still stops it", lambda: HostileSource([(_v2_head(b"", 65535), 1), (big, 65535),
                                                     (_v2_tail(4096), 1), body]),
             "PolicyError", MiB + 4096, False, {"max_encrypted_data_keys": None}),
        Case("context-64k", "a 65,535-byte context (one pair) and an EDK for another key",
             lambda: HostileSource([(_v2_head(_context(1, 65535 - 2 - 2 - 4 - 2), 1), 1),
                                    (_edk(b"other", 4, 48), 1), (_v2_tail(4096), 1), body]),
             "KeyringError", 2 * (65535 + 4096), True),
        Case("context-64k-8190-pairs", "a 65,520-byte context of 8,190 pairs",
             lambda: HostileSource([(_v2_head(_context(8190, 0), 1), 1), (_edk(b"other", 4, 48), 1),
                                    (_v2_tail(4096), 1), body]),
             "KeyringError", 2 * (65535 + 4096), True),
        Case("frame-length-4294967295", "frame length 2^32 - 1, then 1 TiB: refused after the header, before "
             "any key", lambda: HostileSource([(_v2_head(b"", 1), 1), (_edk(b"other", 4, 48), 1),
                                                (_v2_tail(2**32 - 1), 1), body]),
             "PolicyError", 4096, False),
        Case("non-framed-2-36", "a valid non-framed header whose body says 2^36 bytes (above 2^36 - 32)",
             lambda: HostileSource([(_valid(0, non_framed=True), 1), (bytes(12) + struct.pack(">Q", 2**36), 1),
                                    body]),
             "FormatError", 8192, True),
        Case("non-framed-2-36-minus-32", "a valid non-framed header whose body says 2^36 - 32 bytes: above the "
             "64 MiB block limit", lambda: HostileSource([(_valid(0, non_framed=True), 1),
                                                          (bytes(12) + struct.pack(">Q", 2**36 - 32), 1), body]),
             "PolicyError", 8192, True),
        Case("non-framed-2-36-minus-32-allowed", "the same with max_frame_length=2^36 and 16 MiB of body before "
             "the input ends: memory follows the bytes that arrive, not the 64 GiB declared",
             lambda: HostileSource([(_valid(0, non_framed=True), 1),
                                    (bytes(12) + struct.pack(">Q", 2**36 - 32), 1), (b"\x5a" * 65536, 256)]),
             "TruncatedError", 16 * MiB + 8192, True, {"max_frame_length": 2**36}, 40 * MiB),
        Case("frame-length-64mib-truncated", "a valid header with frame length 64 MiB (the limit) and 16 MiB of "
             "a first frame before the input ends",
             lambda: HostileSource([(_valid(64 * MiB), 1), (_U32.pack(1) + bytes(12), 1), (b"\x5a" * 65536, 256)]),
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
    from fuzz.vectors import KEYRING

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
    proc = subprocess.run([sys.executable, "-m", "benchmarks.hostile", "--child", name], capture_output=True,
                          timeout=300, cwd=root, check=True)
    return dict(json.loads(proc.stdout.decode().splitlines()[-1]))


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    names = args.case or [c.name for c in CASES]
    if not args.json:
        print(f"{'case':34} {'input':>10} {'read':>10} {'refused with':14} {'keyring':>7} "
              f"{'peak RSS':>9} {'growth':>8} {'time':>7}")
    for name in names:
        r = measure(name)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['case']:34} {_size(r['input']):>10} {_size(r['read']):>10} {r['error'] or 'nothing':14} "
                  f"{r['keyring_calls']:>7} {r['maxrss_kib'] / 1024:>6.1f} MiB {r['growth_kib'] / 1024:>5.1f} MiB "
                  f"{r['seconds']:>6.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
