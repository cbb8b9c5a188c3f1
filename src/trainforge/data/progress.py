"""Byte counting and throttled progress messages for staging."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def human(n: float) -> str:
    """412 MiB, 1.0 GiB, 12 KiB, 800 B — the style of the status messages."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


class Progress:
    """Thread-safe byte counter that calls ``report(message)`` at most every ``interval`` seconds."""

    def __init__(self, total: int, report: Callable[[str], None], *, interval: float = 0.5,
                 what: str = "Downloading input data") -> None:
        self.total = total
        self.done = 0
        self.report = report
        self.interval = interval
        self.what = what
        self._lock = threading.Lock()
        self._last = 0.0

    def message(self) -> str:
        pct = int(self.done * 100 / self.total) if self.total else 100
        return f"{self.what}: {human(self.done)} of {human(self.total)} ({pct}%)"

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
            msg = self.message()
        self.report(msg)

    def finish(self) -> None:
        with self._lock:
            self.done = max(self.done, self.total)
            msg = self.message()
        self.report(msg)
