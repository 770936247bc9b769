"""Mellanox's k8s-rdma-shared-dev-plugin's published tests, ported as tables, and its rules here.

Each table cites its test in Mellanox/k8s-rdma-shared-dev-plugin (commit 410b0f3262b8).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from multidp import AllocationRequest, ConfigError

from multidp_rdma.cdiedits import annotation_key
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.incumbents import MELLANOX_RULES
from multidp_rdma.inventory import PciFunction, Port, RdmaDevice
from multidp_rdma.poolconfig import Selectors
from multidp_rdma.pools import matches

# pkg/resources/resources_manager_test.go "GetFilteredDevices": (vendor, deviceID, driver, ifName,
# linkType) of five devices, and whether the selectors below keep each.
FILTERED = [("15b3", "1017", "mlx5_core", "enp2s0f0", "Ethernet", True),
            ("8080", "2031", "igb", "enp2s0f1", "Ethernet", True),
            ("15b3", "1017", "broadcom", "eth0", "Ethernet", False),
            ("8080", "1234", "igb", "eth1", "Ethernet", False),
            ("15b3", "1017", "mlx5_core", "enp4s0f0", "InfiniBand", False)]
FILTER = Selectors(vendors=["15b3", "8080"], device_ids=["1017", "2031"], drivers=["mlx5_core", "igb"],
                   if_names=["enp2s0f0", "enp2s0f1", "enp4s0f0"], link_types=["ether"])


@pytest.mark.parametrize(("vendor", "device", "driver", "ifname", "link", "kept"), FILTERED)
def test_get_filtered_devices(vendor: str, device: str, driver: str, ifname: str, link: str, kept: bool) -> None:
    pci = PciFunction("0000:02:00.0", vendor=vendor, device=device, driver=driver, netdevs=(ifname,))
    rdma = RdmaDevice("mlx5_0", Path("/x"), pci=pci, ports=(Port(1, Path("/x"), link_layer=link),),
                      netdevs=(ifname,))
    assert matches(FILTER.selection(), rdma, MELLANOX_RULES) is kept


def _file(tmp_path: Path, entries: list[dict[str, Any]], **top: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**top, "configList": entries}))
    return str(path)


# pkg/resources/server_test.go "newResourcesServer": rdmaHcaMax 100 → 100 devices, 0 → none (a server
# still runs there; here the pool advertises nothing), and IDs strconv.Itoa(0..N-1).
@pytest.mark.parametrize(("hca_max", "ids"), [(100, [str(n) for n in range(100)]), (0, None), (1, ["0"])])
def test_rdma_hca_max_gives_mellanox_ids(hca_max: int, ids: list[str] | None, tmp_path: Path,
                                         standard: FakeRdmaNode, make_driver) -> None:
    path = _file(tmp_path, [{"resourceName": "test_server", "rdmaHcaMax": hca_max, "devices": ["ib0"]}])
    inventory = make_driver(standard, configFile=path).scan()
    got = inventory.get("rdma/test_server")
    assert (None if got is None or not got else [d.id for d in got]) == ids
    assert all(d.replicas is None for d in got or ())


# pkg/resources/resources_manager_test.go "ValidateConfigs": the configs that pass there pass here.
@pytest.mark.parametrize("entry", [
    {"resourceName": "test_config", "rdmaHcaMax": 100, "devices": ["ib0"]},
    {"resourceName": "test_config", "rdmaHcaMax": 100,
     "selectors": {"vendors": ["15b3"], "deviceIDs": ["1017"], "ifNames": ["eth1"]}},
    {"resourceName": "test_config", "rdmaHcaMax": 0, "devices": ["ib0"]},
])
def test_valid_configs(entry: dict[str, Any], tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    make_driver(standard, configFile=_file(tmp_path, [entry]))


def test_read_config_with_and_without_periodic_update(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    # resources_manager_test.go "ReadConfig": 30 when set; absent: Mellanox's 60 s default is its rescan,
    # multidp's own default (30 s) applies, since device changes are seen at every poll anyway.
    entries = [{"resourceName": "hca_shared_devices_a", "rdmaHcaMax": 1000, "devices": ["ib0", "ib1"]},
               {"resourceName": "hca_shared_devices_b", "rdmaHcaMax": 500,
                "selectors": {"vendors": ["15b3"], "deviceIDs": ["1017"], "ifNames": ["ib2", "ib3"]}}]
    driver = make_driver(standard, configFile=_file(tmp_path, entries, periodicUpdateInterval=30))
    assert driver.config.rescan_seconds == 30
    assert [p.replicas for p in driver.pools] == [1000, 500]
    assert make_driver(standard, configFile=_file(tmp_path, entries)).config.rescan_seconds == 30


def test_every_pool_filters_all_devices(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    entries = [{"resourceName": "a", "rdmaHcaMax": 2, "selectors": {"linkTypes": ["infiniband"]}},
               {"resourceName": "b", "rdmaHcaMax": 2, "selectors": {"vendors": ["15b3"]}}]
    driver = make_driver(standard, configFile=_file(tmp_path, entries))
    driver.scan()
    members = {r: sorted(d.name for d in ps.members) for r, ps in driver._state.items()}
    assert members == {"rdma/a": ["mlx4_0", "mlx5_0"], "rdma/b": ["mlx4_0", "mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]}
    # multidp's own pools: the first pool that selects a device gets it (the SR-IOV plugin's rule).
    own = make_driver(standard, pools=[{**e, "mode": "shared"} for e in entries])
    own.scan()
    assert sorted(d.name for d in own._state["rdma/b"].members) == ["mlx5_1", "mlx5_2", "mlx5_3"]


def test_if_names_match_the_first_netdev_only(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    # mlx4_0's function has netdevs ib1 and ib2; Mellanox's pciNetDevice keeps netDevs[0] only.
    first = make_driver(standard, configFile=_file(tmp_path, [{"resourceName": "a", "rdmaHcaMax": 1,
                                                               "devices": ["ib1"]}]))
    assert "rdma/a" in first.scan()
    second = make_driver(standard, configFile=_file(tmp_path, [{"resourceName": "a", "rdmaHcaMax": 1,
                                                                "devices": ["ib2"]}]))
    assert second.scan() == {}
    own = make_driver(standard, pools=[{"resourceName": "a", "mode": "shared", "selectors": {"ifNames": ["ib2"]}}])
    assert "rdma/a" in own.scan()


def test_a_pasted_config_list_keeps_mellanox_rules(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard, configList=[{"resourceName": "a", "rdmaHcaMax": 3, "devices": ["ib0"]}])
    assert [d.id for d in driver.scan()["rdma/a"]] == ["0", "1", "2"]


def test_rdma_hca_max_above_the_bound_names_both_numbers(standard: FakeRdmaNode, make_driver) -> None:
    with pytest.raises(ConfigError, match="100001 is above 100000"):
        make_driver(standard, configList=[{"resourceName": "a", "rdmaHcaMax": 100_001, "devices": ["ib0"]}])


# pkg/cdi/cdi_test.go: annotation key "cdi.k8s.io/example.com_net" for prefix example.com, kind net;
# pkg/resources/server.go: kind nvidia.com/net-rdma, devices named by PCI address, nodes "rw".
def test_use_cdi_answers_as_mellanox_does(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    assert annotation_key("example.com/net") == "example.com_net"
    path = _file(tmp_path, [{"resourceName": "ib", "rdmaHcaMax": 4, "selectors": {"linkTypes": ["infiniband"]}}])
    driver = make_driver(standard, configFile=path, useCdi=True)
    shares = driver.scan()["rdma/ib"]
    [spec] = driver.cdi_specs()
    assert spec.kind == "nvidia.com/net-rdma"
    assert sorted(d.name for d in spec.devices) == ["0000:3b:00.0", "0000:5e:00.0"]
    nodes = {n.host_path: n.permissions for d in spec.devices if d.name == "0000:3b:00.0" for n in d.device_nodes}
    assert nodes == {"/dev/infiniband/uverbs0": "rw", "/dev/infiniband/umad0": "rw", "/dev/infiniband/rdma_cm": "rw"}
    answer = driver.allocate(AllocationRequest("rdma/ib", ("2",), ("2",)))
    assert answer.device_nodes == [] and not answer.cdi_field
    assert answer.cdi_annotation_key == "nvidia.com_net-rdma"
    assert sorted(answer.cdi_devices) == ["nvidia.com/net-rdma=0000:3b:00.0", "nvidia.com/net-rdma=0000:5e:00.0"]
    assert len(shares) == 4 and {tuple(sorted(d.cdi_devices)) for d in shares} == {tuple(sorted(answer.cdi_devices))}
