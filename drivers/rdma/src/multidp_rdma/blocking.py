"""A daemon thread that blocks on its event source and a stop pipe: no timed wake-ups while idle.

The RDMA driver's event sources (kernel uevents, rtnetlink) each read one socket in
``poll()`` without a timeout; :meth:`BlockingReader.stop` writes to the pipe the
thread also polls, which ends the wait at once.
"""

from __future__ import annotations

import os
import threading


class BlockingReader:
    """Subclasses implement :meth:`_run`, polling ``self._stop_read`` beside their own source."""

    def __init__(self, name: str) -> None:
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            os.write(self._stop_write, b"x")
        except OSError:
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        for fd in (self._stop_read, self._stop_write):
            try:
                os.close(fd)
            except OSError:
                pass

    def _run(self) -> None:
        raise NotImplementedError
