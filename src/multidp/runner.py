"""Running one driver: its scans, its event wake-ups, and every call under a deadline.

Each driver gets its own threads: one that scans (on a timer, and at once when
the driver calls ``notify``) and a small pool for the calls the kubelet causes.
A call that raises or misses its deadline becomes a :class:`DriverCallError`
for that call only; a hung call keeps its thread, never another driver's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from multidp.config import Timeouts
from multidp.driver import Driver
from multidp.errors import DriverCallError
from multidp.model import Device

log = logging.getLogger(__name__)

T = TypeVar("T")
Inventory = Mapping[str, Sequence[Device]]
# Called with (runner, inventory, "") after a good scan, or (runner, None, reason) after a bad one.
InventorySink = Callable[["DriverRunner", Inventory | None, str], None]

CALL_WORKERS = 4


class DriverRunner:
    """Owns one driver object and calls it safely."""

    def __init__(self, name: str, driver: Driver, timeouts: Timeouts, sink: InventorySink) -> None:
        self.name = name
        self.driver = driver
        self.timeouts = timeouts
        self._sink = sink
        self._calls = ThreadPoolExecutor(CALL_WORKERS, thread_name_prefix=f"{name}-call")
        self._scans = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-scan")
        self._pending_scan: Future[Inventory] | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-poll", daemon=True)
        self.last_scan_ok: bool | None = None
        self.last_error = ""
        self.scans = 0

    def start(self) -> None:
        try:
            self.call("start", self.driver.start, self.notify, timeout=self.timeouts.create)
        except DriverCallError as exc:
            log.error("driver %s: start failed, polling only: %s", self.name, exc)
        self._thread.start()

    def notify(self) -> None:
        """Ask for a scan now (drivers call this from any thread)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        try:
            self.call("close", self.driver.close, timeout=5)
        except DriverCallError as exc:
            log.warning("driver %s: close failed: %s", self.name, exc)
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._scans.shutdown(wait=False, cancel_futures=True)

    def call(self, what: str, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run ``fn(*args)`` on the driver's pool; raise DriverCallError on failure."""
        try:
            future = self._calls.submit(fn, *args)
        except RuntimeError as exc:  # pool shut down
            raise DriverCallError(self.name, what, f"driver {self.name} is stopping") from exc
        return self._result(what, future, timeout)

    def _result(self, what: str, future: Future[T], timeout: float) -> T:
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise DriverCallError(
                self.name, what, f"driver {self.name}: {what} did not answer within {timeout:g} s", timed_out=True
            ) from None
        except Exception as exc:  # noqa: BLE001 - the driver's own failure, reported
            raise DriverCallError(
                self.name, what, f"driver {self.name}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def scan_now(self) -> None:
        """One scan, reported to the sink (the poll thread's step; tests call it too)."""
        if self._pending_scan is not None and not self._pending_scan.done():
            started = getattr(self._pending_scan, "started", time.monotonic())
            self._report(None, f"scan still running after {time.monotonic() - started:.0f} s")
            return
        try:
            self._pending_scan = self._scans.submit(self.driver.scan)
        except RuntimeError:
            return
        self._pending_scan.started = time.monotonic()  # type: ignore[attr-defined]
        try:
            inventory = self._result("scan", self._pending_scan, self.timeouts.scan)
        except DriverCallError as exc:
            self._report(None, str(exc))
            return
        if not isinstance(inventory, Mapping):
            self._report(None, f"scan returned a {type(inventory).__name__}, not a mapping of resources")
            return
        self._report(inventory, "")

    def _report(self, inventory: Inventory | None, error: str) -> None:
        self.scans += 1
        if error and error != self.last_error:
            log.error("driver %s: %s; its devices are Unhealthy until a scan succeeds", self.name, error)
        elif not error and self.last_scan_ok is False:
            log.info("driver %s: scanning works again", self.name)
        self.last_scan_ok = not error
        self.last_error = error
        try:
            self._sink(self, inventory, error)
        except Exception:  # noqa: BLE001 - a host bug must not end the poll thread
            log.exception("driver %s: handling its scan failed", self.name)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            interval = max(0.01, float(getattr(self.driver, "poll_interval", 5.0)))
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            self.scan_now()
