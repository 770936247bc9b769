"""The checks every scan's device list goes through before the kubelet may see it.

One pass over the list (up to 10,000 devices every few hundred ms): the usual device takes a
fast path; anything else gets every check, and a device the kubelet could not take is left
out with the reason. ``multidp devices`` runs the same checks to say what a node would not serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import cast

import msgspec

from multidp.model import Device, Health
from multidp.names import MAX_DEVICE_ID_BYTES, MAX_REPLICAS, REPLICA_SEPARATOR, replica_id, shorten
from multidp.serving.wire import ENTRY_OVERHEAD_MIN, KUBELET_MESSAGE_LIMIT, UNHEALTHY_GROWTH_MAX

# What the kubelet sees of one device: (id, health, NUMA nodes, replicas).
Visible = tuple[str, Health, tuple[int, ...], int | None]

MAX_NUMA_NODE = 2**63 - 1  # NUMANode.ID is an int64 on the wire


def show(value: object) -> str:
    """``value`` for a log line: a short repr of plain data, the type of anything else."""
    if isinstance(value, (tuple, list, dict)) and len(value) > 8:  # a repr too long to be worth making
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (str, bytes, int, float, tuple, list, dict, type(None))):
        try:
            return shorten(repr(value))
        except Exception:  # noqa: BLE001 - a container may hold anything
            pass
    return f"a {type(value).__name__}"


def label(device: object) -> str:
    """How a log line names a device (a lone surrogate in an ID must not break the log handler)."""
    if not isinstance(device, Device):
        return show(device)
    if isinstance(device.id, str):
        return shorten(device.id.encode("utf-8", "backslashreplace").decode())
    return show(device.id)


def as_list(devices: object) -> Sequence[object] | None:
    """The driver's devices as a sequence, or None when they are none (a str, a mapping, a number)."""
    if isinstance(devices, (list, tuple)):
        return devices
    try:  # any other iterable (a generator, say), whatever it raises
        return None if isinstance(devices, (str, bytes, Mapping)) else list(devices)  # type: ignore[call-overload]
    except Exception:  # noqa: BLE001 - the driver's code
        return None


def device_problem(device: object, seen: set[str]) -> str | None:
    """Why the kubelet cannot take ``device``, or None (the slow path of :func:`check`)."""
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
        return f"has NUMA nodes {show(numa)} (a tuple of integers 0..2**63-1)"
    if not isinstance(device.health, Health):
        return f"has health {show(device.health)}, not a multidp Health"
    replicas = device.replicas
    if replicas is not None and (type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS):
        return f"asks for {show(replicas)} replicas (an integer 1..{MAX_REPLICAS})"
    if replicas is not None and REPLICA_SEPARATOR in did:
        return f"asks for replicas, but its ID holds {REPLICA_SEPARATOR!r} (replicas are advertised as <id>::<n>)"
    if type(device.cdi_devices) is not tuple:
        return f"has cdi_devices {show(device.cdi_devices)}, not a tuple of CDI names"
    return None


class Checked(msgspec.Struct):
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


def check(devices: Iterable[object]) -> Checked:
    """The devices the kubelet can take (each ID once, the first wins), and what it sees of them."""
    seen: set[str] = set()
    kept: list[Device] = []
    visible: list[Visible] = []
    problems: dict[tuple[str, str], None] = {}
    replicated: dict[str, tuple[Device, list[str]]] = {}
    for device in devices:
        # Fast path for the usual device (ASCII ID: as many bytes as characters; no NUMA node or one,
        # checked without a generator); the rest goes through device_problem, which checks every type.
        if type(device) is Device:
            did, numa = device.id, device.numa_nodes
            if type(did) is str and did.isascii() and 0 < len(did) <= MAX_DEVICE_ID_BYTES and did not in seen \
                    and device.replicas is None and type(device.health) is Health and type(numa) is tuple \
                    and type(device.cdi_devices) is tuple \
                    and (not numa or (len(numa) == 1 and type(numa[0]) is int and 0 <= numa[0] <= MAX_NUMA_NODE)
                         or all(type(n) is int and 0 <= n <= MAX_NUMA_NODE for n in numa)):
                seen.add(did)
                kept.append(device)
                visible.append((did, device.health, numa, None))
                continue
        problem = device_problem(device, seen)
        good = cast(Device, device)  # when there is no problem
        names = [replica_id(good.id, n) for n in range(good.replicas)] if not problem and good.replicas else []
        if names and not seen.isdisjoint(names):
            problem = f"would advertise {shorten(next(n for n in names if n in seen))}, which is listed already"
        if problem:
            problems[(label(device), problem)] = None
            continue
        seen.add(good.id)
        seen.update(names)
        kept.append(good)
        visible.append((good.id, good.health, good.numa_nodes, good.replicas))
        if names:
            replicated[good.id] = (good, names)
    return Checked(kept, tuple(visible), problems, replicated)


def left_out(devices: object) -> tuple[list[tuple[object, str]], str | None]:
    """What the host would not advertise of a scan's ``devices``: each device left out with why, and
    why the whole list would be refused (None when it would be taken)."""
    items = as_list(devices)
    if items is None:
        return [], f"it is a {type(devices).__name__}, not a list of Devices"
    checked = check(items)
    kept = {id(device) for device in checked.kept}
    why: dict[str, str] = {}
    for name, problem in checked.problems:
        why.setdefault(name, problem)
    return [(d, why.get(label(d), "is left out")) for d in items if id(d) not in kept], checked.too_big()
