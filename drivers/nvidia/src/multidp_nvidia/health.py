"""GPU health from NVML events, in a thread of its own, and when a GPU is trusted again.

The thread registers every GPU for critical-XID and ECC events and waits on the
event set. A critical XID not on the ignore list, or a double-bit ECC error
(multidp's addition; NVIDIA registers for it but ignores it), records a fault
and calls ``notify`` so the host rescans at once. A fault's scope is what the
event names: a GPU instance / compute instance (that MIG device only) or the
whole GPU (0xFFFFFFFF: the GPU, its MIG devices and every replica).

Recovery (NVIDIA never recovers without a restart): a fault ends once
``recover_after`` seconds passed without a new critical event for it AND NVML
answers normally for the GPU (handle, memory info, and no row remapping pending
or failed). Until both hold, the devices stay Unhealthy with the reason shown.

The thread sleeps in NVML's event wait: events end it at once. With nothing to
do it wakes every 5 s (NVIDIA's health loop waits 5000 ms too,
internal/rm/health.go in NVIDIA/k8s-device-plugin), sooner only when a fault is
due to recover or a GPU is due to be registered again. NVML has no call that
ends a wait early, so :meth:`HealthMonitor.stop` does not wait for it: the
thread frees its event set when the wait returns, and only then runs what
``stop`` was given to run after it (the driver's NVML shutdown).
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from multidp_nvidia.nvml import error_name, is_code, text
from multidp_nvidia.settings import Settings

WHOLE = 0xFFFFFFFF
WAIT_MS = 5000  # the longest event wait: with nothing due, the thread wakes this often, as NVIDIA's does
SOONEST_MS = 500  # the shortest: while a due recovery waits for the host's scan, notify it this often
RETRY_S = 30.0  # how often GPUs that could not be registered for events are tried again


class Fault(msgspec.Struct):
    gpu_uuid: str
    gi: int
    ci: int
    reason: str
    last_event: float

    def covers(self, gpu_uuid: str, gi: int, ci: int) -> bool:
        """Whether this fault concerns the device (gpu, gi, ci); WHOLE matches everything."""
        if gpu_uuid != self.gpu_uuid:
            return False
        if gi == WHOLE:  # a whole GPU is unhealthy if any part of it is
            return True
        return self.gi in (WHOLE, gi) and self.ci in (WHOLE, ci)


class HealthMonitor:
    """Faults by (GPU, GPU instance, compute instance), fed by the event thread."""

    def __init__(self, nvml: Any, settings: Settings, recover_after: float, notify: Callable[[], None],
                 log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.nvml = nvml
        self.settings = settings
        self.recover_after = recover_after
        self.notify = notify
        self.log = log
        self.clock = clock
        self._faults: dict[tuple[str, int, int], Fault] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False  # the thread has not yet freed its event set (under _lock)
        self._after_stop: Callable[[], None] | None = None  # run by the thread once its event set is freed
        self._gpus: dict[str, Any] = {}
        self._by_handle: dict[Any, str] = {}
        self._unwatched: dict[str, Any] = {}

    # Faults ---------------------------------------------------------------------------

    def record(self, gpu_uuid: str, gi: int, ci: int, reason: str) -> None:
        with self._lock:
            self._faults[(gpu_uuid, gi, ci)] = Fault(gpu_uuid, gi, ci, reason, self.clock())
        self.notify()

    def problem(self, gpu_uuid: str, gi: int = WHOLE, ci: int = WHOLE) -> str:
        """Why the device is unhealthy ('' when it is not)."""
        with self._lock:
            return next((f.reason for f in self._faults.values() if f.covers(gpu_uuid, gi, ci)), "")

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults.values())

    def _due(self) -> bool:
        if not self.recover_after:
            return False
        now = self.clock()
        with self._lock:
            return any(now - f.last_event >= self.recover_after for f in self._faults.values())

    def wait_ms(self, retried: float) -> int:
        """How long the next event wait may last: WAIT_MS, or until the next due recovery or retry."""
        now = self.clock()
        wake = now + WAIT_MS / 1000
        if self.recover_after:
            with self._lock:
                due = [f.last_event + self.recover_after for f in self._faults.values()]
            if due:
                wake = min(wake, min(due))
        if self._unwatched:
            wake = min(wake, retried + RETRY_S)
        return max(SOONEST_MS, min(WAIT_MS, math.ceil((wake - now) * 1000)))

    def try_recover(self, probe: Callable[[str], str]) -> list[Fault]:
        """End the faults that are due and whose GPU answers normally; return them.

        ``probe(gpu_uuid)`` returns '' when NVML answers normally, or what is wrong;
        a fault whose probe fails waits another ``recover_after`` seconds.
        """
        if not self.recover_after:
            return []
        now = self.clock()
        with self._lock:
            due = [f for f in self._faults.values() if now - f.last_event >= self.recover_after]
        ended = []
        for fault in due:
            wrong = probe(fault.gpu_uuid)
            with self._lock:
                key = (fault.gpu_uuid, fault.gi, fault.ci)
                if self._faults.get(key) is not fault:
                    continue  # a new event replaced it meanwhile
                if wrong or fault.gpu_uuid in self._unwatched:
                    fault.last_event, fault.reason = now, wrong or fault.reason
                    continue
                del self._faults[key]
            ended.append(fault)
            self.log.info("GPU %s%s trusted again: %.0f s without a critical event and NVML answers normally "
                          "(was: %s)", fault.gpu_uuid, _scope(fault.gi, fault.ci), self.recover_after, fault.reason)
        return ended

    # The event thread -----------------------------------------------------------------

    def start(self, gpus: Sequence[tuple[str, Any]]) -> None:
        self._gpus = dict(gpus)
        self._by_handle = {handle_key(h): uuid for uuid, h in gpus}
        self._thread = threading.Thread(target=self._run, name="nvidia-health", daemon=True)
        with self._lock:
            self._running = True
        self._thread.start()

    def stop(self, then: Callable[[], None] | None = None) -> None:
        """Stop watching without waiting for the thread's NVML wait to return (up to WAIT_MS).

        ``then`` (the NVML shutdown) runs once the thread freed its event set: here when it
        already has, else on the thread when its wait returns.
        """
        self._stop.set()
        with self._lock:
            if self._running:
                self._after_stop = then or self._after_stop
                return
        if then is not None:
            then()

    def _register(self, event_set: Any, gpus: dict[str, Any]) -> None:
        nvml = self.nvml
        wanted = nvml.nvmlEventTypeXidCriticalError | nvml.nvmlEventTypeDoubleBitEccError
        for uuid, handle in gpus.items():
            try:
                mask = wanted & nvml.nvmlDeviceGetSupportedEventTypes(handle)
                nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                if self._unwatched.pop(uuid, None) is not None:
                    self.log.info("GPU %s registered for NVML events again", uuid)
            except nvml.NVMLError as exc:
                if is_code(exc, nvml, "NOT_SUPPORTED"):
                    self.log.warning("GPU %s supports no NVML health events; its health is not watched", uuid)
                    continue
                if uuid not in self._unwatched:
                    self.log.error("GPU %s: cannot register for NVML events (%s); marked unhealthy",
                                   uuid, error_name(exc))
                    self.record(uuid, WHOLE, WHOLE, f"cannot watch its health: {error_name(exc)}")
                self._unwatched[uuid] = handle

    def _run(self) -> None:
        nvml = self.nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            self.log.error("cannot create an NVML event set (%s); GPU health is not watched", error_name(exc))
            self._stopped()
            return
        try:
            self._register(event_set, self._gpus)
            retried = self.clock()
            while not self._stop.is_set():
                if self._unwatched and self.clock() - retried >= RETRY_S:
                    retried = self.clock()
                    self._register(event_set, dict(self._unwatched))
                try:
                    event = nvml.nvmlEventSetWait(event_set, self.wait_ms(retried))
                except nvml.NVMLError as exc:
                    if not is_code(exc, nvml, "TIMEOUT"):
                        self._wait_failed(exc)
                    elif self._due() and not self._stop.is_set():
                        self.notify()
                    continue
                if not self._stop.is_set():
                    self.handle(event)
        finally:
            try:
                nvml.nvmlEventSetFree(event_set)
            except nvml.NVMLError:
                pass
            self._stopped()

    def _stopped(self) -> None:
        """The thread's last step: its event set is freed, so what stop() was given may run now."""
        with self._lock:
            self._running = False
            after, self._after_stop = self._after_stop, None
        if after is not None:
            after()

    def _wait_failed(self, exc: BaseException) -> None:
        # As NVIDIA: when the wait itself fails, no GPU can be vouched for.
        reason = f"NVML event wait failed: {error_name(exc)}"
        self.log.error("%s; marking every GPU unhealthy", reason)
        for uuid in self._gpus:
            self.record(uuid, WHOLE, WHOLE, reason)
        self._stop.wait(1.0)

    def watched(self, xid: int) -> bool:
        if self.settings.only_xids is not None:
            return xid in self.settings.only_xids
        return xid not in self.settings.ignored_xids

    def handle(self, event: Any) -> None:
        """One NVML event: record a fault for what it concerns, or log why it is ignored."""
        nvml = self.nvml
        kind, data = int(event.eventType), int(event.eventData)
        if kind == nvml.nvmlEventTypeXidCriticalError:
            if not self.watched(data):
                self.log.info("ignoring XID %d (on the ignore list)", data)
                return
            reason = f"XID {data}"
        elif kind == nvml.nvmlEventTypeDoubleBitEccError and self.settings.double_bit_ecc:
            reason = "double-bit ECC error"
        else:
            self.log.debug("ignoring NVML event type 0x%x", kind)
            return
        try:
            # Known handles first: a GPU that fell off the bus cannot tell NVML its UUID any more.
            uuid = self._by_handle.get(handle_key(event.device)) or text(nvml.nvmlDeviceGetUUID(event.device))
        except nvml.NVMLError as exc:
            self.log.error("%s on a GPU NVML cannot name (%s); marking every GPU unhealthy", reason, error_name(exc))
            for known in self._gpus:
                self.record(known, WHOLE, WHOLE, f"{reason} on an unidentified GPU")
            return
        if uuid not in self._gpus:
            self.log.info("%s on GPU %s, which is not served here; ignored", reason, uuid)
            return
        gi, ci = int(event.gpuInstanceId), int(event.computeInstanceId)
        self.log.warning("%s on GPU %s%s: marking it unhealthy", reason, uuid, _scope(gi, ci))
        self.record(uuid, gi, ci, reason)


def handle_key(handle: Any) -> Any:
    """Something equal for equal NVML handles: the pointer's address, or the handle itself."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return handle


def _scope(gi: int, ci: int) -> str:
    if gi == WHOLE:
        return ""
    return f" (GPU instance {gi}" + (f", compute instance {ci})" if ci != WHOLE else ")")


def probe_gpu(nvml: Any, gpu_uuid: str) -> str:
    """'' when NVML answers normally for the GPU, else what is wrong."""
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
        nvml.nvmlDeviceGetMemoryInfo(handle)
    except nvml.NVMLError as exc:
        return f"NVML does not answer for it: {error_name(exc)}"
    try:
        _, _, pending, failure = nvml.nvmlDeviceGetRemappedRows(handle)
    except (nvml.NVMLError, AttributeError):
        return ""  # row remapping not supported (older GPUs): nothing to wait for
    if failure:
        return "row remapping failed (uncorrectable memory error)"
    if pending:
        return "row remapping pending (GPU reset required)"
    return ""
