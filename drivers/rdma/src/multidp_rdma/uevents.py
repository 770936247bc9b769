"""Kernel uevents through pyudev: RDMA devices, their char devices, rdma_cm and netdevs appearing and vanishing.

The monitor listens to the kernel's own netlink group (``source="kernel"``), not
udev's: libudev subscribes to udev's group only where ``/run/udev/control`` exists
or ``/dev`` is a devtmpfs, neither of which holds in a pod, and the kernel's group
needs no capability. Untagged uevents (infiniband, misc) reach every network
namespace of the initial user namespace; a netdev's reach its own namespace, so
netdev renames and moves are seen with ``hostNetwork``. Kernel uevents come before
udev has handled them (a rename by a udev rule follows as its own "move" event):
the hub looks again shortly after each (:data:`multidp_rdma.events.SETTLE_S`).

One thread blocks in poll() on the monitor and a stop pipe: no timed wake-up.
"""

from __future__ import annotations

import logging
import select
from typing import Any

from multidp_rdma.blocking import BlockingReader
from multidp_rdma.events import EventHub

# Discovery reads these; misc carries rdma_cm, net the netdev names the selectors and link events use.
SUBSYSTEMS = ("infiniband", "infiniband_verbs", "infiniband_mad", "misc", "net")


def relevant(subsystem: str, sys_name: str, device_path: str) -> str:
    """What an event means for the driver: "discover", "health" (rdma_cm) or "" (not ours)."""
    if subsystem in ("infiniband", "infiniband_verbs", "infiniband_mad"):
        return "discover"
    if subsystem == "misc":
        return "health" if sys_name == "rdma_cm" else ""
    if subsystem == "net":  # virtual netdevs (veths of pods, bridges) never carry an RDMA device
        return "" if device_path.startswith("/devices/virtual/") else "discover"
    return ""


class KernelUevents(BlockingReader):
    """Feeds kernel uevents of :data:`SUBSYSTEMS` to an :class:`EventHub` from one blocking thread."""

    def __init__(self, hub: EventHub, log: logging.Logger) -> None:
        super().__init__("rdma-uevents")
        self.hub = hub
        self.log = log

    def _subscribe(self) -> Any:
        try:
            import pyudev  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except Exception as exc:  # noqa: BLE001 - any import failure means "no uevents"
            self.hub.source_down("uevents", f"pyudev is not installed ({type(exc).__name__}: {exc})")
            return None
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
            for subsystem in SUBSYSTEMS:
                monitor.filter_by(subsystem=subsystem)
            monitor.start()
        except Exception as exc:  # noqa: BLE001 - no libudev, no netlink socket in this namespace, and the like
            self.hub.source_down("uevents", f"cannot subscribe to kernel uevents ({type(exc).__name__}: {exc})")
            return None
        self.log.info("receiving kernel uevents (%s)", ", ".join(SUBSYSTEMS))
        self.hub.source_up("uevents")
        return monitor

    def _run(self) -> None:
        monitor = self._subscribe()
        if monitor is None:
            return
        poller = select.poll()
        poller.register(monitor.fileno(), select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}  # blocks until an event or stop()
                if self._stop_read in ready:
                    return
                self._drain(monitor)
        except Exception as exc:  # noqa: BLE001 - the socket went bad: say so, poll instead
            self.log.warning("kernel uevents stopped (%s: %s); RDMA devices are polled instead",
                             type(exc).__name__, exc)
            self.hub.source_down("uevents", f"the uevent socket failed ({exc})")

    def _drain(self, monitor: Any) -> None:
        while True:
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:  # ENOBUFS: the kernel dropped events for us; look at everything
                self.log.info("kernel uevents were lost (%s): rescanning RDMA devices", exc)
                self.hub.uevent()
                self.hub.health_of_all()
                return
            if device is None:
                return
            meaning = relevant(str(device.subsystem), str(device.sys_name), str(device.device_path))
            if meaning:
                self.log.debug("uevent %s %s/%s", device.action, device.subsystem, device.sys_name)
            if meaning == "discover":
                self.hub.uevent()
            elif meaning == "health":
                self.hub.health_of_all()
