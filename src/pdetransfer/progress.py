"""Progress reporting that reads well both in a terminal and in a Snakemake/SLURM log file.

A terminal gets a live tqdm bar; a log file (not a TTY) gets one plain line every
``interval`` seconds with count, rate and ETA, because carriage-return bars turn log files into
unreadable single lines.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Count units of work and report rate and ETA on ``stream`` (stderr by default)."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        interval: float = 10.0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = interval
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.count = 0
        self.start = time.perf_counter()
        self._last = self.start
        self._bar = None
        if enabled and self.stream.isatty():
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False)

    def update(self, n: int = 1, **postfix: object) -> None:
        """Record ``n`` more units done; ``postfix`` values (e.g. loss) are shown alongside."""
        self.count += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval or self.count >= self.total:
            self._last = now
            self.stream.write(self.line(now, postfix) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None, postfix: dict[str, object] | None = None) -> str:
        """One human-readable status line: count/total, percent, rate and ETA."""
        now = time.perf_counter() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        remaining = (self.total - self.count) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.count / self.total if self.total else 100.0
        extra = "".join(f" {k}={_fmt(v)}" for k, v in (postfix or {}).items())
        return (
            f"{self.desc}: {self.count}/{self.total} ({pct:.0f}%) "
            f"{rate:.3g} {self.unit}/s elapsed {_hms(elapsed)} ETA {_hms(remaining)}{extra}"
        )

    def close(self) -> None:
        """Finish the bar (terminal) or print a final line (log)."""
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.count < self.total:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hms(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    whole = round(seconds)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
