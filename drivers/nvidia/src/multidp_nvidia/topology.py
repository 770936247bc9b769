"""How well GPUs talk to each other, read once, and the best set of GPUs for a request.

The link graph is read from NVML when the GPUs are discovered (NVIDIA's plugin
rebuilds it on every GetPreferredAllocation, which takes seconds on 8-GPU
nodes). A pair's weight puts NVLink first: 100 per NVLink between them (direct,
or through NVSwitches both reach), plus the PCIe proximity: same board 6,
single switch 5, multiple switches 4, host bridge 3, same NUMA node 2, across
NUMA nodes 1. A set's score is the sum of its pairs' weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import combinations
from math import comb
from typing import Any

import msgspec

from multidp_nvidia.nvml import error_name, sysfs_bus_id

NVLINK_WEIGHT = 100
# NVML_TOPOLOGY_* level → proximity score (lower level, closer).
PCIE_SCORE = {0: 6, 10: 5, 20: 4, 30: 3, 40: 2, 50: 1}
EXHAUSTIVE_LIMIT = 500  # combinations tried one by one; above that, greedy


class LinkGraph(msgspec.Struct, frozen=True):
    """Pairwise facts between GPUs by NVML index."""

    nvlinks: tuple[tuple[int, ...], ...]
    pcie: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return len(self.nvlinks)

    def weight(self, i: int, j: int) -> int:
        return self.nvlinks[i][j] * NVLINK_WEIGHT + self.pcie[i][j]

    def weights(self) -> list[list[int]]:
        n = self.size
        return [[self.weight(i, j) if i != j else 0 for j in range(n)] for i in range(n)]


def _nvlink_ends(nvml: Any, handle: Any, bus_index: dict[str, int], me: int) -> tuple[dict[int, int], int]:
    """(links to each other GPU, links to NVSwitches) of one GPU."""
    direct: dict[int, int] = {}
    switch = 0
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            if not nvml.nvmlDeviceGetNvLinkState(handle, link):
                continue
        except nvml.NVMLError:
            break  # "Not Supported" / "Invalid Argument": no (more) links
        try:
            remote = sysfs_bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
        except nvml.NVMLError:
            continue
        other = bus_index.get(remote)
        if other is None:
            switch += 1
        elif other != me:
            direct[other] = direct.get(other, 0) + 1
    return direct, switch


def read_link_graph(nvml: Any, handles: Sequence[Any], bus_ids: Sequence[str],
                    numa: Sequence[int | None], log: logging.Logger) -> LinkGraph:
    n = len(handles)
    bus_index = {bus: i for i, bus in enumerate(bus_ids)}
    ends = [_nvlink_ends(nvml, h, bus_index, i) for i, h in enumerate(handles)]
    nvlinks = [[0] * n for _ in range(n)]
    pcie = [[0] * n for _ in range(n)]
    failed = ""
    for i in range(n):
        for j in range(i + 1, n):
            links = max(ends[i][0].get(j, 0), ends[j][0].get(i, 0)) + min(ends[i][1], ends[j][1])
            try:
                score = PCIE_SCORE.get(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j]), 1)
            except nvml.NVMLError as exc:
                failed = failed or error_name(exc)
                score = 2 if numa[i] is not None and numa[i] == numa[j] else 1
            nvlinks[i][j] = nvlinks[j][i] = links
            pcie[i][j] = pcie[j][i] = score
    if failed:
        log.info("PCIe topology not available from NVML (%s); using NUMA nodes instead", failed)
    return LinkGraph(tuple(map(tuple, nvlinks)), tuple(map(tuple, pcie)))


def _score(members: Sequence[int], w: list[list[int]]) -> int:
    total = 0
    for a in range(len(members)):
        row = w[members[a]]
        for b in range(a + 1, len(members)):
            total += row[members[b]]
    return total


def best_set(graph: LinkGraph, available: Sequence[int], must: Sequence[int], size: int) -> list[int]:
    """``size`` GPUs from ``available`` including ``must``, best connected first.

    Among sets with the same score, the one that leaves the remaining GPUs best
    connected wins (big, well-linked groups stay whole for big requests).
    """
    w = graph.weights()
    chosen = list(dict.fromkeys(must))[:size]
    taken = set(chosen)
    free = [g for g in dict.fromkeys(available) if g not in taken]
    need = size - len(chosen)
    if need <= 0:
        return chosen
    if need >= len(free):
        return chosen + free
    if comb(len(free), need) <= EXHAUSTIVE_LIMIT:
        best: tuple[int, int] | None = None
        pick: tuple[int, ...] = ()
        for combo in combinations(free, need):
            members = chosen + list(combo)
            rest = [g for g in free if g not in combo]
            key = (_score(members, w), _score(rest, w))
            if best is None or key > best:
                best, pick = key, combo
        return chosen + list(pick)
    # Greedy for big machines: add the GPU that links best to what is chosen.
    if not chosen:
        a, b = max(combinations(free, 2), key=lambda p: w[p[0]][p[1]])
        chosen, free = [a, b], [g for g in free if g not in (a, b)]
    while len(chosen) < size:
        nxt = max(free, key=lambda g: sum(w[g][c] for c in chosen))
        chosen.append(nxt)
        free.remove(nxt)
    return chosen
