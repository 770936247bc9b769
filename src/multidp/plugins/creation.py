"""Creating a driver under a deadline, without piling up hung creations or leaking late drivers.

A ``multidp_create_driver`` that hangs keeps its helper thread (Python cannot stop it).
Retries must not start another beside it, or a driver stuck for hours would leave a thread
per retry; so a driver has at most one creation running, and a bring-up while one still
runs fails with :class:`CreationPending` (retried later like any failure). A creation that
returns after its deadline is closed at once: nobody will use that driver, and it may hold
handles (NVML) or threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from multidp.driver import Driver
from multidp.plugins.calls import with_deadline

log = logging.getLogger(__name__)


class CreationPending(RuntimeError):
    """The driver's previous creation has not returned yet."""


class _Handoff:
    """The result of a creation, given to the caller unless the caller gave up first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._result: object = None

    def give(self, result: object) -> bool:
        with self._lock:
            if not self._abandoned:
                self._result = result
            return not self._abandoned

    def abandon(self) -> object:
        """The caller gave up: return a result that arrived too late to be taken, if any."""
        with self._lock:
            self._abandoned = True
            return self._result


class Creations:
    """The creations running now, by driver (one per host, kept across reloads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def running(self, name: str) -> bool:
        with self._lock:
            return name in self._running

    def create(self, name: str, timeout: float, make: Callable[[], object]) -> object:
        """``make()`` on a helper thread within ``timeout``; TimeoutError past it (the late result
        is closed), CreationPending while an earlier creation of ``name`` still runs."""
        with self._lock:
            if name in self._running:
                raise CreationPending("its previous creation has not returned yet (multidp_create_driver "
                                      "hangs); it is not started again until that one returns")
            self._running.add(name)
        handoff = _Handoff()

        def run() -> object:
            try:
                result = make()
            finally:
                with self._lock:
                    self._running.discard(name)
            if not handoff.give(result):
                _close_late(name, result)
            return result

        try:
            return with_deadline(f"driver {name}: creating it", timeout, run, "driver-create")
        except TimeoutError:
            late = handoff.abandon()
            if late is not None:
                _close_late(name, late)
            raise


def _close_late(name: str, driver: object) -> None:
    if not isinstance(driver, Driver):
        return
    log.warning("driver %s: created after its deadline; closing that instance, nobody uses it", name)
    try:
        driver.close()
    except Exception:  # noqa: BLE001 - the driver's code, on a thread nobody waits for
        log.exception("driver %s: closing the late instance failed", name)
