"""A small progress display: units done, rate and time left, on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """'1h02m', '3m05s' or '12s'."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.0f}s"


class Progress:
    """Prints 'label: done/total units [rate, ETA]'; redraws in place on a terminal."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.started = time.perf_counter()
        self._last_print = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.detail = ""

    def advance(self, count: int, *, detail: str = "") -> None:
        """Record ``count`` more units done and redraw (at most every 5 s off a terminal);
        ``detail`` is appended to the line (a cluster's rate per worker)."""
        self.done += count
        self.detail = detail
        now = time.perf_counter()
        if not self.enabled:
            return
        if self._tty or now - self._last_print >= 5.0 or self.done >= self.total:
            self._last_print = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = format_seconds(left) if left != float("inf") else "?"
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"{self.label}: [{bar}] {self.done}/{self.total} units [{rate:.2f} units/s, {eta} left]"
        )
        if self.detail:
            line += f" ({self.detail})"
        end = "" if self._tty and self.done < self.total else "\n"
        prefix = "\r" if self._tty else ""
        self.stream.write(prefix + line + end)
        self.stream.flush()
