"""One resource's devices as the kubelet sees them: versioned snapshots.

The host owns the replica mechanism here: a device with ``replicas=n`` is
advertised as ``<id>::0`` … ``<id>::<n-1>``, and every advertised ID maps back
to the driver's device. A new snapshot (and so a ListAndWatch message) is made
only when something the kubelet sees changed: IDs, health or NUMA nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from multidp.model import Device, Health
from multidp.names import MAX_DEVICE_ID_BYTES, REPLICA_SEPARATOR, replica_id, shorten

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Advertised:
    """One ID the kubelet sees, and the driver device behind it."""

    id: str
    device: Device


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of a resource at one version."""

    version: int
    devices: tuple[Device, ...] = ()
    advertised: tuple[Advertised, ...] = ()
    by_id: Mapping[str, Advertised] = field(default_factory=dict)

    @property
    def healthy_ids(self) -> list[str]:
        return [a.id for a in self.advertised if a.device.healthy]


def _visible(devices: Sequence[Device]) -> tuple[tuple[str, str, tuple[int, ...], int | None], ...]:
    return tuple((d.id, d.health.value, d.numa_nodes, d.replicas) for d in devices)


def _checked(resource: str, devices: Sequence[Device]) -> list[Device]:
    """Devices with an ID the kubelet can take, each once (the first wins)."""
    seen: set[str] = set()
    kept: list[Device] = []
    for device in devices:
        problem = None
        if not isinstance(device, Device):
            problem = f"is a {type(device).__name__}, not a multidp Device"
        elif not device.id or len(device.id.encode()) > MAX_DEVICE_ID_BYTES:
            problem = f"has an empty or over-long ID ({len(device.id.encode())} bytes)"
        elif device.id in seen:
            problem = "is listed twice"
        elif REPLICA_SEPARATOR in device.id and device.replicas:
            problem = f"has replicas but its ID contains {REPLICA_SEPARATOR!r}"
        elif device.replicas is not None and device.replicas < 1:
            problem = f"asks for {device.replicas} replicas (at least 1)"
        if problem:
            name = shorten(getattr(device, "id", repr(device)))
            log.error("resource %s: device %s %s; leaving it out", resource, name, problem)
            continue
        seen.add(device.id)
        kept.append(device)
    return kept


def _make_snapshot(version: int, devices: Sequence[Device]) -> Snapshot:
    advertised: list[Advertised] = []
    for device in devices:
        if device.replicas is None:
            advertised.append(Advertised(device.id, device))
        else:
            advertised.extend(Advertised(replica_id(device.id, i), device) for i in range(device.replicas))
    return Snapshot(version, tuple(devices), tuple(advertised), {a.id: a for a in advertised})


class ResourceState:
    """The current snapshot of one resource, and a condition to wait for the next."""

    def __init__(self, name: str, driver: str) -> None:
        self.name = name
        self.driver = driver
        self._cond = threading.Condition()
        self._snapshot = Snapshot(version=0)
        self._visible: tuple[object, ...] = ()
        self._sent_version = -1

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, devices: Sequence[Device]) -> bool:
        """Take the driver's devices; return True when the kubelet must hear of it."""
        devices = _checked(self.name, devices)
        visible = _visible(devices)
        with self._cond:
            changed = visible != self._visible
            # Unchanged for the kubelet: still keep reasons and info up to date.
            self._snapshot = _make_snapshot(self._snapshot.version + changed, devices)
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
