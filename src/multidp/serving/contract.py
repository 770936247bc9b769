"""The error contract for Allocate and GetPreferredAllocation (docs/design.md, "The error contract").

Checked in this order, each failure an :class:`InvalidRequest` (INVALID_ARGUMENT)
naming the resource and a few offending IDs with a count, with nothing in the
host changed: no containers or a container without IDs; an ID over 1,024
bytes; an ID the resource does not have. Duplicates are folded, not refused.
The text keeps NVIDIA's wording (``invalid allocation request for "R": invalid
request: unknown device: X``), which operators know.
"""

from __future__ import annotations

from collections.abc import Sequence

from multidp.errors import InvalidRequest
from multidp.model import AllocationRequest, PreferenceRequest
from multidp.names import MAX_DEVICE_ID_BYTES, list_some, shorten
from multidp.serving.resource import Snapshot


def invalid(kind: str, resource: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f'invalid {kind} request for "{resource}": invalid request: {problem}')


def _fold(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _check_ids(kind: str, resource: str, snapshot: Snapshot, containers: Sequence[Sequence[str]]) -> None:
    if not containers:
        raise invalid(kind, resource, "no container requests")
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
