"""Picking devices for GetPreferredAllocation: the host's fallback and helpers.

The kubelet fails a pod on any GetPreferredAllocation error, so the host always
has an answer: when a driver offers no preference (or raises, hangs, or answers
something unusable) the host packs by NUMA node. Drivers may call these helpers
for their own policy (``spread_replicas`` and ``pack_replicas`` for shared
devices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from multidp.model import PreferenceRequest
from multidp.names import REPLICA_SEPARATOR
from multidp.serving.resource import Snapshot

NO_NUMA: tuple[int, ...] = ()
K = TypeVar("K", bound=Hashable)


def _group(ids: Sequence[str], key: Callable[[str], K]) -> dict[K, list[str]]:
    groups: dict[K, list[str]] = defaultdict(list)
    for device_id in ids:
        groups[key(device_id)].append(device_id)
    return groups


def pack(request: PreferenceRequest, key: Callable[[str], Hashable]) -> list[str]:
    """Fill ``request.size`` from as few groups (by ``key``) as possible.

    Groups that already hold a must-include device come first, then the
    smallest group that fits the rest in one (leaving big groups whole for big
    requests), then the largest groups. Order within a group is the kubelet's.
    """
    chosen = list(request.must_include)
    need = request.size - len(chosen)
    if need <= 0:
        return chosen[: request.size]
    taken = set(chosen)
    groups = _group([i for i in request.available if i not in taken], key)
    used = {key(i) for i in chosen}
    order = [g for g in groups if g in used]
    rest = [g for g in groups if g not in used]
    fitting = sorted((g for g in rest if len(groups[g]) >= need), key=lambda g: len(groups[g]))
    order += fitting[:1]
    order += sorted((g for g in rest if g not in order), key=lambda g: -len(groups[g]))
    for g in order:
        for device_id in groups[g]:
            if need == 0:
                return chosen
            chosen.append(device_id)
            need -= 1
    return chosen


def numa_pick(request: PreferenceRequest, snapshot: Snapshot) -> list[str]:
    """The host's own pick: pack by NUMA node."""
    by_id = snapshot.by_id

    def numa(device_id: str) -> Hashable:
        device = by_id.get(device_id)
        return device.numa_nodes if device else NO_NUMA

    return pack(request, numa)


def base_id(advertised_id: str) -> str:
    """The device behind a replica ID (``GPU-1::3`` → ``GPU-1``)."""
    base, sep, index = advertised_id.rpartition(REPLICA_SEPARATOR)
    return base if sep and index.isdigit() else advertised_id


def pack_replicas(request: PreferenceRequest) -> list[str]:
    """Replicas from as few devices as possible (fewer devices busy)."""
    return pack(request, base_id)


def spread_replicas(request: PreferenceRequest) -> list[str]:
    """Replicas from as many devices as possible, least used devices first.

    "Used" counts the replicas of a device that are not available (taken by
    other containers) plus the must-include ones, so a new container lands on
    the device that is busiest least.
    """
    chosen = list(request.must_include)
    taken = set(chosen)
    free = _group([i for i in request.available if i not in taken], base_id)
    load: dict[str, int] = {b: 0 for b in free}
    for device_id in chosen:
        load[base_id(device_id)] = load.get(base_id(device_id), 0) + 1
    while len(chosen) < request.size:
        candidates = [b for b in free if free[b]]
        if not candidates:
            break
        least = min(candidates, key=lambda b: (load[b], -len(free[b])))
        chosen.append(free[least].pop(0))
        load[least] += 1
    return chosen


def repaired(request: PreferenceRequest, answer: Sequence[str], fallback: list[str]) -> tuple[list[str], str]:
    """Make a driver's answer valid; return it and what was wrong ('' when nothing).

    Keeps the must-include devices and the driver's valid picks, drops what
    does not fit, and fills up from ``fallback``.
    """
    available = set(request.available)
    problems = []
    picks = list(dict.fromkeys(answer))
    if len(picks) != len(answer):
        problems.append("repeated IDs")
    valid = [i for i in picks if i in available]
    if len(valid) != len(picks):
        problems.append(f"{len(picks) - len(valid)} IDs not available")
    valid_set = set(valid)
    if any(i not in valid_set for i in request.must_include):
        problems.append("must-include IDs left out")
    must = set(request.must_include)
    others = [i for i in valid if i not in must]
    room = request.size - len(request.must_include)
    if len(others) > room:
        problems.append("too many IDs")
        others = others[:room]
    result = [*request.must_include, *others]
    if len(result) < request.size:
        problems.append("too few IDs")
        chosen = set(result)
        result += [i for i in fallback if i not in chosen][: request.size - len(result)]
    return result, ", ".join(problems)
