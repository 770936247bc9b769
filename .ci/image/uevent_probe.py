"""Runs inside the image (``python -c CODE NETDEV``): do the host's kernel uevents reach this container?

Two listeners: pyudev's kernel-source monitor on its own, and the RDMA driver's own uevent source
(``multidp_rdma.uevents.KernelUevents`` feeding a real ``EventHub``). Prints READY once both listen; the
host then writes "change" to /sys/class/net/NETDEV/uevent, which makes the kernel send a real uevent. A
CI machine has no RDMA device to plug: a change on a non-virtual netdev is an event the driver acts on
(it rediscovers, since netdev names feed its selectors). Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any

import pyudev  # type: ignore[import-untyped]

WAIT_S = 30.0
netdev = sys.argv[1]
result: dict[str, Any] = {"plain": None, "driver": False, "driver_live": False, "driver_log": [],
                          "driver_error": None}


class Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        result["driver_log"].append(f"{record.levelname} {record.getMessage()}")


monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
monitor.filter_by(subsystem="net")
monitor.start()

notified = threading.Event()
source: Any = None
hub: Any = None
try:
    from multidp_rdma.events import EventHub  # type: ignore[import-untyped]
    from multidp_rdma.uevents import KernelUevents  # type: ignore[import-untyped]

    log = logging.getLogger("multidp.driver.rdma")
    log.addHandler(Capture())
    log.setLevel(logging.DEBUG)
    log.propagate = False
    hub = EventHub(log, expected=("uevents",))
    hub.attach(notified.set)
    source = KernelUevents(hub, log)
    source.start()
    if not notified.wait(WAIT_S) or not hub.uevents_live:  # source_up (or source_down, with why)
        raise RuntimeError("the driver's uevent source did not come up")
    result["driver_live"] = True
    hub.take()  # what subscribing flagged: from here on only the host's uevent counts
    notified.clear()
except Exception as exc:  # noqa: BLE001 - reported to the host, which fails the check
    result["driver_error"] = f"{type(exc).__name__}: {exc}"

print("READY", flush=True)
while (device := monitor.poll(timeout=WAIT_S)) is not None and device.sys_name != netdev:
    pass
result["plain"] = None if device is None else f"{device.action} {device.sys_path}"
if result["driver_live"]:
    result["driver"] = notified.wait(WAIT_S) and hub.take().rediscover
    source.stop()
print("RESULT " + json.dumps(result), flush=True)
