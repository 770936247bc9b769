"""GetPreferredAllocation for exclusive pools: same NUMA node first, then same PCI parent."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from multidp.model import PreferenceRequest
from multidp.preferred import pack

Key = Callable[[str], Hashable]


def numa_then_parent(request: PreferenceRequest, numa: Key, parent: Key) -> list[str]:
    """Pick NUMA groups as the host would; inside each, fill from as few PCI parents as possible.

    Packing by the pair (NUMA, parent) at once could leave a NUMA node's other
    parent unused and reach into another NUMA node for a request that one
    node could hold; two levels keep NUMA first.
    """
    by_numa = pack(request, numa)
    counts: dict[Hashable, int] = {}
    for device_id in by_numa:
        counts[numa(device_id)] = counts.get(numa(device_id), 0) + 1
    chosen: list[str] = []
    for group, count in counts.items():
        available = tuple(i for i in request.available if numa(i) == group)
        must = tuple(i for i in request.must_include if numa(i) == group)
        sub = PreferenceRequest(request.resource, available, must, count)
        chosen.extend(pack(sub, parent))
    return chosen
