"""Driver API 1.4: what each RDMA device tells DRA's scheduler, made at discovery and within DRA's rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from multidp import Device
from multidp.testing import attribute_problems as all_problems
from rdma_helpers import device

from multidp_rdma.describe import pcie_root, rate_gbps
from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode

Maker = Callable[..., RdmaDriver]
BUS, ROOT = "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot"
SHARED = [{"resourceName": "roce", "mode": "shared", "rdmaHcaMax": 3, "selectors": {"linkTypes": ["ether"]}},
          {"resourceName": "ib", "mode": "shared", "selectors": {"linkTypes": ["infiniband"]}}]


def test_an_infiniband_hca_described_from_sysfs(standard: FakeRdmaNode, make_driver: Maker) -> None:
    hca = device(make_driver(standard).scan(), "0000:3b:00.0")
    assert dict(hca.attributes) == {
        "rdmaDevice": "mlx5_0", "linkLayer": "InfiniBand", "netdev": "ib0", "rateGbps": 100, "ports": 1,
        "firmwareVersion": "16.35.2000", "nodeGUID": "0c42:a103:0065:b2a4", "vendorID": "15b3", "deviceID": "101b",
        "driver": "mlx5_core", "virtualFunction": False,
        BUS: "0000:3b:00.0", ROOT: "pci0000:3a",  # sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0
    }
    assert hca.capacity == {}


def test_a_roce_vf_names_its_pf_and_a_two_port_card_no_single_netdev(standard: FakeRdmaNode,
                                                                      make_driver: Maker) -> None:
    inventory = make_driver(standard).scan()
    vf = device(inventory, "0000:86:00.3").attributes
    assert (vf["linkLayer"], vf["netdev"], vf["rateGbps"]) == ("Ethernet", "ens5f0v1", 25)
    assert (vf["virtualFunction"], vf["pfPciBusID"], vf["vfIndex"], vf["deviceID"]) == (True, "0000:86:00.0", 1, "1018")
    assert vf[ROOT] == "pci0000:85"
    pf = device(inventory, "0000:86:00.0").attributes
    assert pf["virtualFunction"] is False and "pfPciBusID" not in pf and "vfIndex" not in pf
    card = device(inventory, "0000:5e:00.0").attributes  # mlx4_0: ib1 and ib2, port 2 down
    assert card["ports"] == 2 and card["driver"] == "mlx4_core" and "netdev" not in card


def test_a_shared_pool_carries_what_all_its_members_have_in_common(standard: FakeRdmaNode,
                                                                    make_driver: Maker) -> None:
    inventory = make_driver(standard, pools=SHARED).scan()
    [roce] = inventory["rdma/roce"]  # mlx5_1 (PF) and its VFs mlx5_2, mlx5_3
    assert dict(roce.attributes) == {"linkLayer": "Ethernet", "rateGbps": 25, "ports": 1,
                                     "firmwareVersion": "16.35.2000", "vendorID": "15b3", "driver": "mlx5_core",
                                     ROOT: "pci0000:85"}
    [ib] = inventory["rdma/ib"]  # mlx5_0 and mlx4_0: different drivers, device IDs, roots
    assert dict(ib.attributes) == {"linkLayer": "InfiniBand", "rateGbps": 100, "firmwareVersion": "16.35.2000",
                                   "vendorID": "15b3", "virtualFunction": False}
    indexed = make_driver(standard, pools=SHARED, sharedIds="index").scan()["rdma/roce"]
    assert [d.id for d in indexed] == ["0", "1", "2"]
    assert all(d.attributes == roce.attributes for d in indexed)


def test_made_once_per_discovery_and_again_after_a_rename(standard: FakeRdmaNode, make_driver: Maker) -> None:
    driver = make_driver(standard)
    first = device(driver.scan(), "0000:3b:00.0").attributes
    standard.port_down("mlx5_0")  # a poll, not a discovery: the same mapping, nothing made again
    polled = device(driver.scan(), "0000:3b:00.0")
    assert polled.health.value == "Unhealthy" and polled.attributes is first
    standard.rename_rdma("mlx5_0", "ibp59s0f0")
    assert device(driver.scan(), "0000:3b:00.0").attributes["rdmaDevice"] == "ibp59s0f0"


def test_a_virtual_device_has_no_pci_facts(node: FakeRdmaNode, make_driver: Maker) -> None:
    path = node.sys / "devices" / "virtual" / "infiniband" / "rxe0"  # soft RoCE: no "device" link
    node.write(path / "ports" / "1" / "link_layer", "Ethernet")
    node.write(path / "ports" / "1" / "rate", "10 Gb/sec (4X)")
    node.set_port("rxe0", 1, 4, 5, path=path)
    node.link(node.sys / "class" / "infiniband" / "rxe0", path)
    entry = node.sys / "devices" / "virtual" / "infiniband_verbs" / "uverbs0"
    node.write(entry / "ibdev", "rxe0")
    node.link(node.sys / "class" / "infiniband_verbs" / "uverbs0", entry)
    node.write(node.node("uverbs0"), "")
    rxe = device(make_driver(node).scan(), "rxe0")
    assert dict(rxe.attributes) == {"rdmaDevice": "rxe0", "linkLayer": "Ethernet", "rateGbps": 10, "ports": 1}


def test_unreadable_facts_are_left_out(node: FakeRdmaNode, make_driver: Maker) -> None:
    node.add_function("0000:3b:00.0", vendor="mellanox")  # malformed: the device is Unhealthy, not described wrong
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    (node.device_dir("mlx5_0") / "ports" / "1" / "rate").write_text("fast\n")
    hca = device(make_driver(node).scan(), "0000:3b:00.0")
    assert hca.health.value == "Unhealthy"
    assert "vendorID" not in hca.attributes and "rateGbps" not in hca.attributes
    assert hca.attributes["deviceID"] == "1017" and all_problems([hca]) == []


@pytest.mark.parametrize("frontend", ["device-plugin", "dra"])
@pytest.mark.parametrize("pools", [None, SHARED], ids=["exclusive", "shared"])
def test_every_device_keeps_to_dras_rules(standard: FakeRdmaNode, make_driver: Maker, frontend: str,
                                          pools: list[dict[str, object]] | None) -> None:
    settings: dict[str, object] = {"frontend": frontend, "sharedIds": "index"}
    if pools is not None:
        settings["pools"] = pools
    devices = [d for items in make_driver(standard, **settings).scan().values() for d in items]
    assert devices and all(d.attributes for d in devices)
    assert all_problems(devices) == []


@pytest.mark.parametrize(("rate", "gbps"), [
    ("100 Gb/sec (4X EDR)", 100), ("400 Gb/sec (4X NDR)", 400), ("2.5 Gb/sec (1X SDR)", 2),
    ("25 Gb/sec (1X EDR)", 25), ("", None), ("fast", None), ("Gb/sec", None),
])
def test_port_rates(rate: str, gbps: int | None) -> None:
    assert rate_gbps(rate) == gbps


@pytest.mark.parametrize(("path", "root"), [
    ("/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0", "pci0000:3a"),
    ("/sys/devices/pci10000:00/10000:00:02.0/10000:01:00.0", "pci10000:00"),  # a VMD domain
    ("/sys/devices/virtual/infiniband/rxe0", ""),
])
def test_pcie_roots(path: str, root: str) -> None:
    assert pcie_root(Path(path)) == root


def test_the_rule_checker_sees_broken_rules() -> None:
    bad = Device("x", attributes={"rdma-device": "mlx5_0", "netdev": "", "node": "n" * 65},
                 capacity={"rate": "fast"})
    found = all_problems([bad])
    assert len(found) == 4 and all("x: " in problem for problem in found)
