"""What of a driver's scan a front-end may offer, and which devices DRA claims still hold.

Scans pass the device-plugin path's own checks (resource names, device checks), each problem logged
once; while a driver's CDI specs cannot be written, its devices that name CDI devices are Unhealthy
with the reason. A driver moving from DRA to the device plugin keeps the devices its prepared claims
hold Unhealthy there, naming the claim, until they are unprepared: never one device for two pods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from multidp.dra.checkpoint import PreparedClaim
from multidp.model import Device, Health
from multidp.names import resource_name_problem
from multidp.serving.devicecheck import as_list, check
from multidp.serving.resource import cdi_marked

Note = Callable[[str, str], None]  # (driver, message): logged once


def usable(driver: str, inventory: Mapping[str, Sequence[Device]], cdi_problem: str | None,
           note: Note) -> dict[str, Sequence[Device]]:
    """The scan with what the host cannot offer left out, and CDI-dependent devices marked."""
    kept_resources: dict[str, Sequence[Device]] = {}
    for resource, devices in inventory.items():
        why = (resource_name_problem(resource) if isinstance(resource, str)
               else f"its name is a {type(resource).__name__}, not a string")
        items = as_list(devices)
        if why is None and items is None:
            why = f"its devices are a {type(devices).__name__}, not a list"
        if why is not None or items is None:
            note(driver, f"resource {resource!r} left out: {why}")
            continue
        checked = check(items)  # the device plugin's own checks
        for device, problem in checked.problems:
            note(driver, f"resource {resource}: device {device} left out: it {problem}")
        kept: list[object] = list(checked.kept)
        marked = cdi_marked(kept, cdi_problem) if cdi_problem else kept
        kept_resources[resource] = [d for d in marked if isinstance(d, Device)]
    return kept_resources


def mark(inventory: Mapping[str, Sequence[Device]], reasons: Mapping[tuple[str, str], str]
         ) -> dict[str, Sequence[Device]]:
    """``inventory`` with each device in ``reasons`` ((resource, ID) -> why) Unhealthy for that reason."""
    return {resource: [replace(d, health=Health.UNHEALTHY, reason=reasons[(resource, d.id)])
                       if (resource, d.id) in reasons else d for d in devices]
            for resource, devices in inventory.items()}


def mark_held(inventory: Mapping[str, Sequence[Device]], claims: Sequence[PreparedClaim]
              ) -> dict[str, Sequence[Device]]:
    """``inventory`` with each device a prepared (non-admin) claim holds Unhealthy, naming the claim."""
    return mark(inventory, {(d.resource, d.driver_id): f"held by DRA claim {c.namespace}/{c.name} until it is "
                                                       "unprepared" for c in claims for d in c.devices if not d.admin})
