"""Pools: every selector kind, OR within and AND across, first pool wins, shared pools, config errors."""

from __future__ import annotations

from typing import Any

import pytest
from multidp import ConfigError
from rdma_helpers import create_driver, device, health, multidp_command

from multidp_rdma.faketree import FakeRdmaNode

# standard node: mlx5_0 IB 3b:00.0 (101b, ib0), mlx4_0 IB 5e:00.0 (1003, mlx4_core, ib1/ib2),
# mlx5_1 RoCE PF 86:00.0 (1017, ens5f0), VFs mlx5_2 86:00.2 / mlx5_3 86:00.3 (1018, ens5f0v0/v1).
IB, MLX4, PF, VF0, VF1 = "0000:3b:00.0", "0000:5e:00.0", "0000:86:00.0", "0000:86:00.2", "0000:86:00.3"


def _pool(fake: FakeRdmaNode, selectors: dict[str, Any] | list[dict[str, Any]], **pool: Any) -> set[str]:
    inventory = create_driver(fake, pools=[{"resourceName": "sel", "selectors": selectors, **pool}]).scan()
    return set(health(inventory, "rdma/sel"))


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        ({"vendors": ["15b3"]}, {IB, MLX4, PF, VF0, VF1}),
        ({"vendors": ["0x8086"]}, set()),
        ({"deviceIDs": ["1018"]}, {VF0, VF1}),
        ({"deviceIDs": ["0x101B", "1003"]}, {IB, MLX4}),
        ({"drivers": ["mlx4_core"]}, {MLX4}),
        ({"ifNames": ["ens5f0", "ib0"]}, {PF, IB}),
        ({"linkTypes": ["ether"]}, {PF, VF0, VF1}),
        ({"linkTypes": ["InfiniBand"]}, {IB, MLX4}),
        ({"pciAddresses": ["0000:3b:00.0", "86:00.3"]}, {IB, VF1}),
        ({"rdmaDevices": ["mlx5_2", "mlx4_0"]}, {VF0, MLX4}),
        ({"pfNames": ["ens5f0"]}, {PF, VF0, VF1}),
        ({"pfNames": ["ens5f0#1"]}, {VF1}),
        ({"pfNames": ["ens5f0#0-1"]}, {VF0, VF1}),
        ({"pfNames": ["ens5f0#0,1"]}, {VF0, VF1}),
        ({"pfNames": ["ens5f0#1,3-7"]}, {VF1}),
        ({"rootDevices": ["0000:86:00.0"]}, {VF0, VF1}),  # VFs of that PF, not the PF
        ({"rootDevices": ["86:00.0#1"]}, {VF1}),
        ({"rootDevices": ["0000:3b:00.0"]}, set()),  # a PF without VFs
        ({"pfsWithVfs": False}, {IB, MLX4, VF0, VF1}),
        ({"pfsWithVfs": True}, {IB, MLX4, PF, VF0, VF1}),
    ],
)
def test_each_selector_kind(standard: FakeRdmaNode, selectors: dict[str, Any], expected: set[str]) -> None:
    assert _pool(standard, selectors) == expected


def test_selectors_or_within_and_across(standard: FakeRdmaNode) -> None:
    assert _pool(standard, {"deviceIDs": ["1017", "1018"], "linkTypes": ["ether"]}) == {PF, VF0, VF1}
    assert _pool(standard, {"deviceIDs": ["1017", "1018"], "pfNames": ["ens5f0#0"]}) == {VF0}
    assert _pool(standard, {"vendors": ["15b3"], "drivers": ["mlx5_core"], "linkTypes": ["infiniband"]}) == {IB}
    assert _pool(standard, {}) == {IB, MLX4, PF, VF0, VF1}


def test_a_list_of_selector_objects_takes_a_device_passing_any(standard: FakeRdmaNode) -> None:
    assert _pool(standard, [{"rdmaDevices": ["mlx5_0"]}, {"pfNames": ["ens5f0#1"]}]) == {IB, VF1}
    assert _pool(standard, [{"deviceIDs": ["1018"], "pfNames": ["ens5f0#0"]}]) == {VF0}


def test_first_matching_pool_wins(standard: FakeRdmaNode) -> None:
    inventory = create_driver(standard, pools=[
        {"resourceName": "vfs", "selectors": {"deviceIDs": ["1018"]}},
        {"resourceName": "roce", "selectors": {"linkTypes": ["ether"]}},
        {"resourceName": "rest"},
    ]).scan()
    assert set(health(inventory, "rdma/vfs")) == {VF0, VF1}
    assert set(health(inventory, "rdma/roce")) == {PF}
    assert set(health(inventory, "rdma/rest")) == {IB, MLX4}


def test_pool_with_no_member_is_not_served(standard: FakeRdmaNode) -> None:
    inventory = create_driver(standard, pools=[
        {"resourceName": "none", "selectors": {"vendors": ["8086"]}},
        {"resourceName": "ib", "resourcePrefix": "example.com", "selectors": {"linkTypes": ["ib"]}},
    ]).scan()
    assert list(inventory) == ["example.com/ib"]


def test_shared_pool_is_one_device_with_replicas(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard, pools=[
        {"resourceName": "hca_shared_devices_a", "mode": "shared", "rdmaHcaMax": 7,
         "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]}},
    ])
    shared = device(driver.scan(), "hca_shared_devices_a", "rdma/hca_shared_devices_a")
    assert shared.replicas == 7 and shared.healthy and shared.numa_nodes == (0,)
    assert shared.info == {"members": "mlx4_0,mlx5_0", "healthy": "2/2"}
    standard.port_down("mlx5_0")
    assert device(driver.scan(), "hca_shared_devices_a", "rdma/hca_shared_devices_a").healthy  # mlx4_0 still up
    standard.port_down("mlx4_0")
    down = device(driver.scan(), "hca_shared_devices_a", "rdma/hca_shared_devices_a")
    assert not down.healthy and down.reason.startswith("no member is Healthy: mlx4_0: no port is ACTIVE")
    standard.port_up("mlx4_0")
    assert device(driver.scan(), "hca_shared_devices_a", "rdma/hca_shared_devices_a").healthy


def test_shared_pool_across_numa_nodes_names_them_all(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard, pools=[{"resourceName": "all", "mode": "shared"}])
    shared = device(driver.scan(), "all", "rdma/all")
    assert shared.numa_nodes == (0, 1) and shared.replicas == 1000


def test_empty_pool_list_serves_nothing(standard: FakeRdmaNode) -> None:
    assert create_driver(standard, pools=[]).scan() == {}


P0 = "drivers.rdma.pools[0]"


@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        ({"pools": [{"resourceName": "Bad Name"}]}, P0, "resourceName: resource name 'rdma/Bad Name'"),
        ({"pools": [{"resourceName": "hca", "resourcePrefix": "Rdma_IO"}]}, P0, "DNS-1123"),
        ({"pools": [{"resourceName": "a"}, {"resourceName": "rdma/a"}]}, "drivers.rdma",
         "pools[1].resourceName: 'rdma/a' is already the resource of pools[0]"),
        ({"pools": [{"resourceName": "x/a", "resourcePrefix": "y"}]}, P0, "resourceName: 'x/a' already has a prefix"),
        ({"pools": [{"resourceName": "a", "rdmaHcaMax": 5}]}, P0, "rdmaHcaMax: applies to shared pools only"),
        ({"pools": [{"resourceName": "a", "mode": "shared", "rdmaHcaMax": -1}]}, P0,
         "rdmaHcaMax: Invalid value for rdmaHcaMax < 0: -1"),
        ({"pools": [{"resourceName": "a", "mode": "shared", "rdmaHcaMax": 100_001}]}, P0,
         "rdmaHcaMax: 100001 is above 100000, the most IDs multidp advertises for one resource"),
        ({"pools": [{"resourceName": "a", "mode": "private"}]}, f"{P0}.mode", "Invalid enum value 'private'"),
        ({"pools": [{"resourceName": "a", "selectors": {"vendors": ["15b3", "mellanox"]}}]}, f"{P0}.selectors",
         "vendors[1]: 'mellanox' is not a hexadecimal PCI ID"),
        ({"pools": [{"resourceName": "a", "selectors": {"linkTypes": ["fddi"]}}]}, f"{P0}.selectors",
         "linkTypes[0]: 'fddi' is not a link type (ether or infiniband)"),
        ({"pools": [{"resourceName": "a", "selectors": {"pciAddresses": ["3b:00"]}}]}, f"{P0}.selectors",
         "pciAddresses[0]: '3b:00' is not a PCI address"),
        ({"pools": [{"resourceName": "a", "selectors": {"pfNames": ["ens1f0#3-1"]}}]}, f"{P0}.selectors",
         "pfNames[0]: 'ens1f0#3-1': the VF range ends before it starts"),
        ({"pools": [{"resourceName": "a", "selectors": {"ifName": ["ib0"]}}]}, f"{P0}.selectors",
         "unknown field `ifName`"),
        ({"pools": [{"resourceName": "a", "selectors": {"deviceIDs": "1017"}}]}, f"{P0}.selectors.deviceIDs",
         "Expected `array | null`, got `str`"),
        ({"pollInterval": 0}, "drivers.rdma", "pollInterval: must be between 0.05 and 60"),
        ({"portHealth": "most"}, "drivers.rdma.portHealth", "Invalid enum value 'most'"),
        ({"configList": [], "pools": []}, "drivers.rdma", "pools and configList: give only one of them"),
        ({"configList": [{"resourceName": "a"}]}, "drivers.rdma",
         'configList[0]: error: configuration missmatch. neither "selectors" nor "devices" fields exits'),
        ({"pools": [{"resourceName": "a", "selectors": []}]}, P0, "selectors: an empty list selects nothing"),
        ({"pools": [{"resourceName": "a", "selectors": {"rootDevices": ["ens1f0"]}}]}, f"{P0}.selectors",
         "rootDevices[0]: 'ens1f0' is not a PF's PCI address"),
        ({"periodicUpdateInterval": -1}, "drivers.rdma", "periodicUpdateInterval: must be 0"),
        ({"rescanInterval": 0}, "drivers.rdma", "rescanInterval: must be between 1 and 3600"),
    ],
)
def test_bad_config_names_the_key(standard: FakeRdmaNode, config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_driver(standard, **config)
    assert caught.value.key == key
    assert words in caught.value.message


def test_config_check_catches_what_driver_creation_catches(tmp_path) -> None:
    config = tmp_path / "multidp.yaml"
    config.write_text("drivers:\n  rdma:\n    pools:\n      - resourceName: hca\n"
                      "        selectors: {vendors: [mellanox]}\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 2, result.stderr
