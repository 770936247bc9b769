"""The error contract for Allocate and GetPreferredAllocation (docs/design.md, "The error contract").

Checked in this order, each failure an :class:`InvalidRequest` (INVALID_ARGUMENT)
naming the resource and a few offending IDs with a count, with nothing in the
host changed: no containers, more than 1,024 containers, or a container without
IDs; an ID over 1,024 bytes; an ID the resource does not have. Duplicates are
folded, not refused. The text keeps NVIDIA's wording (``invalid allocation
request for "R": invalid request: unknown device: X``), which operators know.

The other side of the contract is the driver's: :func:`allocation_problem` says
what is wrong with an Allocate answer (BadDriverAnswer, INTERNAL), checking
every type before anything is converted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multidp.errors import InvalidRequest
from multidp.model import AllocationRequest, ContainerAllocation, DeviceNode, Mount, PreferenceRequest
from multidp.names import MAX_DEVICE_ID_BYTES, list_some, shorten
from multidp.serving.resource import Snapshot

# Containers per Allocate or GetPreferredAllocation request. The kubelet sends one; each costs a
# driver call, so 10,000 of them (well inside gRPC's 4 MiB) would run 10,000 calls.
MAX_CONTAINERS = 1024


def invalid(kind: str, resource: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f'invalid {kind} request for "{resource}": invalid request: {problem}')


def _fold(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _check_ids(kind: str, resource: str, snapshot: Snapshot, containers: Sequence[Sequence[str]]) -> None:
    if not containers:
        raise invalid(kind, resource, "no container requests")
    if len(containers) > MAX_CONTAINERS:
        raise invalid(kind, resource, f"{len(containers)} container requests (at most {MAX_CONTAINERS})")
    for index, ids in enumerate(containers):
        if not ids:
            raise invalid(kind, resource, f"container request {index} names no devices")
    too_long = [i for ids in containers for i in ids if len(i.encode()) > MAX_DEVICE_ID_BYTES]
    if too_long:
        raise invalid(kind, resource, f"device ID longer than {MAX_DEVICE_ID_BYTES} bytes: {list_some(too_long)}")
    by_id = snapshot.by_id
    unknown = _fold([i for ids in containers for i in ids if i not in by_id])
    if len(unknown) == 1:
        raise invalid(kind, resource, f"unknown device: {shorten(unknown[0])}")
    if unknown:
        raise invalid(kind, resource, f"{len(unknown)} unknown devices: {list_some(unknown)}")


def allocation_requests(
    resource: str, snapshot: Snapshot, containers: Sequence[Sequence[str]]
) -> list[AllocationRequest]:
    """Validate an Allocate request; one driver request per container."""
    _check_ids("allocation", resource, snapshot, containers)
    requests = []
    for ids in containers:
        requested = tuple(_fold(ids))
        device_ids = tuple(_fold([snapshot.by_id[i].id for i in requested]))
        requests.append(AllocationRequest(resource, device_ids, requested))
    return requests


def preference_requests(
    resource: str, snapshot: Snapshot, containers: Sequence[tuple[Sequence[str], Sequence[str], int]]
) -> list[PreferenceRequest]:
    """Validate a GetPreferredAllocation request: (available, must_include, size) per container."""
    kind = "preferred allocation"
    _check_ids(kind, resource, snapshot, [[*avail, *must] for avail, must, _ in containers] or [])
    requests = []
    for index, (available, must_include, size) in enumerate(containers):
        avail = tuple(_fold(available))
        must = tuple(_fold(must_include))
        if not avail:
            raise invalid(kind, resource, f"container request {index} has no available devices")
        avail_set = set(avail)
        missing = [i for i in must if i not in avail_set]
        if missing:
            raise invalid(kind, resource, f"must_include devices not in available: {list_some(missing)}")
        if size < max(len(must), 1) or size > len(avail):
            raise invalid(
                kind,
                resource,
                f"allocation size {size} is outside {max(len(must), 1)}..{len(avail)} "
                f"({len(must)} must be included, {len(avail)} available)",
            )
        requests.append(PreferenceRequest(resource, avail, must, size))
    return requests


def _type(value: object) -> str:
    return type(value).__name__


def _mapping_problem(name: str, value: object) -> str | None:
    if not isinstance(value, Mapping):
        return f"{name} as a {_type(value)}, not a mapping of str to str"
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return f"{name} with a {_type(key)} key and a {_type(item)} value, not str to str"
    return None


# The fields of each list item in an answer, and the type each must have.
_ITEM_FIELDS: dict[type, tuple[tuple[str, type], ...]] = {
    DeviceNode: (("container_path", str), ("host_path", str), ("permissions", str)),
    Mount: (("container_path", str), ("host_path", str), ("read_only", bool)),
}


def _list_problem(name: str, value: object, item_type: type) -> str | None:
    if not isinstance(value, (list, tuple)):
        return f"{name} as a {_type(value)}, not a list of {item_type.__name__}"
    for index, item in enumerate(value):
        if not isinstance(item, item_type):
            return f"{name}[{index}] as a {_type(item)}, not a {item_type.__name__}"
        for attribute, wanted in _ITEM_FIELDS.get(item_type, ()):
            got = getattr(item, attribute)
            if not isinstance(got, wanted):
                return f"{name}[{index}].{attribute} as a {_type(got)}, not {wanted.__name__}"
    return None


def allocation_problem(alloc: object) -> str | None:
    """What is wrong with a driver's Allocate answer, or None; every type checked, nothing converted.

    The text follows "allocate returned ..." and names the field, never a value,
    so that one problem logs one line however many calls hit it.
    """
    if not isinstance(alloc, ContainerAllocation):
        return f"a {_type(alloc)}, not a ContainerAllocation"
    problem = (_mapping_problem("envs", alloc.envs) or _mapping_problem("annotations", alloc.annotations)
               or _list_problem("device_nodes", alloc.device_nodes, DeviceNode)
               or _list_problem("mounts", alloc.mounts, Mount)
               or _list_problem("cdi_devices", alloc.cdi_devices, str))
    if problem:
        return problem
    if not isinstance(alloc.cdi_field, bool):
        return f"cdi_field as a {_type(alloc.cdi_field)}, not bool"
    if alloc.cdi_annotation_key is not None and not isinstance(alloc.cdi_annotation_key, str):
        return f"cdi_annotation_key as a {_type(alloc.cdi_annotation_key)}, not str or None"
    return None
