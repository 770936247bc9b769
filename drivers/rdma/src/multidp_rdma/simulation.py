"""Simulated RDMA hardware for ``--simulate`` and ``multidp demo``: a generated sysfs tree.

The fault travels the driver's normal path: port 1 of mlx5_0 is rewritten to
``1: DOWN`` / ``3: Disabled`` in sysfs, and the next poll sees it.
"""

from __future__ import annotations

from pathlib import Path

from multidp.driver import Simulation

from multidp_rdma.faketree import FakeRdmaNode, standard_node

FAULTY_DEVICE = "mlx5_0"


class RdmaSimulation(Simulation):
    def __init__(self, workdir: Path) -> None:
        self.node: FakeRdmaNode = standard_node(workdir)
        self.sysfs_root = self.node.sys
        self.dev_root = self.node.dev

    def inject_fault(self) -> str:
        self.node.port_down(FAULTY_DEVICE, 1)
        return f"{FAULTY_DEVICE} port 1 went DOWN/Disabled (ports/1/state and phys_state rewritten in sysfs)"

    def clear_fault(self) -> str:
        self.node.port_up(FAULTY_DEVICE, 1)
        return f"{FAULTY_DEVICE} port 1 is ACTIVE/LinkUp again"
