"""Small jobs run after a delay, all on one thread.

Endpoints put off work that must not compete with a registration (stopping
the server a kubelet restart left behind, starting a spare one). A
``threading.Timer`` per job would start a thread on the hot path, and starting
a thread waits until it runs: under load that costs milliseconds.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Later:
    """Runs ``fn()`` about ``delay`` seconds from now, in order of due time."""

    def __init__(self, name: str = "later") -> None:
        self._name = name
        self._jobs: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()  # ties run in the order they were asked for
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call(self, delay: float, fn: Callable[[], object]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._order), fn))
            if self._thread is None:  # started with the first job, not on the hot path again
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, wait: float = 1.0) -> None:
        """Drop what has not run yet; wait up to ``wait`` seconds for a job running now."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._jobs or self._jobs[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._jobs else self._jobs[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._jobs)
            try:
                fn()
            except Exception:  # noqa: BLE001 - one failed job must not stop the others
                log.exception("%s: a deferred job failed", self._name)
