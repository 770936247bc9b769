"""Constants and helpers shared by the fpga driver's tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from multidp import AllocationRequest, Device

from multidp_fpga.driver import FpgaDriver

# Ids as Intel's own tests use them, with the names Intel's plugin gives them.
IFACE = "ce48969398f05f33946d560708be108a"
IFACE2 = "bfac4d851ee856fe8c95865ce1bbaa2d"
AFU = "d8424dc4a4a3c413f89e433683f9040b"
AFU2 = "f7df405cbd7acf7222f144b0b93acd18"
AF_IFACE_AFU = "fpga.intel.com/af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs"
AF_IFACE2_AFU2 = "fpga.intel.com/af-bfa.f7d.v6xNhR7oVv6MlYZc4buqLfffQFy9es9yIvFEsLk6zRg"
AF_IFACE_AFU2 = "fpga.intel.com/af-ce4.f7d.zkiWk5jwXzOUbVYHCL4QivffQFy9es9yIvFEsLk6zRg"
REGION_IFACE = f"fpga.intel.com/region-{IFACE}"
REGION_IFACE2 = f"fpga.intel.com/region-{IFACE2}"
U200 = ("xilinx_u200_xdma_201830_2", "1561465320")
U250 = ("xilinx_u250_gen3x16_xdma_shell_4_1", "1617814830")
U200_RES = "amd.com/xilinx_u200_xdma_201830_2-1561465320"
U250_RES = "amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-1617814830"
ALL_F = "f" * 32

MakeDriver = Callable[..., FpgaDriver]


def by_id(inventory: Mapping[str, Sequence[Device]]) -> dict[str, tuple[str, Device]]:
    """device id -> (resource, device)."""
    return {d.id: (resource, d) for resource, devices in inventory.items() for d in devices}


def ids(inventory: Mapping[str, Sequence[Device]]) -> dict[str, list[str]]:
    return {resource: [d.id for d in devices] for resource, devices in inventory.items()}


def allocate(driver: FpgaDriver, resource: str, *device_ids: str) -> Any:
    return driver.allocate(AllocationRequest(resource, tuple(device_ids), tuple(device_ids)))


def nodes_of(answer: Any) -> list[tuple[str, str]]:
    return [(n.host_path, n.permissions) for n in answer.device_nodes]
