"""One resource's devices as the kubelet sees them: versioned snapshots, each with its encoded list.

The host owns the replica mechanism here: a device with ``replicas=n`` is
advertised as ``<id>::0`` … ``<id>::<n-1>``, and every advertised ID maps back
to the driver's device. A new snapshot (and so a ListAndWatch message) is made
only when something the kubelet sees changed: IDs, health or NUMA nodes. A
malformed device is left out, logged once per device and problem; a list the
kubelet could not take (over 4 MiB) is refused whole and the previous one stays.
This runs on every scan (up to 10,000 devices, every few hundred ms): one pass.

While the driver's CDI specs cannot be written, a device that names CDI devices
(``Device.cdi_devices``) is advertised Unhealthy with the reason: its allocations
would be refused, so the scheduler must not send pods to it. The driver's last list
is kept as it gave it, so the devices are Healthy again once the specs are written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace  # on Device: the public type stays a dataclass

import msgspec

from multidp.model import Device, Health
from multidp.names import shorten
from multidp.serving.devicecheck import Checked, Visible, as_list, check, label, show
from multidp.serving.wire import ListEncoder

log = logging.getLogger(__name__)

LOGGED_PER_UPDATE = 10  # new left-out devices logged one by one; the rest are counted in one line
NAMES_SHOWN, NAME_SHOWN = 3, 200  # CDI names in a device's reason: a few, whole (a GPU's holds its UUID)


class Snapshot(msgspec.Struct, frozen=True):
    """An immutable view of a resource at one version: ``ids`` advertised in order, ``by_id`` mapping
    each to the driver's device behind it (one device for all its replicas), ``message`` the encoded list."""

    version: int
    devices: tuple[Device, ...] = ()
    ids: tuple[str, ...] = ()
    by_id: Mapping[str, Device] = msgspec.field(default_factory=dict)
    message: bytes = b""

    def advertised(self) -> list[tuple[str, Device]]:
        by_id = self.by_id
        return [(i, by_id[i]) for i in self.ids]

    @property
    def healthy_ids(self) -> list[str]:
        by_id = self.by_id
        return [i for i in self.ids if by_id[i].health is Health.HEALTHY]


def cdi_marked(devices: Sequence[object], problem: str) -> list[object]:
    """``devices`` with each one that names CDI devices Unhealthy: it needs them, but ``problem``."""
    reasons: dict[int, str] = {}  # by the names' tuple: a shared pool's devices often share one
    marked: list[object] = []
    for device in devices:
        if not isinstance(device, Device) or type(device.cdi_devices) is not tuple or not device.cdi_devices:
            marked.append(device)  # names nothing (or is left out by the checks anyway)
            continue
        names = device.cdi_devices
        why = reasons.get(id(names))
        if why is None:
            shown = ", ".join(shorten(n, NAME_SHOWN) if isinstance(n, str) else show(n) for n in names[:NAMES_SHOWN])
            if len(names) > NAMES_SHOWN:
                shown += f" and {len(names) - NAMES_SHOWN} more"
            why = reasons[id(names)] = f"needs CDI device{'s' if len(names) > 1 else ''} {shown}, but {problem}"
        # The driver's own reason stays first: it is about the device itself.
        reason = f"{device.reason}; {why}" if device.reason else why
        if type(device) is Device:  # built directly: dataclasses.replace costs 5x as much on 10,000 devices
            marked.append(Device(device.id, Health.UNHEALTHY, device.numa_nodes, device.replicas, reason, device.info,
                                 names, device.attributes, device.capacity))
        else:
            marked.append(replace(device, health=Health.UNHEALTHY, reason=reason))
    return marked


def _make_snapshot(version: int, checked: Checked, message: bytes = b"") -> Snapshot:
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
        self._update_lock = threading.RLock()  # one update at a time; streams are woken through listeners
        self._snapshot = Snapshot(version=0, message=b"")
        self._visible: tuple[Visible, ...] = ()
        self._encoder = ListEncoder()
        self._left_out: dict[tuple[str, str], None] = {}  # what the last scan left out (logged then)
        self._refused: object = None  # the last list refused whole (logged then), until one is taken
        self._sent_version = -1
        self._scanned: tuple[Visible, ...] = ()  # what the last scan said: health changes are logged against it
        self._unscanned = False  # the list changed since then without a scan (a failed scan, a withdrawal)
        self._given: Sequence[object] = ()  # the last list as given, before CDI marks: taken again when they change
        self._given_scanned = False
        self._cdi_problem: str | None = None  # why the driver's CDI specs are not written, or None
        self._listeners: list[Callable[[], None]] = []  # streams on the event loop, woken on each change

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, devices: object) -> bool:
        """Take the driver's devices; return True when the kubelet must hear of it."""
        return self._take(devices, scanned=True)

    def _take(self, devices: object, scanned: bool) -> bool:
        with self._update_lock:
            items = as_list(devices)
            if items is None:
                return self._refuse(type(devices), f"it is a {type(devices).__name__}, not a list of Devices")
            self._given, self._given_scanned = items, scanned
            if self._cdi_problem is not None:
                items = cdi_marked(items, self._cdi_problem)
            checked = check(items)
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
                    self._call_listeners()
            # After the streams were woken: the log waits, the kubelet does not. Against the last scan,
            # not the last list: a failed scan's all-Unhealthy list says nothing about each device.
            if scanned:
                previous, self._scanned = self._scanned, checked.visible
                if (changed or self._unscanned) and previous != checked.visible:
                    self._log_health_changes(previous, checked)
                self._unscanned = False
            elif changed:
                self._unscanned = True
            return changed

    def _log_health_changes(self, previous: tuple[Visible, ...], checked: Checked) -> None:
        """One line per device whose health changed (or that arrived Unhealthy), with the driver's reason."""
        if len(previous) == len(checked.visible) and all(
                old[0] == new[0] for old, new in zip(previous, checked.visible, strict=True)):
            before = [old[1] for old in previous]  # the usual change: same IDs in the same order
        else:
            health = {old[0]: old[1] for old in previous}
            before = [health.get(new[0], Health.HEALTHY) for new in checked.visible]
        changes = [(device, was) for device, was in zip(checked.kept, before, strict=True) if device.health is not was]
        for device, _ in changes[:LOGGED_PER_UPDATE]:
            if device.health is Health.HEALTHY:
                log.info("resource %s: device %s is Healthy again", self.name, label(device))
            else:
                log.warning("resource %s: device %s is Unhealthy: %s", self.name, label(device),
                            device.reason or "(the driver gave no reason)")
        if len(changes) > LOGGED_PER_UPDATE:
            log.warning("resource %s: and %d more devices changed health (not listed here)", self.name,
                        len(changes) - LOGGED_PER_UPDATE)

    def _next(self, checked: Checked) -> Snapshot | str:
        """The next snapshot with its message, or why the kubelet could not take it."""
        problem = checked.too_big()  # from the floor: a list far too big is never built
        if problem:
            return problem
        snapshot = _make_snapshot(self._snapshot.version + 1, checked)
        try:
            message = self._encoder.encode(snapshot)
        except Exception as exc:  # noqa: BLE001 - the checks should make this impossible
            return f"it does not encode ({type(exc).__name__}: {exc})"
        return checked.too_big(len(message)) or msgspec.structs.replace(snapshot, message=message)

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

    def use_cdi_problem(self, problem: str | None) -> bool:
        """Why the driver's CDI specs are not written (None: they are); True when the kubelet must hear of it.

        The last list is taken again with the devices that name CDI devices marked (or no longer
        marked), and logged as a scan's would be when it came from one.
        """
        with self._update_lock:
            if problem == self._cdi_problem:
                return False
            self._cdi_problem = problem
            return self._take(self._given, scanned=self._given_scanned)

    def mark_unhealthy(self, reason: str) -> bool:
        """Keep the known IDs but vouch for none of them (a scan failed or hung)."""
        current = self._snapshot.devices
        return self._take([replace(d, health=Health.UNHEALTHY, reason=reason) for d in current], scanned=False)

    def withdraw(self) -> int:
        """Advertise no devices (the resource is going away); return that version."""
        self._take([], scanned=False)
        return self._snapshot.version

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
            self._call_listeners()

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` after every change and :meth:`wake` (it must only schedule, never block)."""
        with self._cond:
            self._listeners.append(wake)

    def unlisten(self, wake: Callable[[], None]) -> None:
        with self._cond:
            if wake in self._listeners:
                self._listeners.remove(wake)

    def _call_listeners(self) -> None:
        for wake in self._listeners:
            try:
                wake()
            except Exception:  # noqa: BLE001 - one broken listener must not stop an update
                log.exception("resource %s: waking a stream failed", self.name)
