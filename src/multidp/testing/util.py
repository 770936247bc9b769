"""Small helpers for tests: waiting for state without a condition, short socket dirs, percentiles."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.005) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` (for state without a condition)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def short_socket_dir(prefix: str = "mdp") -> Path:
    """A fresh directory with a short path (unix socket paths stop at 107 bytes)."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))



def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``values``: the nearest sample, none interpolated."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
