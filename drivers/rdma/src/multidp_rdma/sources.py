"""Which event sources a driver runs: the kernel's on the host's /sys, the simulation's on a simulated node.

Every source reports to the :class:`~multidp_rdma.events.EventHub` whether it is
up; a source that cannot run here is reported down at once, with why, so the
hub knows what must be polled and says so in one log line.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from multidp_rdma.config import RdmaConfig
from multidp_rdma.events import EventHub


class Source(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class DeviceWatch(Source, Protocol):
    """A source that is told which RDMA devices to watch (verbs events)."""

    def watch(self, devices: list[str]) -> None: ...


def event_sources(config: RdmaConfig, hub: EventHub, log: logging.Logger, *, host: bool, verbs_loaded: bool,
                  simulation: Any = None) -> tuple[list[Source], DeviceWatch | None]:
    """The sources to start (not started yet), and the one to tell which devices to watch."""
    kernel = getattr(simulation, "kernel", None)
    if kernel is not None:
        return _simulated(config, hub, kernel)
    if not host:
        for kind in ("uevents", "links", "verbs"):
            hub.source_down(kind, "the sysfs root is not the host's /sys")
        return [], None
    from multidp_rdma.linkwatch import LinkEvents

    sources: list[Source] = [LinkEvents(hub, log)]
    if config.udev == "auto":
        from multidp_rdma.uevents import KernelUevents

        sources.append(KernelUevents(hub, log))
    else:
        hub.source_down("uevents", "udev is off in the config")
    verbs: DeviceWatch | None = None
    if verbs_loaded:
        from multidp_rdma.verbsevents import VerbsEvents

        verbs = VerbsEvents(hub, log)
        sources.append(verbs)
    else:
        hub.source_down("verbs", "verbs is off in the config" if config.verbs == "off" else "pyverbs is not available")
    return sources, verbs


def _simulated(config: RdmaConfig, hub: EventHub, kernel: Any) -> tuple[list[Source], DeviceWatch | None]:
    from multidp_rdma.simevents import SimulatedUevents, SimulatedVerbs

    hub.source_down("links", "a simulated node has no netdevs to watch")
    sources: list[Source] = []
    if config.udev == "auto":
        sources.append(SimulatedUevents(kernel, hub))
    else:
        hub.source_down("uevents", "udev is off in the config")
    verbs: DeviceWatch | None = None
    if config.verbs == "auto":
        verbs = SimulatedVerbs(kernel, hub)
        sources.append(verbs)
    else:
        hub.source_down("verbs", "verbs is off in the config")
    return sources, verbs
