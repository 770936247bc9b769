"""From a claim's devices to CDI device IDs: one driver answer per claim request.

Each (request, resource) of a claim is one ``allocate()`` call, with the claim's UID and request name.
The answer's own CDI names pass through, once each, on the device that declares them
(``Device.cdi_devices``), the rest on the request's first device: the kubelet hands the runtime every
device's IDs, and a name given twice would be injected twice. Device nodes, mounts and variables become
one device of the claim's CDI spec, named ``<claim uid>-<n>``.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from multidp.dra.checkpoint import PreparedDevice
from multidp.dra.claims import ClaimRef
from multidp.dra.claimspecs import AnswerRefused, claim_kind, edits_of
from multidp.errors import DriverCallError
from multidp.model import AllocationRequest, CDIDeviceSpec
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry

Declared = Callable[[str, str], "tuple[str, ...]"]  # (pool, device name) -> the CDI names the device declares


class Failed(Exception):
    """One claim cannot be prepared; the message is what the kubelet is told."""


class Answering(msgspec.Struct, frozen=True):
    """What answering needs of the front-end: the driver, its runner and CDI state."""

    driver: str
    dra_name: str
    runner: DriverRunner | None
    cdi: CDIRegistry
    declared: Declared
    timeout: float
    stopped: str = ""


def answers(how: Answering, claim: ClaimRef, devices: tuple[PreparedDevice, ...]
            ) -> tuple[tuple[PreparedDevice, ...], list[tuple[str, CDIDeviceSpec]]]:
    """The devices with their CDI IDs, and the per-claim spec's devices to write; Failed naming why not."""
    groups: dict[tuple[str, str], list[PreparedDevice]] = {}
    for device in devices:
        groups.setdefault((device.request, device.resource), []).append(device)
    cdi_ids: dict[tuple[str, str, str], tuple[str, ...]] = {}  # (request, resource, device) -> IDs
    edits: list[tuple[str, CDIDeviceSpec]] = []
    for (request, resource), members in groups.items():
        names, own = _ask(how, claim, request, resource, members)
        if own is not None:
            device_name = f"{claim.uid}-{len(edits)}"
            edits.append((device_name, own))
            names.append(f"{claim_kind(how.dra_name)}={device_name}")
        if not names:
            raise Failed(f"claim {claim}, request {request}: driver {how.driver} answered nothing a container "
                         "could use (no CDI devices, device nodes, mounts or variables)")
        cdi_ids.update(_spread(how, request, resource, members, names))
    return tuple(msgspec.structs.replace(d, cdi_ids=cdi_ids[(d.request, d.resource, d.device)]) for d in devices), edits


def _ask(how: Answering, claim: ClaimRef, request: str, resource: str, members: list[PreparedDevice]
         ) -> tuple[list[str], CDIDeviceSpec | None]:
    ids = tuple(dict.fromkeys(d.driver_id for d in members))
    asked = AllocationRequest(resource, ids, ids, claim_uid=claim.uid, request_name=request)
    if how.runner is None:
        raise Failed(f"claim {claim}: driver {how.driver} stopped ({how.stopped})")
    try:
        answer = how.runner.call("allocate", how.runner.driver.allocate, asked, timeout=how.timeout)
        own = edits_of(answer, how.driver)
    except (DriverCallError, AnswerRefused) as exc:
        raise Failed(f"claim {claim}, request {request}: {exc}") from None
    names = list(dict.fromkeys(getattr(answer, "cdi_devices", [])))
    if names and (problem := how.cdi.problem(how.driver, names)):
        raise Failed(f"claim {claim}, request {request}: {problem}")
    return names, own


def _spread(how: Answering, request: str, resource: str, members: list[PreparedDevice], names: list[str]
            ) -> dict[tuple[str, str, str], tuple[str, ...]]:
    owner = {name: d.device for d in members for name in how.declared(d.pool, d.device)}
    spread: dict[str, list[str]] = {d.device: [] for d in members}
    for name in names:
        spread[owner.get(name, members[0].device)].append(name)
    return {(request, resource, device): tuple(ids) for device, ids in spread.items()}
