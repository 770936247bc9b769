"""Log lines that a caller can trigger at will, bounded: each distinct one once, or a few per minute.

A request the kubelet (or anyone with the socket) sends can make the host log; a
flood of them must not flood the log, and must not hide the first of each kind.
"""

from __future__ import annotations

import logging
import threading
import time


class LogOnce:
    """Log each distinct message once, until :meth:`forget` (the driver answered well again)."""

    remembered = 256  # distinct messages kept; past that all are forgotten and logged afresh

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._said: set[str] = set()

    def __call__(self, level: int, message: str) -> None:
        if message in self._said:
            return
        if len(self._said) >= self.remembered:
            self._said.clear()
        self._said.add(message)
        self._log.log(level, message)

    def forget(self) -> None:
        self._said.clear()


class RateLimitedLog:
    """At most ``per_window`` lines every ``window_s`` seconds; what was held back is counted in one line
    when the next window opens (with the next message, so nothing waits on a timer)."""

    def __init__(self, log: logging.Logger, per_window: int = 10, window_s: float = 60.0) -> None:
        self._log, self.per_window, self.window_s = log, per_window, window_s
        self._lock = threading.Lock()
        self._window_start = -window_s
        self._logged = self._held = 0

    def __call__(self, level: int, message: str, **fields: str) -> None:
        """Log ``message``; ``fields`` go to the record (JSON logs show driver, resource, device, code)."""
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.window_s:
                held, self._held = self._held, 0
                self._window_start, self._logged = now, 0
                if held:
                    self._log.log(level, "%d more like it were not logged in the last %g s", held, self.window_s)
            if self._logged >= self.per_window:
                self._held += 1
                return
            self._logged += 1
        self._log.log(level, message, extra=fields)
