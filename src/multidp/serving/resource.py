"""One resource's devices as the kubelet sees them: versioned snapshots, each with its encoded list.

The host owns the replica mechanism here: a device with ``replicas=n`` is
advertised as ``<id>::0`` … ``<id>::<n-1>``, and every advertised ID maps back
to the driver's device. A new snapshot (and so a ListAndWatch message) is made
only when something the kubelet sees changed: IDs, health or NUMA nodes. A
malformed device is left out, logged once per device and problem; a list the
kubelet could not take (over 4 MiB) is refused whole and the previous one stays.
This runs on every scan (up to 10,000 devices, every few hundred ms): one pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import cast

from multidp.model import Device, Health
from multidp.names import MAX_DEVICE_ID_BYTES, MAX_REPLICAS, REPLICA_SEPARATOR, replica_id, shorten
from multidp.serving.wire import ENTRY_OVERHEAD_MIN, KUBELET_MESSAGE_LIMIT, UNHEALTHY_GROWTH_MAX, ListEncoder

log = logging.getLogger(__name__)

# What the kubelet sees of one device: (id, health, NUMA nodes, replicas).
Visible = tuple[str, Health, tuple[int, ...], int | None]

MAX_NUMA_NODE = 2**63 - 1  # NUMANode.ID is an int64 on the wire
LOGGED_PER_UPDATE = 10  # new left-out devices logged one by one; the rest are counted in one line


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of a resource at one version: ``ids`` advertised in order, ``by_id`` mapping
    each to the driver's device behind it (one device for all its replicas), ``message`` the encoded list."""

    version: int
    devices: tuple[Device, ...] = ()
    ids: tuple[str, ...] = ()
    by_id: Mapping[str, Device] = field(default_factory=dict)
    message: bytes = b""

    def advertised(self) -> list[tuple[str, Device]]:
        by_id = self.by_id
        return [(i, by_id[i]) for i in self.ids]

    @property
    def healthy_ids(self) -> list[str]:
        by_id = self.by_id
        return [i for i in self.ids if by_id[i].health is Health.HEALTHY]


def _show(value: object) -> str:
    """``value`` for a log line: a short repr of plain data, the type of anything else."""
    if isinstance(value, (tuple, list, dict)) and len(value) > 8:  # a repr too long to be worth making
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (str, bytes, int, float, tuple, list, dict, type(None))):
        try:
            return shorten(repr(value))
        except Exception:  # noqa: BLE001 - a container may hold anything
            pass
    return f"a {type(value).__name__}"


def _label(device: object) -> str:
    """How a log line names a device (a lone surrogate in an ID must not break the log handler)."""
    if not isinstance(device, Device):
        return _show(device)
    if isinstance(device.id, str):
        return shorten(device.id.encode("utf-8", "backslashreplace").decode())
    return _show(device.id)


def _as_list(devices: object) -> Sequence[object] | None:
    """The driver's devices as a sequence, or None when they are none (a str, a mapping, a number)."""
    if isinstance(devices, (list, tuple)):
        return devices
    try:  # any other iterable (a generator, say), whatever it raises
        return None if isinstance(devices, (str, bytes, Mapping)) else list(devices)  # type: ignore[call-overload]
    except Exception:  # noqa: BLE001 - the driver's code
        return None


def _problem(device: object, seen: set[str]) -> str | None:
    """Why the kubelet cannot take ``device``, or None (the slow path of :func:`_check`)."""
    if not isinstance(device, Device):
        return f"is a {type(device).__name__}, not a multidp Device"
    did = device.id
    if not isinstance(did, str):
        return f"has an ID of type {type(did).__name__}, not str"
    try:
        size = len(did.encode())
    except UnicodeEncodeError:
        return "has an ID that is not valid UTF-8 (it holds a lone surrogate)"
    if size == 0 or size > MAX_DEVICE_ID_BYTES:
        return f"has an empty or over-long ID ({size} bytes); an ID has 1..{MAX_DEVICE_ID_BYTES} bytes"
    if did in seen:
        return "is listed twice"
    numa = device.numa_nodes
    if not isinstance(numa, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_NUMA_NODE for n in numa):
        return f"has NUMA nodes {_show(numa)} (a tuple of integers 0..2**63-1)"
    if not isinstance(device.health, Health):
        return f"has health {_show(device.health)}, not a multidp Health"
    replicas = device.replicas
    if replicas is not None and (type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS):
        return f"asks for {_show(replicas)} replicas (an integer 1..{MAX_REPLICAS})"
    if replicas is not None and REPLICA_SEPARATOR in did:
        return f"asks for replicas, but its ID holds {REPLICA_SEPARATOR!r} (replicas are advertised as <id>::<n>)"
    return None


@dataclass
class _Checked:
    """One scan's devices after the checks."""

    kept: list[Device]
    visible: tuple[Visible, ...]
    problems: dict[tuple[str, str], None]  # (device, problem), in scan order
    replicated: dict[str, tuple[Device, list[str]]]  # a replicated device's ID -> it, its advertised IDs

    def advertised(self) -> int:
        """How many IDs the kubelet would see, replicas counted."""
        return len(self.visible) + sum(len(names) - 1 for _, names in self.replicated.values())

    def floor(self) -> int:
        """The encoded list is at least this many bytes (each replica ID: the device's, "::", a digit)."""
        plain = len(self.visible) - len(self.replicated)
        return plain * (1 + ENTRY_OVERHEAD_MIN) + sum(
            len(names) * (len(did.encode()) + 3 + ENTRY_OVERHEAD_MIN) for did, (_, names) in self.replicated.items())

    def too_big(self, size: int | None = None) -> str | None:
        """Why the list (``size`` bytes encoded; unknown yet: its floor) cannot go out, or None.

        It must fit even once every device is Unhealthy, as a failed scan makes it.
        """
        healthy = 0 if size is None else list(map(itemgetter(1), self.visible)).count(Health.HEALTHY) + sum(
            len(names) - 1 for device, names in self.replicated.values() if device.health is Health.HEALTHY)
        if (self.floor() if size is None else size + UNHEALTHY_GROWTH_MAX * healthy) <= KUBELET_MESSAGE_LIMIT:
            return None
        amount = f"at least {self.floor():,}" if size is None else f"{size:,}"
        return (f"{len(self.kept):,} devices, {self.advertised():,} IDs with replicas, {amount} bytes "
                f"(room kept for every device turning Unhealthy), over the kubelet's limit of "
                f"{KUBELET_MESSAGE_LIMIT:,} bytes per ListAndWatch message")


def _check(devices: Iterable[object]) -> _Checked:
    """The devices the kubelet can take (each ID once, the first wins), and what it sees of them."""
    seen: set[str] = set()
    kept: list[Device] = []
    visible: list[Visible] = []
    problems: dict[tuple[str, str], None] = {}
    replicated: dict[str, tuple[Device, list[str]]] = {}
    for device in devices:
        # Fast path for the usual device (ASCII ID: as many bytes as characters; no NUMA node or one,
        # checked without a generator); the rest goes through _problem, which checks every type.
        if type(device) is Device:
            did, numa = device.id, device.numa_nodes
            if type(did) is str and did.isascii() and 0 < len(did) <= MAX_DEVICE_ID_BYTES and did not in seen \
                    and device.replicas is None and type(device.health) is Health and type(numa) is tuple \
                    and (not numa or (len(numa) == 1 and type(numa[0]) is int and 0 <= numa[0] <= MAX_NUMA_NODE)
                         or all(type(n) is int and 0 <= n <= MAX_NUMA_NODE for n in numa)):
                seen.add(did)
                kept.append(device)
                visible.append((did, device.health, numa, None))
                continue
        problem = _problem(device, seen)
        good = cast(Device, device)  # when there is no problem
        names = [replica_id(good.id, n) for n in range(good.replicas)] if not problem and good.replicas else []
        if names and not seen.isdisjoint(names):
            problem = f"would advertise {shorten(next(n for n in names if n in seen))}, which is listed already"
        if problem:
            problems[(_label(device), problem)] = None
            continue
        seen.add(good.id)
        seen.update(names)
        kept.append(good)
        visible.append((good.id, good.health, good.numa_nodes, good.replicas))
        if names:
            replicated[good.id] = (good, names)
    return _Checked(kept, tuple(visible), problems, replicated)


def _make_snapshot(version: int, checked: _Checked, message: bytes = b"") -> Snapshot:
    ids: list[str] = []
    by_id: dict[str, Device] = {}
    for device in checked.kept:
        if device.replicas is None:
            ids.append(device.id)
            by_id[device.id] = device
        else:
            for rid in checked.replicated[device.id][1]:
                ids.append(rid)
                by_id[rid] = device
    return Snapshot(version, tuple(checked.kept), tuple(ids), by_id, message)


class ResourceState:
    """The current snapshot of one resource, and a condition to wait for the next."""

    def __init__(self, name: str, driver: str) -> None:
        self.name = name
        self.driver = driver
        self._cond = threading.Condition()
        self._update_lock = threading.Lock()  # one update at a time; streams wait on _cond only
        self._snapshot = Snapshot(version=0, message=b"")
        self._visible: tuple[Visible, ...] = ()
        self._encoder = ListEncoder()
        self._left_out: dict[tuple[str, str], None] = {}  # what the last scan left out (logged then)
        self._refused: object = None  # the last list refused whole (logged then), until one is taken
        self._sent_version = -1

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, devices: object) -> bool:
        """Take the driver's devices; return True when the kubelet must hear of it."""
        return self._take(devices, scanned=True)

    def _take(self, devices: object, scanned: bool) -> bool:
        with self._update_lock:
            items = _as_list(devices)
            if items is None:
                return self._refuse(type(devices), f"it is a {type(devices).__name__}, not a list of Devices")
            checked = _check(items)
            if scanned:
                self._log_left_out(checked.problems)
            changed = checked.visible != self._visible
            if changed and checked.visible == self._refused:
                return False  # refused already, and logged then
            # Unchanged for the kubelet: still keep reasons and info up to date.
            snapshot = self._next(checked) if changed else \
                _make_snapshot(self._snapshot.version, checked, self._snapshot.message)
            if isinstance(snapshot, str):
                return self._refuse(checked.visible, snapshot)
            self._refused = None
            with self._cond:
                self._snapshot, self._visible = snapshot, checked.visible
                if changed:
                    self._cond.notify_all()
            return changed

    def _next(self, checked: _Checked) -> Snapshot | str:
        """The next snapshot with its message, or why the kubelet could not take it."""
        problem = checked.too_big()  # from the floor: a list far too big is never built
        if problem:
            return problem
        snapshot = _make_snapshot(self._snapshot.version + 1, checked)
        try:
            message = self._encoder.encode(snapshot)
        except Exception as exc:  # noqa: BLE001 - the checks should make this impossible
            return f"it does not encode ({type(exc).__name__}: {exc})"
        return checked.too_big(len(message)) or replace(snapshot, message=message)

    def _refuse(self, key: object, problem: str) -> bool:
        if key != self._refused:
            self._refused = key
            log.error("resource %s: the list of driver %s is refused: %s; the kubelet keeps the previous list "
                      "(%d IDs)", self.name, self.driver, problem, len(self._snapshot.ids))
        return False

    def _log_left_out(self, problems: dict[tuple[str, str], None]) -> None:
        """Log each (device, problem) the previous scan did not have: once, not on every scan."""
        new = [p for p in problems if p not in self._left_out]
        self._left_out = problems
        for name, problem in new[:LOGGED_PER_UPDATE]:
            log.error("resource %s: device %s %s; leaving it out", self.name, name, problem)
        if len(new) > LOGGED_PER_UPDATE:
            log.error("resource %s: and %d more devices left out (not listed here)", self.name,
                      len(new) - LOGGED_PER_UPDATE)

    def mark_unhealthy(self, reason: str) -> bool:
        """Keep the known IDs but vouch for none of them (a scan failed or hung)."""
        current = self._snapshot.devices
        return self._take([replace(d, health=Health.UNHEALTHY, reason=reason) for d in current], scanned=False)

    def withdraw(self) -> int:
        """Advertise no devices (the resource is going away); return that version."""
        self._take([], scanned=False)
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
