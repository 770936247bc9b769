"""Counters the gRPC paths keep for metrics, without importing a metrics library.

Allocate records a call, its outcome and its duration here (about a
microsecond); the Prometheus collector in :mod:`multidp.observe.metrics` reads them at
scrape time, so a host without ``--metrics-address`` never imports
prometheus-client and pays nothing more.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter

# Allocate durations (seconds): the kubelet's call takes 0.3-1 ms when all is well.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ResourceStats:
    """Allocate calls of one resource: how many, which failed with what code, how long they took."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.allocations = 0
        self.errors: Counter[str] = Counter()
        self.bucket_counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0

    def record(self, seconds: float, error_code: str | None = None) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            self.allocations += 1
            self.bucket_counts[index] += 1
            self.duration_sum += seconds
            if error_code is not None:
                self.errors[error_code] += 1

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound, count) pairs as Prometheus wants them, and the sum."""
        with self._lock:
            counts, total = list(self.bucket_counts), self.duration_sum
        buckets, running = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, total
