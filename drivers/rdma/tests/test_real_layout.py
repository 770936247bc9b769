"""A node written out by hand as a real one looks, without the tree builder the other tests use.

ConnectX-6 IB HCA (renamed by udev to ibp59s0f0, port INIT: no subnet manager
yet) and a dual-port ConnectX-6 Dx (two PFs, rocep134s0f0/f1, f1's link down)
with one VF, all on the auxiliary bus as kernels since 5.11 place them, plus the
noise real sysfs has (uevent, power/, subsystem links, counters, abi_version).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from multidp import AllocationRequest
from rdma_helpers import device, health

IB = "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
PF0 = "devices/pci0000:85/0000:85:00.0/0000:86:00.0"
PF1 = "devices/pci0000:85/0000:85:00.0/0000:86:00.1"
VF0 = "devices/pci0000:85/0000:85:00.0/0000:86:00.2"

LAYOUT = f"""
class/infiniband_verbs/abi_version: 6
class/infiniband_mad/abi_version: 5
class/misc/rdma_cm -> ../../devices/virtual/misc/rdma_cm
devices/virtual/misc/rdma_cm/dev: 10:58
bus/pci/drivers/mlx5_core/bind:
bus/pci/drivers/mlx5_core/module -> ../../../../module/mlx5_core

{IB}/vendor: 0x15b3
{IB}/device: 0x101b
{IB}/class: 0x020700
{IB}/numa_node: -1
{IB}/uevent: DRIVER=mlx5_core
{IB}/power/control: on
{IB}/driver -> ../../../../bus/pci/drivers/mlx5_core
{IB}/subsystem -> ../../../../bus/pci
{IB}/net/ibp59s0f0/operstate: up
{IB}/net/ibp59s0f0/type: 32
{IB}/mlx5_core.rdma.0/uevent: MODALIAS=auxiliary:mlx5_core.rdma
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/node_type: 1: CA
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/node_guid: b83f:d203:00aa:0001
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/fw_ver: 20.39.1002
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/hca_type: MT4123
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/device -> ../../../mlx5_core.rdma.0
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/hw_counters/lifespan: 10
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/state: 2: INIT
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/phys_state: 5: LinkUp
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/link_layer: InfiniBand
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/rate: 200 Gb/sec (4X HDR)
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/lid: 0xffff
{IB}/mlx5_core.rdma.0/infiniband/ibp59s0f0/ports/1/counters/port_xmit_data: 0
{IB}/mlx5_core.rdma.0/infiniband_verbs/uverbs0/ibdev: ibp59s0f0
{IB}/mlx5_core.rdma.0/infiniband_verbs/uverbs0/dev: 231:192
{IB}/mlx5_core.rdma.0/infiniband_verbs/uverbs0/abi_version: 1
{IB}/mlx5_core.rdma.0/infiniband_verbs/uverbs0/device -> ../../../mlx5_core.rdma.0
{IB}/mlx5_core.rdma.0/infiniband_mad/umad0/ibdev: ibp59s0f0
{IB}/mlx5_core.rdma.0/infiniband_mad/umad0/port: 1
{IB}/mlx5_core.rdma.0/infiniband_mad/umad0/dev: 231:0
{IB}/mlx5_core.rdma.0/infiniband_mad/issm0/ibdev: ibp59s0f0
{IB}/mlx5_core.rdma.0/infiniband_mad/issm0/port: 1
{IB}/mlx5_core.rdma.0/infiniband_mad/issm0/dev: 231:64

{PF0}/vendor: 0x15b3
{PF0}/device: 0x101d
{PF0}/class: 0x020000
{PF0}/numa_node: 1
{PF0}/sriov_totalvfs: 8
{PF0}/sriov_numvfs: 1
{PF0}/virtfn0 -> ../0000:86:00.2
{PF0}/driver -> ../../../../bus/pci/drivers/mlx5_core
{PF0}/net/ens2f0np0/operstate: up
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/node_type: 1: CA
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/device -> ../../../mlx5_core.rdma.1
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/state: 4: ACTIVE
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/phys_state: 5: LinkUp
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/link_layer: Ethernet
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/rate: 100 Gb/sec (2X HDR)
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/gid_attrs/ndevs/0: ens2f0np0
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/gid_attrs/types/0: IB/RoCE v1
{PF0}/mlx5_core.rdma.1/infiniband/rocep134s0f0/ports/1/gids/0: fe80:0000:0000:0000:ba3f:d2ff:feaa:0010
{PF0}/mlx5_core.rdma.1/infiniband_verbs/uverbs1/ibdev: rocep134s0f0
{PF0}/mlx5_core.rdma.1/infiniband_mad/umad1/ibdev: rocep134s0f0
{PF0}/mlx5_core.rdma.1/infiniband_mad/umad1/port: 1
{PF0}/mlx5_core.rdma.1/infiniband_mad/issm1/ibdev: rocep134s0f0
{PF0}/mlx5_core.rdma.1/infiniband_mad/issm1/port: 1

{PF1}/vendor: 0x15b3
{PF1}/device: 0x101d
{PF1}/numa_node: 1
{PF1}/sriov_totalvfs: 8
{PF1}/sriov_numvfs: 0
{PF1}/driver -> ../../../../bus/pci/drivers/mlx5_core
{PF1}/net/ens2f1np1/operstate: down
{PF1}/mlx5_core.rdma.2/infiniband/rocep134s0f1/device -> ../../../mlx5_core.rdma.2
{PF1}/mlx5_core.rdma.2/infiniband/rocep134s0f1/ports/1/state: 1: DOWN
{PF1}/mlx5_core.rdma.2/infiniband/rocep134s0f1/ports/1/phys_state: 3: Disabled
{PF1}/mlx5_core.rdma.2/infiniband/rocep134s0f1/ports/1/link_layer: Ethernet
{PF1}/mlx5_core.rdma.2/infiniband_verbs/uverbs2/ibdev: rocep134s0f1
{PF1}/mlx5_core.rdma.2/infiniband_mad/umad2/ibdev: rocep134s0f1
{PF1}/mlx5_core.rdma.2/infiniband_mad/umad2/port: 1

{VF0}/vendor: 0x15b3
{VF0}/device: 0x101e
{VF0}/numa_node: 1
{VF0}/physfn -> ../0000:86:00.0
{VF0}/driver -> ../../../../bus/pci/drivers/mlx5_core
{VF0}/net/ens2f0v0/operstate: up
{VF0}/mlx5_core.rdma.3/infiniband/rocep134s0f0v0/device -> ../../../mlx5_core.rdma.3
{VF0}/mlx5_core.rdma.3/infiniband/rocep134s0f0v0/ports/1/state: 4: ACTIVE
{VF0}/mlx5_core.rdma.3/infiniband/rocep134s0f0v0/ports/1/phys_state: 5: LinkUp
{VF0}/mlx5_core.rdma.3/infiniband/rocep134s0f0v0/ports/1/link_layer: Ethernet
{VF0}/mlx5_core.rdma.3/infiniband/rocep134s0f0v0/ports/1/gid_attrs/ndevs/0: ens2f0v0
{VF0}/mlx5_core.rdma.3/infiniband_verbs/uverbs3/ibdev: rocep134s0f0v0
{VF0}/mlx5_core.rdma.3/infiniband_mad/umad3/ibdev: rocep134s0f0v0
{VF0}/mlx5_core.rdma.3/infiniband_mad/umad3/port: 1
{VF0}/mlx5_core.rdma.3/infiniband_mad/issm3/ibdev: rocep134s0f0v0
{VF0}/mlx5_core.rdma.3/infiniband_mad/issm3/port: 1
"""

CLASS_LINKS = {
    "infiniband": [(IB, 0, "ibp59s0f0"), (PF0, 1, "rocep134s0f0"), (PF1, 2, "rocep134s0f1"),
                   (VF0, 3, "rocep134s0f0v0")],
    "infiniband_verbs": [(IB, 0, "uverbs0"), (PF0, 1, "uverbs1"), (PF1, 2, "uverbs2"), (VF0, 3, "uverbs3")],
    "infiniband_mad": [(IB, 0, "umad0"), (IB, 0, "issm0"), (PF0, 1, "umad1"), (PF0, 1, "issm1"),
                       (PF1, 2, "umad2"), (VF0, 3, "umad3"), (VF0, 3, "issm3")],
}


def _write_node(root: Path) -> SimpleNamespace:
    sys_root, dev_root = root / "sys", root / "dev"
    for line in LAYOUT.strip().splitlines():
        if not line.strip():
            continue
        if " -> " in line:
            path, target = line.split(" -> ")
            (sys_root / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, sys_root / path)
        else:
            path, _, content = line.partition(": ")
            (sys_root / path.rstrip(":")).parent.mkdir(parents=True, exist_ok=True)
            (sys_root / path.rstrip(":")).write_text(content + "\n")
    for klass, entries in CLASS_LINKS.items():
        for function, aux, name in entries:
            sub = "infiniband" if klass == "infiniband" else klass
            link = sys_root / "class" / klass / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f"../../{function}/mlx5_core.rdma.{aux}/{sub}/{name}", link)
    for address, function in (("0000:3b:00.0", IB), ("0000:86:00.0", PF0), ("0000:86:00.1", PF1),
                              ("0000:86:00.2", VF0)):
        link = sys_root / "bus" / "pci" / "devices" / address
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f"../../../{function}", link)
    (dev_root / "infiniband").mkdir(parents=True)
    for name in ("uverbs0", "uverbs1", "uverbs2", "uverbs3", "umad0", "umad1", "umad2", "umad3",
                 "issm0", "issm1", "issm3", "rdma_cm"):
        (dev_root / "infiniband" / name).write_text("")
    return SimpleNamespace(sys=sys_root, dev=dev_root)


def test_real_node_is_enumerated(tmp_path: Path, make_driver) -> None:
    node = _write_node(tmp_path / "real")
    driver = make_driver(node)
    inventory = driver.scan()
    assert health(inventory) == {"0000:3b:00.0": "Unhealthy", "0000:86:00.0": "Healthy",
                                 "0000:86:00.1": "Unhealthy", "0000:86:00.2": "Healthy"}
    ib = device(inventory, "0000:3b:00.0")
    assert ib.reason == "no port is ACTIVE and LinkUp: port 1 INIT/LinkUp"  # no subnet manager yet
    assert ib.numa_nodes == () and ib.info["rdma"] == "ibp59s0f0" and ib.info["netdev"] == "ibp59s0f0"
    assert device(inventory, "0000:86:00.1").reason == "no port is ACTIVE and LinkUp: port 1 DOWN/Disabled"
    vf = device(inventory, "0000:86:00.2")
    assert vf.numa_nodes == (1,) and vf.info["pf"] == "0000:86:00.0" and vf.info["netdev"] == "ens2f0v0"
    found = {d.name: d for d in driver._discovery.devices}
    assert found["rocep134s0f0v0"].pci.vf_index == 0 and found["rocep134s0f0v0"].pci.pf_netdevs == ("ens2f0np0",)
    assert found["rocep134s0f0"].pci.vf_count == 1 and found["rocep134s0f0"].pci.device == "101d"
    assert found["ibp59s0f0"].fw_ver == "20.39.1002" and found["ibp59s0f0"].link_types == {"infiniband"}

    allocation = driver.allocate(AllocationRequest("rdma/hca", ("0000:86:00.2",), ("0000:86:00.2",)))
    assert [n.host_path for n in allocation.device_nodes] == [
        "/dev/infiniband/uverbs3", "/dev/infiniband/umad3", "/dev/infiniband/rdma_cm"]
    assert json.loads(allocation.envs["PCIDEVICE_RDMA_HCA_INFO"])["0000:86:00.2"]["rdma"]["rdma_dev"] == (
        "rocep134s0f0v0")


def test_real_node_pools_by_pf_and_link_type(tmp_path: Path, make_driver) -> None:
    node = _write_node(tmp_path / "real")
    inventory = make_driver(node, pools=[
        {"resourceName": "vfs", "selectors": {"pfNames": ["ens2f0np0#0-7"]}},
        {"resourceName": "roce", "mode": "shared", "selectors": {"linkTypes": ["ether"], "deviceIDs": ["101d"]}},
        {"resourceName": "ib", "selectors": {"ifNames": ["ibp59s0f0"]}},
    ]).scan()
    assert set(health(inventory, "rdma/vfs")) == {"0000:86:00.2"}
    roce = device(inventory, "roce", "rdma/roce")
    assert roce.healthy and roce.info == {"members": "rocep134s0f0,rocep134s0f1", "healthy": "1/2"}
    assert set(health(inventory, "rdma/ib")) == {"0000:3b:00.0"}


def test_real_node_attributes_for_dra(tmp_path: Path, make_driver) -> None:
    inventory = make_driver(_write_node(tmp_path / "real")).scan()
    bus, root = "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot"
    assert dict(device(inventory, "0000:3b:00.0").attributes) == {
        "rdmaDevice": "ibp59s0f0", "linkLayer": "InfiniBand", "netdev": "ibp59s0f0", "rateGbps": 200, "ports": 1,
        "firmwareVersion": "20.39.1002", "nodeGUID": "b83f:d203:00aa:0001", "vendorID": "15b3", "deviceID": "101b",
        "driver": "mlx5_core", "virtualFunction": False, bus: "0000:3b:00.0", root: "pci0000:3a"}
    vf = device(inventory, "0000:86:00.2").attributes
    assert (vf["rdmaDevice"], vf["netdev"], vf["pfPciBusID"], vf["vfIndex"], vf[root]) == (
        "rocep134s0f0v0", "ens2f0v0", "0000:86:00.0", 0, "pci0000:85")
    assert "rateGbps" not in vf and "firmwareVersion" not in vf  # files this tree does not hold are left out
    assert device(inventory, "0000:86:00.1").attributes["netdev"] == "ens2f1np1"
