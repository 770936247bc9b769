"""GetPreferredAllocation for whole GPUs on the 8-GPU NVLink machine, and the link graph."""

from __future__ import annotations

import logging
from typing import Any

from multidp_nvidia import machines
from multidp_nvidia.fake_nvml import FakeNvml
from multidp_nvidia.topology import LinkGraph, best_set, read_link_graph

GPU = "nvidia.com/gpu"


def _graph() -> LinkGraph:
    machine = machines.nvlink8()
    nvml = FakeNvml(machine)
    nvml.nvmlInit()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
    buses = [g.bus_id.lower()[4:] for g in machine.gpus]
    return read_link_graph(nvml, handles, buses, [machine.numa[i] for i in range(8)], logging.getLogger("t"))


def test_link_graph_counts_nvlinks_and_pcie_proximity() -> None:
    graph = _graph()
    assert graph.nvlinks[0][1] == 4 and graph.nvlinks[0][4] == 2 and graph.nvlinks[0][5] == 0
    assert graph.pcie[0][1] == 5 and graph.pcie[0][2] == 2 and graph.pcie[0][4] == 1


def test_best_sets_follow_nvlink_then_pcie_then_numa() -> None:
    graph = _graph()
    assert sorted(best_set(graph, range(8), [], 4)) in ([0, 1, 2, 3], [4, 5, 6, 7])
    assert sorted(best_set(graph, range(8), [6], 2)) == [6, 7]  # same quad and same PCIe switch
    assert sorted(best_set(graph, range(8), [0, 5], 3)) in ([0, 1, 5], [0, 4, 5])  # 0-4 / 1-5 cross links
    assert sorted(best_set(graph, [0, 2, 3, 4], [], 2)) == [2, 3]  # equal NVLinks: the shared PCIe switch wins
    assert len(best_set(graph, range(8), [], 8)) == 8


def test_single_gpu_pick_leaves_the_best_connected_rest() -> None:
    graph = _graph()
    # Quad 0 is broken up already (GPU 1 is taken): the pick should come from it, not from quad 1.
    assert best_set(graph, [0, 2, 3, 4, 5, 6, 7], [], 1)[0] in (0, 2, 3)


def test_preferred_allocation_through_the_kubelet_api(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine)
    ids = list(node.devices(GPU, 8))
    picked = node.preferred(GPU, ids, 4, must=[ids[5]])
    assert sorted(picked) == sorted(ids[4:8])
    assert picked[0] == ids[5]  # must-include first
    reads = node.fake.calls["nvmlDeviceGetNvLinkState"]
    for size in (1, 2, 3, 5):
        node.preferred(GPU, ids, size)
    node.host.runners["nvidia"].scan_now()
    assert node.fake.calls["nvmlDeviceGetNvLinkState"] == reads  # the link graph was read once, at start
