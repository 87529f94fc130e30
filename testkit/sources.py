"""Binary sources that misbehave on purpose: a slow pipe, and a stream that declares far more than it holds."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

__all__ = ["HostileSource", "Trickle"]


class Trickle(io.RawIOBase):
    """A source that returns at most ``step`` bytes per read (a slow pipe)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._step, len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


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
