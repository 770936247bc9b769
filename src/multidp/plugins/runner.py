"""Running one driver: its scans, its event wake-ups, and every call under a deadline.

Each driver gets its own threads: one that scans (on a timer, and at once when
the driver calls ``notify``) and a small pool for the calls the kubelet causes.
A call that raises or misses its deadline becomes a :class:`DriverCallError`
(:class:`DriverTimeout`; :class:`DriverRefused` for a policy refusal) for that
call only; a hung call keeps its thread, never another driver's. ``SystemExit``
and ``KeyboardInterrupt`` from driver code are failures like any other (see
:class:`~multidp.plugins.calls.DriverAborted`): the call is answered, and the
poll thread goes on scanning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from multidp.config.settings import Timeouts
from multidp.driver import Driver
from multidp.errors import AllocationRefused, DriverCallError, DriverRefused, DriverTimeout
from multidp.model import Device
from multidp.plugins.calls import CallPool, CallTimeout, PoolClosed, describe_exception

log = logging.getLogger(__name__)

T = TypeVar("T")
Inventory = Mapping[str, Sequence[Device]]
# Called with (runner, inventory, "") after a good scan, or (runner, None, reason) after a bad one.
InventorySink = Callable[["DriverRunner", Inventory | None, str], None]

CALL_WORKERS = 4
CLOSE_TIMEOUT_S = 5.0  # a driver's close(): at shutdown, at a reload, after a one-shot scan
DEFAULT_POLL_S = 5.0


class DriverRunner:
    """Owns one driver object and calls it safely."""

    def __init__(self, name: str, driver: Driver, timeouts: Timeouts, sink: InventorySink) -> None:
        self.name = name
        self.driver = driver
        self.timeouts = timeouts
        self._sink = sink
        self._calls = CallPool(f"{name}-call", CALL_WORKERS)
        self._scans = CallPool(f"{name}-scan", 1)
        self._scan_running_since: float | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-poll", daemon=True)
        self.last_scan_ok: bool | None = None
        self.last_error = ""
        self.scans = 0
        self.scan_failures = 0

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
            self.call("close", self.driver.close, timeout=CLOSE_TIMEOUT_S)
        except DriverCallError as exc:
            log.warning("driver %s: close failed: %s", self.name, exc)
        self._calls.close()
        self._scans.close()

    def call(self, what: str, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run ``fn(*args)`` on the driver's threads; raise DriverCallError on failure."""
        return self._call(self._calls, what, fn, *args, timeout=timeout)

    async def call_async(self, what: str, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """:meth:`call` for the serving event loop, which runs on while the driver answers."""
        try:
            result: T = await self._calls.call_async(fn, *args, timeout=timeout)
            return result
        except Exception as exc:  # noqa: BLE001 - sorted out by _failure
            raise self._failure(what, timeout, exc) from (None if isinstance(exc, CallTimeout) else exc)

    def _call(self, pool: CallPool, what: str, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        try:
            result: T = pool.call(fn, *args, timeout=timeout)
            return result
        except Exception as exc:  # noqa: BLE001 - sorted out by _failure
            raise self._failure(what, timeout, exc) from (None if isinstance(exc, CallTimeout) else exc)

    def _failure(self, what: str, timeout: float, exc: Exception) -> DriverCallError:
        """What the host makes of a failed call: a timeout, a stopping pool, a refusal, or the driver's error."""
        if isinstance(exc, CallTimeout):
            return DriverTimeout(self.name, what, f"driver {self.name}: {what} did not answer within {timeout:g} s")
        if isinstance(exc, PoolClosed):
            return DriverCallError(self.name, what, f"driver {self.name} is stopping")
        if isinstance(exc, AllocationRefused):
            return DriverRefused(self.name, what, str(exc))
        # The driver's own failure (DriverAborted included), reported.
        return DriverCallError(self.name, what, f"driver {self.name}: {what} failed: {describe_exception(exc)}")

    def scan_now(self) -> None:
        """One scan, reported to the sink (the poll thread's step; tests call it too)."""
        since = self._scan_running_since
        if since is not None:
            self._report(None, f"driver {self.name}: scan still running after {time.monotonic() - since:.0f} s")
            return
        try:
            inventory = self._call(self._scans, "scan", self._scan, timeout=self.timeouts.scan)
        except DriverCallError as exc:
            self._report(None, str(exc))
            return
        if not isinstance(inventory, Mapping):
            self._report(None, f"driver {self.name}: scan returned a {type(inventory).__name__}, "
                               "not a mapping of resources")
            return
        self._report(inventory, "")

    def _scan(self) -> Inventory:
        # Set here, on the scan's worker: a call dropped before it ran never sets it, so it cannot
        # stay set for good; a hung scan keeps it set until it returns.
        self._scan_running_since = time.monotonic()
        try:
            return self.driver.scan()
        finally:
            self._scan_running_since = None

    def _report(self, inventory: Inventory | None, error: str) -> None:
        self.scans += 1
        self.scan_failures += bool(error)
        if error and error != self.last_error:
            log.error("%s; its devices are Unhealthy until a scan succeeds", error)  # error names the driver
        elif not error and self.last_scan_ok is False:
            log.info("driver %s: scanning works again", self.name)
        self.last_scan_ok = not error
        self.last_error = error
        try:
            self._sink(self, inventory, error)
        except Exception:  # noqa: BLE001 - a host bug must not end the poll thread
            log.exception("driver %s: handling its scan failed", self.name)

    def _poll_interval(self) -> float:
        try:
            return max(0.01, float(getattr(self.driver, "poll_interval", DEFAULT_POLL_S)))
        except Exception:  # noqa: BLE001 - a driver attribute that is not a number
            return DEFAULT_POLL_S

    def _loop(self) -> None:
        # Never ends before stop(): a thread that died here would leave the devices as the
        # last scan saw them, Healthy for good, with nothing in the log.
        while not self._stopped.is_set():
            self._wake.wait(self._poll_interval())
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.scan_now()
            except Exception:  # noqa: BLE001 - a host bug must not end polling
                log.exception("driver %s: scanning failed in the host; trying again at the next poll", self.name)
