"""Trying again to bring up a driver whose creation failed: growing delays, all on one timer thread.

A driver whose creation raises (NVML not loaded yet because the GPU driver container
finishes after the pod starts, a device node not there yet, a hook that timed out) is
tried again after 1 s, then 2, 4, ... up to 5 min (each with up to 10 % jitter, so that
a fleet restarted together does not retry in step). A try re-runs the host's whole
bring-up path, under the same lock as start, reload and label changes, so it never
races them; each of those bring-ups cancels the pending try of the drivers it runs.

Two failures are not retried, as they cannot fix themselves: a plugin that cannot be
loaded (an import error is kept by the registry; it takes a new image) and a config
error (it takes a reload or a node label change, which bring the driver up again).

A pending try costs one entry on one :class:`~multidp.serving.later.Later` thread,
shared by every driver; a cancelled one is dropped when it comes due.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import msgspec

from multidp.errors import ConfigError, PluginLoadError
from multidp.plugins.factory import FAILED, DriverStatus
from multidp.serving.later import Later

log = logging.getLogger(__name__)

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
JITTER = 0.1  # each delay is drawn from [delay * (1 - JITTER), delay]

NOT_RETRIED_LOAD = "not retried: a plugin that cannot be loaded needs a new image"
NOT_RETRIED_CONFIG = "not retried until the config or the node's labels change"


class FailedStatus(DriverStatus):
    """A failed driver: how many tries in a row failed, and when the next one is (None: not retried)."""

    attempts: int = 0
    next_try: float | None = None  # time.time() of the next try

    @property
    def retrying(self) -> bool:
        return self.next_try is not None

    def retry_in(self, now: float | None = None) -> float | None:
        """Seconds until the next try (0 once it is due), or None when none is planned."""
        if self.next_try is None:
            return None
        return max(0.0, self.next_try - (time.time() if now is None else now))


def not_retried(exc: BaseException) -> str | None:
    """Why a failure is not tried again, or None when it is."""
    if isinstance(exc, PluginLoadError):
        return NOT_RETRIED_LOAD
    if isinstance(exc, ConfigError):
        return NOT_RETRIED_CONFIG
    return None


class Failure(msgspec.Struct, frozen=True):
    """One failed bring-up, as the host logs and records it."""

    attempts: int  # tries in a row that failed, this one included
    delay: float | None  # until the next try; None: not retried
    repeated: bool  # the same reason as the try before (logged at DEBUG)


class _Backoff(msgspec.Struct):
    failures: int = 0  # in a row, since the last success (or reload)
    token: int = 0  # the pending try's; any bring-up moves it on, which cancels that try
    reason: str = ""  # the last failure's


class Retries:
    """Per-driver backoff and the one timer that runs the tries.

    ``run(name, token)`` is called on the timer thread when a try comes due; it must check
    :meth:`is_current` under the lock its bring-ups hold, as a bring-up may have run meanwhile.
    """

    def __init__(self, run: Callable[[str, int], None], first_s: float = FIRST_DELAY_S,
                 max_s: float = MAX_DELAY_S) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"retry delays must satisfy 0 < first <= max, got {first_s} and {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self._run = run
        self._later = Later("driver-retries")
        self._lock = threading.Lock()
        self._state: dict[str, _Backoff] = {}
        self.attempts: Counter[str] = Counter()  # every creation tried, for the metrics
        self.failures: Counter[str] = Counter()

    def set_delays(self, first_s: float, max_s: float) -> None:
        """New delays (a reload): the next failures use them."""
        if not 0 < first_s <= max_s:
            raise ValueError(f"retry delays must satisfy 0 < first <= max, got {first_s} and {max_s}")
        with self._lock:
            self.first_s, self.max_s = first_s, max_s

    def begin(self, name: str, fresh: bool) -> None:
        """A bring-up of ``name`` starts: cancel its pending try; ``fresh`` (not a retry) also
        starts the delays over, as a reload or label change is a new situation."""
        with self._lock:
            state = self._state.setdefault(name, _Backoff())
            state.token += 1
            if fresh:
                state.failures, state.reason = 0, ""

    def attempted(self, name: str) -> None:
        with self._lock:
            self.attempts[name] += 1

    def failed(self, name: str, reason: str, retry: bool) -> Failure:
        """Record a failed try; with ``retry``, plan the next one."""
        with self._lock:
            state = self._state.setdefault(name, _Backoff())
            state.failures += 1
            self.failures[name] += 1
            repeated, state.reason = state.reason == reason, reason
            if not retry:
                return Failure(state.failures, None, repeated)
            base = min(self.max_s, self.first_s * 2 ** min(state.failures - 1, 64))
            delay = base * (1 - JITTER * random.random())  # noqa: S311 - spreading retries, not a secret
            failure, token = Failure(state.failures, delay, repeated), state.token
        self._later.call(delay, lambda: self._due(name, token))
        return failure

    def succeeded(self, name: str) -> int:
        """The driver runs: return how many tries it took (1: the first), and start the delays over."""
        with self._lock:
            state = self._state.setdefault(name, _Backoff())
            tries, state.failures, state.reason = state.failures + 1, 0, ""
            return tries

    def forget(self, name: str) -> None:
        """The driver no longer runs here (disabled, not selected): no try is pending for it."""
        with self._lock:
            state = self._state.setdefault(name, _Backoff())
            state.token += 1
            state.failures, state.reason = 0, ""

    def is_current(self, name: str, token: int) -> bool:
        with self._lock:
            state = self._state.get(name)
            return state is not None and state.token == token

    def _due(self, name: str, token: int) -> None:
        if self.is_current(name, token):  # a cancelled try: nothing to do
            self._run(name, token)

    def close(self) -> None:
        """No try runs from now on (one running now is not waited for: it checks the host's stop)."""
        self._later.close(wait=0)


def failed_status(name: str, origin: str, reason: str, failure: Failure) -> FailedStatus:
    next_try = None if failure.delay is None else time.time() + failure.delay
    return FailedStatus(name, origin, FAILED, reason, attempts=failure.attempts, next_try=next_try)


def describe_plan(failure: Failure, exc: BaseException) -> str:
    """What happens next, for the log line: ``retrying in 2 s`` or why not."""
    if failure.delay is None:
        return not_retried(exc) or "not retried"
    return f"retrying in {failure.delay:.3g} s"
