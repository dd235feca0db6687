"""A progress bar on stderr for long reads (``models backtest``, ``train --from-kafka``).

On a terminal it redraws one line; elsewhere (a log, a pipe) it prints a line at most every
``EVERY_S`` seconds and at the end, so a log shows that the work moves without a flood.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
EVERY_S = 5.0


class Bar:
    def __init__(self, what: str, out: TextIO | None = None):
        self.what = what
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._done = self._total = 0

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        now = time.monotonic()
        if now - self._last >= (0.2 if self.tty else EVERY_S):
            self._last = now
            self._draw()

    def _draw(self, end: str = "") -> None:
        done, total = self._done, max(self._total, 1)
        share = min(1.0, done / total)
        spent = time.monotonic() - self.started
        rate = done / spent if spent > 0 else 0.0
        left = (total - done) / rate if rate > 0 else 0.0
        bar = "#" * round(share * WIDTH)
        line = (f"{self.what} [{bar:<{WIDTH}}] {share:4.0%} {done:,}/{self._total:,} records, "
                f"{rate:,.0f}/s, {spent:.0f} s, about {left:.0f} s left")
        self.out.write(("\r" + line + end) if self.tty else line + "\n")
        self.out.flush()

    def close(self) -> None:
        """The last line, complete."""
        self._draw("\n" if self.tty else "")
