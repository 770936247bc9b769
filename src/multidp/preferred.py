"""Helpers for a driver's ``preferred_allocation`` (part of the driver API).

``pack`` fills a request from as few groups as possible (the host's own NUMA
pick uses it too); ``pack_replicas`` and ``spread_replicas`` are the two
policies for shared devices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from multidp.model import PreferenceRequest
from multidp.names import base_id

K = TypeVar("K", bound=Hashable)


def _group(ids: Sequence[str], key: Callable[[str], K]) -> dict[K, list[str]]:
    groups: dict[K, list[str]] = defaultdict(list)
    for device_id in ids:
        groups[key(device_id)].append(device_id)
    return groups


def pack(request: PreferenceRequest, key: Callable[[str], Hashable]) -> list[str]:
    """Fill ``request.size`` from as few groups (by ``key``) as possible.

    ``key`` gets each advertised ID, replica suffix included (``GPU-1::3``): look a
    device up by ``base_id(i)``, e.g. ``pack(request, lambda i: numa_of[base_id(i)])``.
    Groups that already hold a must-include device come first, then the
    smallest group that fits the rest in one (leaving big groups whole for big
    requests), then the largest groups. Order within a group is the kubelet's.
    Returning None from ``preferred_allocation`` instead gets the host's pick by
    the devices' NUMA nodes; use ``pack`` for any other grouping (a PCI switch, a
    card, a link domain).
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
