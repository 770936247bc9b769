"""One resource's devices as the kubelet sees them: versioned snapshots.

The host owns the replica mechanism here: a device with ``replicas=n`` is
advertised as ``<id>::0`` … ``<id>::<n-1>``, and every advertised ID maps back
to the driver's device. A new snapshot (and so a ListAndWatch message) is made
only when something the kubelet sees changed: IDs, health or NUMA nodes.

This runs on every scan (every few hundred milliseconds for polled drivers,
with up to 10,000 devices), so it is one pass over plain tuples and dicts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from multidp.model import Device, Health
from multidp.names import MAX_DEVICE_ID_BYTES, REPLICA_SEPARATOR, replica_id, shorten

log = logging.getLogger(__name__)

# What the kubelet sees of one device: (id, health, NUMA nodes, replicas).
Visible = tuple[str, Health, tuple[int, ...], int | None]


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of a resource at one version.

    ``ids`` are the advertised IDs in order; ``by_id`` maps each to the
    driver's device behind it (the same device for all its replicas).
    """

    version: int
    devices: tuple[Device, ...] = ()
    ids: tuple[str, ...] = ()
    by_id: Mapping[str, Device] = field(default_factory=dict)

    def advertised(self) -> list[tuple[str, Device]]:
        by_id = self.by_id
        return [(i, by_id[i]) for i in self.ids]

    @property
    def healthy_ids(self) -> list[str]:
        by_id = self.by_id
        return [i for i in self.ids if by_id[i].health is Health.HEALTHY]


def _problem(device: object, seen: set[str]) -> str | None:
    """Why the kubelet cannot take ``device``, or None (the slow path of :func:`_check`)."""
    if not isinstance(device, Device):
        return f"is a {type(device).__name__}, not a multidp Device"
    size = len(device.id.encode())
    if size == 0 or size > MAX_DEVICE_ID_BYTES:
        return f"has an empty or over-long ID ({size} bytes)"
    if device.id in seen:
        return "is listed twice"
    if device.replicas is not None and (device.replicas < 1 or REPLICA_SEPARATOR in device.id):
        return f"asks for {device.replicas} replicas (at least 1, and no {REPLICA_SEPARATOR!r} in its ID)"
    if not all(isinstance(n, int) and n >= 0 for n in device.numa_nodes):
        return f"has NUMA nodes {device.numa_nodes!r} (non-negative integers only)"
    if not isinstance(device.health, Health):
        return f"has health {device.health!r}, not a multidp Health"
    return None


def _check(resource: str, devices: Sequence[Device]) -> tuple[list[Device], tuple[Visible, ...]]:
    """The devices the kubelet can take (each ID once, the first wins), and what it sees of them."""
    seen: set[str] = set()
    kept: list[Device] = []
    visible: list[Visible] = []
    for device in devices:
        # Fast path for the usual device; anything unusual goes through _problem.
        if type(device) is Device:
            did = device.id
            if 0 < len(did) <= MAX_DEVICE_ID_BYTES // 4 and did not in seen and device.replicas is None \
                    and type(device.health) is Health and all(type(n) is int and n >= 0 for n in device.numa_nodes):
                seen.add(did)
                kept.append(device)
                visible.append((did, device.health, device.numa_nodes, None))
                continue
        problem = _problem(device, seen)
        if problem:
            name = shorten(str(getattr(device, "id", repr(device))))
            log.error("resource %s: device %s %s; leaving it out", resource, name, problem)
            continue
        seen.add(device.id)
        kept.append(device)
        visible.append((device.id, device.health, device.numa_nodes, device.replicas))
    return kept, tuple(visible)


def _make_snapshot(version: int, devices: list[Device]) -> Snapshot:
    ids: list[str] = []
    by_id: dict[str, Device] = {}
    for device in devices:
        if device.replicas is None:
            ids.append(device.id)
            by_id[device.id] = device
        else:
            for n in range(device.replicas):
                rid = replica_id(device.id, n)
                ids.append(rid)
                by_id[rid] = device
    return Snapshot(version, tuple(devices), tuple(ids), by_id)


class ResourceState:
    """The current snapshot of one resource, and a condition to wait for the next."""

    def __init__(self, name: str, driver: str) -> None:
        self.name = name
        self.driver = driver
        self._cond = threading.Condition()
        self._update_lock = threading.Lock()  # one update at a time; streams wait on _cond only
        self._snapshot = Snapshot(version=0)
        self._visible: tuple[Visible, ...] = ()
        self._sent_version = -1

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, devices: Sequence[Device]) -> bool:
        """Take the driver's devices; return True when the kubelet must hear of it."""
        kept, visible = _check(self.name, devices)
        with self._update_lock:
            changed = visible != self._visible
            snapshot = _make_snapshot(self._snapshot.version + changed, kept)
            with self._cond:
                # Unchanged for the kubelet: still keep reasons and info up to date.
                self._snapshot = snapshot
                self._visible = visible
                if changed:
                    self._cond.notify_all()
        return changed

    def mark_unhealthy(self, reason: str) -> bool:
        """Keep the known IDs but vouch for none of them (a scan failed or hung)."""
        current = self._snapshot.devices
        return self.update([replace(d, health=Health.UNHEALTHY, reason=reason) for d in current])

    def withdraw(self) -> int:
        """Advertise no devices (the resource is going away); return that version."""
        self.update([])
        return self._snapshot.version

    def wait_newer(self, version: int, timeout: float, stop: Callable[[], bool]) -> Snapshot:
        """The snapshot once its version differs from ``version``, ``stop()`` or ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self._snapshot.version != version or stop(), timeout)
            return self._snapshot

    def mark_sent(self, version: int) -> None:
        with self._cond:
            self._sent_version = max(self._sent_version, version)
            self._cond.notify_all()

    def wait_sent(self, version: int, timeout: float) -> bool:
        """Wait until a ListAndWatch stream has sent ``version`` (or a later one)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._sent_version >= version, timeout)

    def wake(self) -> None:
        """Wake every waiting stream (so it can notice it should stop)."""
        with self._cond:
            self._cond.notify_all()
