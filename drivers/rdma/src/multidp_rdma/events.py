"""Where the event sources meet the scan: what they flagged, which devices they cover, when to scan next.

Sources call in from their own threads: kernel uevents (hot-plug, renames, nodes),
rtnetlink link events (RoCE netdevs), verbs asynchronous events (any port). The
scan takes what they flagged and asks :meth:`EventHub.next_poll` how long the host
may sleep: the configured ``pollInterval`` while anything still needs polling,
the rescan interval (a safety net) once every device's health arrives as events.

A device's port state is covered by events when the verbs child watches it, or
when every port is Ethernet (RoCE: the port is ACTIVE exactly while its netdev is
up with carrier) and one of its netdevs is in the network namespace the rtnetlink
socket sees. IPoIB carrier does not follow an InfiniBand port closely enough to
stand in for it: IB ports need verbs events, or are polled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import msgspec
from multidp import Notify

from multidp_rdma.inventory import RdmaDevice

SETTLE_S = 1.0  # kernel uevents come before udev has renamed or set up what they announce: look again then
SOURCES = ("uevents", "links", "verbs")
NAMES = {"uevents": "kernel uevents", "links": "rtnetlink link events", "verbs": "verbs events"}


class Pending(msgspec.Struct):
    """What the sources flagged since the last scan."""

    rediscover: bool = False
    devices: set[str] = msgspec.field(default_factory=set)  # RDMA device names whose health may have changed


class EventHub:
    """Thread-safe meeting point of the event sources and the scan."""

    def __init__(self, log: logging.Logger, expected: Iterable[str] = SOURCES) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._notify: Notify = lambda: None
        self._pending = Pending()
        self._followup_at: float | None = None
        self._expected = set(expected)  # sources still starting: until each says up or down, keep polling
        self._live: dict[str, bool] = dict.fromkeys(SOURCES, False)
        self._why_not: dict[str, str] = {}
        self._links: frozenset[str] = frozenset()  # netdev names the rtnetlink socket sees
        self._verbs: frozenset[str] = frozenset()  # RDMA devices the verbs child watches
        self._by_netdev: dict[str, set[str]] = {}  # netdev → RDMA devices, from the last discovery
        self._devices: tuple[RdmaDevice, ...] = ()
        self._path = ""

    def attach(self, notify: Notify) -> None:
        self._notify = notify

    # Sources report ----------------------------------------------------------------------

    def source_up(self, kind: str) -> None:
        """A source is subscribed: rescan everything once, since events before now were missed."""
        with self._lock:
            self._expected.discard(kind)
            self._live[kind] = True
            self._why_not.pop(kind, None)
            self._pending.rediscover = True
        self._notify()

    def source_down(self, kind: str, why: str) -> None:
        """A source is not (or no longer) available: what it covered is polled again."""
        with self._lock:
            self._expected.discard(kind)
            self._live[kind] = False
            self._why_not[kind] = why
            self._pending.rediscover = True
            if kind == "links":
                self._links = frozenset()
            elif kind == "verbs":
                self._verbs = frozenset()
        self._notify()

    def uevent(self) -> None:
        """Something RDMA-related was added, removed or renamed: discover now and once more shortly."""
        with self._lock:
            self._pending.rediscover = True
            self._followup_at = time.monotonic() + SETTLE_S
        self._notify()

    def health_of_all(self) -> None:
        """Every device's health may have changed (rdma_cm came or went, a source lost events)."""
        with self._lock:
            self._pending.devices.update(d.name for d in self._devices)
        self._notify()

    def link(self, ifname: str) -> None:
        """A netdev changed state: rescan the health of the devices it belongs to, if any."""
        with self._lock:
            devices = self._by_netdev.get(ifname)
            if not devices:
                return  # a veth of some pod, a bridge: nothing of ours
            self._pending.devices.update(devices)
        self._notify()

    def links_present(self, names: frozenset[str]) -> None:
        """The netdevs the rtnetlink socket sees now (it keeps the set from its dump and events)."""
        with self._lock:
            ours = set(self._by_netdev)
            changed = (names & ours) != (self._links & ours)
            self._links = names
        if changed:
            self._notify()

    def verbs_event(self, device: str) -> None:
        with self._lock:
            self._pending.devices.add(device)
        self._notify()

    def verbs_watching(self, devices: frozenset[str]) -> None:
        with self._lock:
            changed = devices != self._verbs
            self._verbs = devices
        if changed:
            self._notify()

    # The scan asks ----------------------------------------------------------------------

    @property
    def uevents_live(self) -> bool:
        return self._live["uevents"]

    def live(self, kind: str) -> bool:
        return self._live[kind]

    def set_devices(self, devices: Iterable[RdmaDevice]) -> None:
        """The devices of the last discovery (to map netdev events to them)."""
        by_netdev: dict[str, set[str]] = {}
        devices = tuple(devices)
        for device in devices:
            for netdev in device.netdevs:
                by_netdev.setdefault(netdev, set()).add(device.name)
        with self._lock:
            self._devices = devices
            self._by_netdev = by_netdev

    def take(self) -> Pending:
        """What was flagged since the last call (a due follow-up rescan included)."""
        with self._lock:
            pending, self._pending = self._pending, Pending()
            if self._followup_at is not None and time.monotonic() >= self._followup_at:
                pending.rediscover = True
                self._followup_at = None
        return pending

    def covered(self, device: RdmaDevice) -> bool:
        """Whether this device's port state arrives as events (else it is polled)."""
        if device.name in self._verbs:
            return True
        return (self._live["links"] and bool(device.ports)
                and all(p.link_layer.lower() == "ethernet" for p in device.ports)
                and any(n in self._links for n in device.netdevs))

    def next_poll(self, uncovered: list[str], fast: float, rescan_s: float, until_rescan: float) -> float:
        """Seconds until the next scan: ``fast`` while anything needs polling, else until the next rescan."""
        with self._lock:
            followup = self._followup_at
            starting = bool(self._expected)
            uevents = self._live["uevents"]
        if not starting:
            self._log_path(uncovered, fast, rescan_s, uevents)
        interval = fast if starting or not uevents or uncovered else max(fast, until_rescan)
        if followup is not None:
            interval = min(interval, max(0.0, followup - time.monotonic()))
        return max(0.01, interval)

    def _log_path(self, uncovered: list[str], fast: float, rescan_s: float, uevents: bool) -> None:
        """Say which health path is in use, once, and again only when the path (not the device list) changes."""
        why = "; ".join(f"{NAMES[kind]}: {self._why_not[kind]}" for kind in SOURCES if kind in self._why_not)
        if not uevents:
            key = f"polled {why}"
            line = f"RDMA health and hot-plug are polled every {fast:g} s ({why})"
        elif uncovered:
            key = f"ports {why}"
            line = (f"RDMA hot-plug arrives as kernel uevents; the port state of devices without verbs or link "
                    f"events ({', '.join(uncovered)}) is polled every {fast:g} s{' (' + why + ')' if why else ''}")
        else:
            sources = ", ".join(NAMES[kind] for kind in SOURCES if self._live[kind])
            key = line = f"RDMA health is event-driven ({sources}); a safety-net rescan runs every {rescan_s:g} s"
        if key != self._path:
            self._path = key
            self.log.info("%s", line)
