"""What a container gets: char devices and the SR-IOV plugin's environment variables.

``PCIDEVICE_<PREFIX>_<NAME>`` lists the devices' PCI addresses and
``PCIDEVICE_<PREFIX>_<NAME>_INFO`` maps each address to its generic and rdma
information, exactly as the SR-IOV network device plugin writes them, so the
SR-IOV CNI, the RDMA CNI and tools that read these variables keep working.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from multidp import AllocationRefused, ContainerAllocation, DeviceNode

from multidp_rdma.config import Pool
from multidp_rdma.health import node_exists
from multidp_rdma.inventory import DEV_DIR, RDMA_CM, RdmaDevice

log = logging.getLogger("multidp.driver.rdma")

PERMISSIONS = "rw"


def env_key(pool: Pool) -> str:
    """The SR-IOV plugin's variable name: prefix and name joined by '_', upper case, '.' → '_'."""
    return "PCIDEVICE_" + f"{pool.prefix}_{pool.short_name}".upper().replace(".", "_")


def container_allocation(pool: Pool, members: Sequence[RdmaDevice], dev_root: Path) -> ContainerAllocation:
    """Device nodes and envs for ``members`` of ``pool``; refuse when a required node is missing."""
    rdma_cm = f"{DEV_DIR}/{RDMA_CM}"
    if not node_exists(dev_root, RDMA_CM):
        raise AllocationRefused(f"{rdma_cm} is missing on this node (is the rdma_ucm module loaded?)")
    nodes: list[DeviceNode] = []
    info: dict[str, dict[str, dict[str, str]]] = {}
    for device in members:
        if device.uverbs is None:
            raise AllocationRefused(f"RDMA device {device.name} ({device.id}) has no uverbs device")
        if not node_exists(dev_root, device.uverbs.name):
            raise AllocationRefused(f"{device.uverbs.host_path} of RDMA device {device.name} ({device.id}) is missing")
        nodes.append(DeviceNode.same_path(device.uverbs.host_path, PERMISSIONS))
        rdma: dict[str, str] = {"uverbs": device.uverbs.host_path}
        extras = list(device.umads) + (list(device.issms) if pool.include_issm else [])
        for char in extras:
            if not node_exists(dev_root, char.name):
                log.warning("RDMA device %s: %s is missing; the container gets the other nodes",
                            device.name, char.host_path)
                continue
            nodes.append(DeviceNode.same_path(char.host_path, PERMISSIONS))
            kind = "umad" if char.name.startswith("umad") else "issm"
            rdma.setdefault(kind, char.host_path)  # one per kind, the first port's, as the SR-IOV plugin
        rdma["rdma_cm"] = rdma_cm
        rdma["rdma_dev"] = device.name
        info[device.id] = {"generic": {"deviceID": device.id}, "rdma": rdma}
    nodes.append(DeviceNode.same_path(rdma_cm, PERMISSIONS))
    key = env_key(pool)
    envs = {
        key: ",".join(d.id for d in members),
        f"{key}_INFO": json.dumps(info, separators=(",", ":"), sort_keys=False),
    }
    return ContainerAllocation(envs=envs, device_nodes=nodes)
