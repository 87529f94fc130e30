"""A progress bar on stderr for long work. rich is imported only when a bar is actually shown.

``advance`` is called once per batch the library reads (several MiB), or once per finished file when files
run in worker processes, so counting adds no per-byte work. With ``--progress`` the bar shows at once; in
automatic mode (stderr is a terminal) it appears only when the work has taken longer than ``DELAY`` seconds.
``--progress`` with stderr not a terminal (a CI log) prints a plain line every ``PLAIN_EVERY`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]

DELAY = 0.5
PLAIN_EVERY = 2.0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    def __init__(self, label: str, total: int | None, show: bool | None, files: int = 1) -> None:
        """``show``: True (--progress), False (--no-progress) or None (when stderr is a terminal)."""
        self.label = label
        self.total = total
        self.files = files
        terminal = _stderr_is_terminal()
        self.enabled = terminal if show is None else show
        self.plain = self.enabled and not terminal
        self.done = 0
        self.files_done = 0
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar: Any = None
        self._task: Any = None
        if self.enabled and show is True and not self.plain:
            self._show()

    def _description(self) -> str:
        if self.files > 1:
            return f"{self.label} {self.files_done}/{self.files} files"
        return self.label

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if self.total is not None:
            columns.append(TaskProgressColumn())
        columns += [DownloadColumn(), TransferSpeedColumn()]
        if self.total is not None:
            columns.append(TimeRemainingColumn())
        self._bar = RichProgress(*columns, console=Console(stderr=True), transient=True,
                                 redirect_stdout=False)
        self._task = self._bar.add_task(self._description(), total=self.total, completed=self.done)
        self._bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.plain:
            now = time.monotonic()
            if now - self._last_line >= PLAIN_EVERY:
                self._last_line = now
                self._line(now)
        elif self.enabled and time.monotonic() - self._start >= DELAY:
            self._show()

    def _line(self, now: float) -> None:
        mib = self.done / 2**20
        rate = mib / max(now - self._start, 1e-9)
        share = f" of {self.total / 2**20:.1f} MiB ({100 * self.done / self.total:.0f}%)" if self.total else ""
        sys.stderr.write(f"envelope: {self._description()}: {mib:.1f} MiB{share}, {rate:.1f} MiB/s\n")
        sys.stderr.flush()

    def file_done(self, size: int = 0) -> None:
        """One file finished; ``size`` is added when its bytes were not reported by ``advance``."""
        self.files_done += 1
        if self._bar is not None:
            self._bar.update(self._task, description=self._description())
        self.advance(size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.plain and self.done:
            self.plain = False
            self._line(time.monotonic())
