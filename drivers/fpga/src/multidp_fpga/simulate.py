"""Simulated FPGAs for ``multidp demo`` and ``--simulate``: generated sysfs trees, both vendors.

Three Intel cards under the DFL driver: two in ``af`` mode (one with two ports,
on different NUMA nodes) and one in ``region`` mode (the simulated node's
``cardModes``: a config that sets ``cardModes`` replaces it); two Alveo cards
with different shells (one with a QDMA function), a U30 card (two devices, one
serial number) and an MA35 transcoder.
A fault rewrites a port's ``afu_id`` to all f, as the kernel reports a crashed
AFU; the driver sees it by polling, the same path as on a real node.
"""

from __future__ import annotations

from pathlib import Path

from multidp import Simulation

from multidp_fpga.fakesys import FakeNode
from multidp_fpga.sysfs import ALL_F

# Ids from Intel's public examples (the N3000/PAC "nlb0" AFU and its interface).
INTERFACE_ID = "ce48969398f05f33946d560708be108a"
NLB0 = "d8424dc4a4a3c413f89e433683f9040b"
NLB3 = "f7df405cbd7acf7222f144b0b93acd18"
U200_SHELL, U200_TIMESTAMP = "xilinx_u200_xdma_201830_2", "1561465320"
U250_SHELL, U250_TIMESTAMP = "xilinx_u250_gen3x16_xdma_shell_4_1", "1617814830"
REGION_INTERFACE_ID = "bfac4d851ee856fe8c95865ce1bbaa2d"
REGION_CARD = "0000:3b:00.0"


def build_demo_node(root: Path) -> FakeNode:
    node = FakeNode(root)
    node.dfl_card("0000:5e:00.0", INTERFACE_ID, [NLB0, NLB3], numa=0)
    node.dfl_card("0000:af:00.0", INTERFACE_ID, [NLB0], numa=1)
    node.alveo_card("0000:65:00", U200_SHELL, U200_TIMESTAMP, numa=0)
    node.alveo_card("0000:d8:00", U250_SHELL, U250_TIMESTAMP, numa=1, qdma=True)
    node.dfl_card(REGION_CARD, REGION_INTERFACE_ID, [NLB0], numa=0)
    node.u30_card(("0000:17:00", "0000:18:00"), serial="XFL1U30SIM01", numa=0)
    node.ma35("0000:c1:00.0", serial="MA35SIM0001", numa=1)
    node.other_pci_function("0000:01:00.0")
    return node


class FpgaSimulation(Simulation):
    """A generated node; faults go through sysfs files like real ones."""

    FAULTY_PORT = "dfl-port.0"
    #: The simulated node's per-card Intel modes (drivers.fpga.cardModes), used when the config sets none.
    card_modes = {REGION_CARD: "region"}

    def __init__(self, workdir: Path) -> None:
        self.node = build_demo_node(Path(workdir))
        self.sysfs_root = self.node.sys
        self.dev_root = self.node.dev
        self._saved: str | None = None

    def inject_fault(self) -> str:
        card = next(c for c in self.node.cards.values() if self.FAULTY_PORT in c.afu_files)
        afu_file = card.afu_files[self.FAULTY_PORT]
        self._saved = afu_file.read_text().strip()
        self.node.set_afu_id(self.FAULTY_PORT, ALL_F)
        return f"Intel port {self.FAULTY_PORT}: afu_id rewritten to all f (the AFU crashed)"

    def clear_fault(self) -> str:
        if self._saved is None:
            return "nothing to repair"
        self.node.set_afu_id(self.FAULTY_PORT, self._saved)
        self._saved = None
        return f"Intel port {self.FAULTY_PORT}: afu_id restored (AFU reloaded)"
