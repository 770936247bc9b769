"""From what a scan saw to resources and devices, remembering where each device was.

Both vendors name a device's resource after ids the hardware reports (Intel's
interface and AFU ids, AMD's shell name and timestamp). When such an id turns
unusable (all f, unreadable, malformed) the device cannot say where it
belongs, so it stays in the resource it was last seen in, as Unhealthy, and
no resource is ever made from an unusable id. A device never seen with a
usable id is left out, with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from multidp import Device, DeviceNode, Health, Mount, SemVer, resource_name_problem


class Grant(msgspec.Struct, frozen=True):
    """What a container gets for one device."""

    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    cdi_devices: tuple[str, ...] = ()  # fully qualified CDI names, for the CRI cdi_devices field


class Observed(msgspec.Struct, frozen=True):
    """One device as a scan saw it.

    ``resource`` is the computed resource name, or None with ``unusable``
    saying why it cannot be computed now. ``faults`` are other reasons the
    device is unusable (a device node missing).
    """

    device_id: str
    what: str
    resource: str | None
    unusable: str = ""
    faults: tuple[str, ...] = ()
    numa: tuple[int, ...] = ()
    info: Mapping[str, str] = msgspec.field(default_factory=dict)
    grant: Grant = Grant()
    attributes: Mapping[str, bool | int | str | SemVer] = msgspec.field(default_factory=dict)  # for DRA (describe.py)


Inventory = dict[str, list[Device]]
Grants = dict[tuple[str, str], Grant]


class Placer:
    """Places observed devices into resources; remembers each device's last resource."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self.overrides = dict(overrides)
        self.last: dict[str, str] = {}  # device id -> served resource name

    def served_name(self, computed: str) -> tuple[str | None, str]:
        """The name to serve ``computed`` under, or None and why it cannot be served."""
        name = self.overrides.get(computed, computed)
        problem = resource_name_problem(name)
        if problem is None:
            return name, ""
        hint = "" if name != computed else f"; map it to a shorter name under drivers.fpga.names[{computed!r}]"
        return None, f"resource name {name!r} is not valid: {problem}{hint}"

    def place(self, observed: list[Observed], problems: dict[str, str]) -> tuple[Inventory, Grants]:
        inventory: Inventory = {}
        grants: Grants = {}
        seen: set[str] = set()
        for item in observed:
            if item.device_id in seen:
                problems[f"duplicate:{item.device_id}"] = f"{item.what}: device ID seen twice; kept the first"
                continue
            seen.add(item.device_id)
            reasons = list(item.faults)
            resource = None
            if item.resource is not None:
                resource, unusable = self.served_name(item.resource)
            else:
                unusable = item.unusable
            if resource is None:
                reasons.insert(0, unusable)
                resource = self.last.get(item.device_id)
                if resource is None:
                    problems[f"skip:{item.device_id}"] = f"{item.what} is not served: {unusable}"
                    continue
            self.last[item.device_id] = resource
            reason = "; ".join(reasons)
            if reason:
                problems[f"unhealthy:{item.device_id}"] = f"{item.what} in {resource} is Unhealthy: {reason}"
            inventory.setdefault(resource, []).append(Device(
                id=item.device_id,
                health=Health.UNHEALTHY if reason else Health.HEALTHY,
                numa_nodes=item.numa,
                reason=reason,
                info=dict(item.info),
                cdi_devices=item.grant.cdi_devices,  # Unhealthy while the host cannot write their spec
                attributes=item.attributes,
            ))
            grants[(resource, item.device_id)] = item.grant
        # A device that vanished from sysfs is gone: forget where it was.
        for device_id in [d for d in self.last if d not in seen]:
            del self.last[device_id]
        return inventory, grants


class ProblemLog:
    """Logs each problem once when it appears or changes, and once when it clears.

    Scans run every half second; a log line per scan would drown the node's logs.
    """

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.current: dict[str, str] = {}

    def update(self, problems: Mapping[str, str]) -> None:
        for key, message in problems.items():
            if self.current.get(key) != message:
                self.log.warning("%s", message)
        for key, message in self.current.items():
            if key not in problems:
                self.log.info("no longer: %s", message)
        self.current = dict(problems)
