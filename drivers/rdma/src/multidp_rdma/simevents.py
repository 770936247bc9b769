"""Event sources for a simulated node (``--simulate``, ``multidp demo``).

A fake tree is not the host's /sys, so kernel uevents, link events and verbs
events say nothing about it. The simulation announces its own changes instead,
as the kernel would: a port rewritten in the fake sysfs is announced as a verbs
port event of its device. The driver subscribes to these exactly as to the real
sources (``udev: off`` or ``verbs: off`` leave them out), so a simulated node
runs the event path: nothing is polled between safety-net rescans.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from multidp_rdma.events import EventHub


class SimulatedKernel:
    """The simulation's side: which hubs listen, and what to tell them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hubs: list[tuple[EventHub, str]] = []  # (hub, "uevents" or "verbs")

    def _listening(self, kind: str) -> list[EventHub]:
        with self._lock:
            return [hub for hub, wanted in self._hubs if wanted == kind]

    def subscribe(self, hub: EventHub, kind: str) -> None:
        with self._lock:
            self._hubs.append((hub, kind))

    def unsubscribe(self, hub: EventHub, kind: str) -> None:
        with self._lock:
            if (hub, kind) in self._hubs:
                self._hubs.remove((hub, kind))

    def port_changed(self, device: str) -> None:
        """A port of ``device`` changed state (as IBV_EVENT_PORT_ACTIVE / PORT_ERR would say)."""
        for hub in self._listening("verbs"):
            hub.verbs_event(device)

    def devices_changed(self) -> None:
        """Devices appeared or vanished (as a kernel uevent would say)."""
        for hub in self._listening("uevents"):
            hub.uevent()


class SimulatedUevents:
    """Stands where :class:`multidp_rdma.uevents.KernelUevents` stands on a node."""

    def __init__(self, kernel: SimulatedKernel, hub: EventHub) -> None:
        self.kernel, self.hub = kernel, hub

    def start(self) -> None:
        self.kernel.subscribe(self.hub, "uevents")
        self.hub.source_up("uevents")

    def stop(self) -> None:
        self.kernel.unsubscribe(self.hub, "uevents")


class SimulatedVerbs:
    """Stands where :class:`multidp_rdma.verbsevents.VerbsEvents` stands: watches every device it is given."""

    def __init__(self, kernel: SimulatedKernel, hub: EventHub) -> None:
        self.kernel, self.hub = kernel, hub

    def start(self) -> None:
        self.kernel.subscribe(self.hub, "verbs")
        self.hub.source_up("verbs")

    def watch(self, devices: Sequence[str]) -> None:
        self.hub.verbs_watching(frozenset(devices))

    def stop(self) -> None:
        self.kernel.unsubscribe(self.hub, "verbs")
