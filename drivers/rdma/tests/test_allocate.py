"""Allocate and GetPreferredAllocation on the driver: nodes, SR-IOV envs, refusals, NUMA then PCI parent."""

from __future__ import annotations

import json

import pytest
from multidp import AllocationRefused, AllocationRequest, PreferenceRequest
from rdma_helpers import create_driver

from multidp_rdma.allocation import env_key
from multidp_rdma.config import RdmaConfig, resolve_pools
from multidp_rdma.faketree import FakeRdmaNode


def _allocate(driver, resource: str, *ids: str):
    return driver.allocate(AllocationRequest(resource, tuple(ids), tuple(ids)))


def _paths(allocation) -> list[str]:
    assert all(n.container_path == n.host_path and n.permissions == "rw" for n in allocation.device_nodes)
    return [n.host_path for n in allocation.device_nodes]


def test_exclusive_allocation_gives_the_devices_nodes_and_sriov_envs(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard)
    driver.scan()
    allocation = _allocate(driver, "rdma/hca", "0000:5e:00.0", "0000:86:00.2")
    assert _paths(allocation) == [
        "/dev/infiniband/uverbs1", "/dev/infiniband/umad1", "/dev/infiniband/umad2",
        "/dev/infiniband/uverbs3", "/dev/infiniband/umad4", "/dev/infiniband/rdma_cm",
    ]
    assert allocation.envs["PCIDEVICE_RDMA_HCA"] == "0000:5e:00.0,0000:86:00.2"
    assert json.loads(allocation.envs["PCIDEVICE_RDMA_HCA_INFO"]) == {
        "0000:5e:00.0": {"generic": {"deviceID": "0000:5e:00.0"},
                         "rdma": {"uverbs": "/dev/infiniband/uverbs1", "umad": "/dev/infiniband/umad1",
                                  "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx4_0"}},
        "0000:86:00.2": {"generic": {"deviceID": "0000:86:00.2"},
                         "rdma": {"uverbs": "/dev/infiniband/uverbs3", "umad": "/dev/infiniband/umad4",
                                  "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx5_2"}},
    }


def test_with_use_cdi_each_device_declares_the_cdi_names_its_answer_gives(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard, useCdi=True)
    devices = driver.scan()["rdma/hca"]
    assert devices and all(len(d.cdi_devices) == 1 for d in devices)
    for device in devices:  # the host marks a device Unhealthy by these while it cannot write the spec
        assert list(device.cdi_devices) == _allocate(driver, "rdma/hca", device.id).cdi_devices
    assert all(d.cdi_devices == () for d in create_driver(standard).scan()["rdma/hca"])


def test_issm_only_when_the_pool_asks(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard, pools=[{"resourceName": "sm", "includeIssm": True,
                                             "selectors": {"rdmaDevices": ["mlx5_0"]}}])
    driver.scan()
    allocation = _allocate(driver, "rdma/sm", "0000:3b:00.0")
    assert "/dev/infiniband/issm0" in _paths(allocation)
    info = json.loads(allocation.envs["PCIDEVICE_RDMA_SM_INFO"])
    assert info["0000:3b:00.0"]["rdma"]["issm"] == "/dev/infiniband/issm0"


def test_shared_pool_gives_every_container_the_healthy_members(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard, pools=[{"resourceName": "shared", "mode": "shared", "rdmaHcaMax": 4,
                                             "selectors": {"linkTypes": ["ether"]}}])
    driver.scan()
    first = _allocate(driver, "rdma/shared", "shared")
    assert first.envs["PCIDEVICE_RDMA_SHARED"] == "0000:86:00.0,0000:86:00.2,0000:86:00.3"
    assert _paths(first)[-1] == "/dev/infiniband/rdma_cm" and len(_paths(first)) == 7
    standard.port_down("mlx5_2")
    driver.scan()
    second = _allocate(driver, "rdma/shared", "shared")
    assert second.envs["PCIDEVICE_RDMA_SHARED"] == "0000:86:00.0,0000:86:00.3"
    assert "/dev/infiniband/uverbs3" not in _paths(second)
    for name in ("mlx5_1", "mlx5_3"):
        standard.port_down(name)
    driver.scan()
    with pytest.raises(AllocationRefused, match="no RDMA device of rdma/shared is Healthy"):
        _allocate(driver, "rdma/shared", "shared")


def test_allocation_refused_when_rdma_cm_or_uverbs_node_is_missing(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard)
    driver.scan()
    standard.node("uverbs0").unlink()
    with pytest.raises(AllocationRefused, match="/dev/infiniband/uverbs0 of RDMA device mlx5_0"):
        _allocate(driver, "rdma/hca", "0000:3b:00.0")
    standard.remove_rdma_cm()
    with pytest.raises(AllocationRefused, match="rdma_cm is missing"):
        _allocate(driver, "rdma/hca", "0000:86:00.0")


def test_missing_umad_node_is_left_out_with_a_warning(standard: FakeRdmaNode, caplog) -> None:
    driver = create_driver(standard)
    driver.scan()
    standard.node("umad2").unlink()
    allocation = _allocate(driver, "rdma/hca", "0000:5e:00.0")
    assert "/dev/infiniband/umad2" not in _paths(allocation) and "/dev/infiniband/umad1" in _paths(allocation)
    assert any("umad2 is missing" in r.getMessage() for r in caplog.records)


def test_device_gone_since_the_last_scan_is_refused(standard: FakeRdmaNode) -> None:
    driver = create_driver(standard)
    driver.scan()
    standard.remove_rdma("mlx5_3")
    driver.scan()
    with pytest.raises(AllocationRefused, match="0000:86:00.3 of rdma/hca are gone"):
        _allocate(driver, "rdma/hca", "0000:86:00.3")


@pytest.mark.parametrize(
    ("prefix", "name", "key"),
    [("rdma", "hca", "PCIDEVICE_RDMA_HCA"), ("nvidia.com", "mlnx_sriov_rdma", "PCIDEVICE_NVIDIA_COM_MLNX_SRIOV_RDMA"),
     ("intel.com", "intel_sriov.netdevice", "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE")],
)
def test_env_key_follows_the_sriov_plugin(prefix: str, name: str, key: str) -> None:
    pool = resolve_pools(RdmaConfig(pools=[_pool_config(f"{prefix}/{name}")]))[0]
    assert env_key(pool) == key


def _pool_config(resource: str):
    from multidp_rdma.config import PoolConfig

    return PoolConfig(resource_name=resource)


def _topology_node(root) -> FakeRdmaNode:
    """NUMA 0: a1 under bridge A; b1, b2 under bridge B. NUMA 1: c1..c4 under bridge C."""
    fake = FakeRdmaNode(root)
    layout = [("a1", "0000:11:00.0", 0, "0000:10:00.0"), ("b1", "0000:21:00.0", 0, "0000:20:00.0"),
              ("b2", "0000:21:00.1", 0, "0000:20:00.0")]
    layout += [(f"c{i}", f"0000:b1:00.{i}", 1, "0000:b0:00.0") for i in range(1, 5)]
    for name, address, numa, bridge in layout:
        fake.add_function(address, numa=numa, bridge=bridge)
        fake.add_rdma(name, address)
    return fake


def test_preferred_allocation_same_numa_first_then_same_pci_parent(tmp_path) -> None:
    driver = create_driver(_topology_node(tmp_path / "n"))
    driver.scan()
    a1, b1, b2 = "0000:11:00.0", "0000:21:00.0", "0000:21:00.1"
    c = [f"0000:b1:00.{i}" for i in range(1, 5)]
    available = (a1, c[0], b1, c[1], b2, c[2], c[3])

    def prefer(size: int, must: tuple[str, ...] = ()) -> list[str]:
        return list(driver.preferred_allocation(PreferenceRequest("rdma/hca", available, must, size)))

    assert prefer(2) == [b1, b2]  # NUMA 0 fits two; within it, bridge B holds both
    assert sorted(prefer(3)) == [a1, b1, b2]  # all of NUMA 0, not one of NUMA 1
    assert sorted(prefer(4)) == c
    assert prefer(2, (a1,)) == [a1, b1]
    assert sorted(prefer(2, (c[2],))) == sorted([c[2], c[0]])
