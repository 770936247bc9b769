"""DRA mode (``frontend: dra``): answers the host can write as CDI, never an annotation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from multidp import AllocationRequest, ContainerAllocation
from rdma_helpers import LOGGER

from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode

Maker = Callable[..., RdmaDriver]


def _allocate(driver: RdmaDriver, resource: str, *ids: str) -> ContainerAllocation:
    return driver.allocate(AllocationRequest(resource, ids, ids, claim_uid="4c1e", request_name="hca"))


def test_without_cdi_the_answer_is_nodes_and_variables_only(standard: FakeRdmaNode, make_driver: Maker) -> None:
    driver = make_driver(standard, frontend="dra")
    driver.scan()
    answer = _allocate(driver, "rdma/hca", "0000:3b:00.0")
    assert answer.annotations == {} and answer.cdi_annotation_key is None and answer.cdi_devices == []
    # what the host writes into the claim's own CDI spec
    assert [n.host_path for n in answer.device_nodes] == [
        "/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/rdma_cm"]
    assert answer.envs["PCIDEVICE_RDMA_HCA"] == "0000:3b:00.0"


def test_with_use_cdi_the_answer_names_the_drivers_cdi_devices_without_an_annotation(
        standard: FakeRdmaNode, make_driver: Maker) -> None:
    driver = make_driver(standard, frontend="dra", useCdi=True)
    devices = driver.scan()["rdma/hca"]
    answer = _allocate(driver, "rdma/hca", "0000:3b:00.0", "0000:86:00.2")
    assert answer.annotations == {} and answer.cdi_annotation_key is None and answer.cdi_field
    assert answer.device_nodes == [] and answer.mounts == []
    assert answer.cdi_devices == ["rdma/net-pci=0000:3b:00.0", "rdma/net-pci=0000:86:00.2"]
    declared = {spec.qualified_name(d.name) for spec in driver.cdi_specs() for d in spec.devices}
    assert set(answer.cdi_devices) <= declared
    assert all(d.cdi_devices for d in devices)  # Unhealthy while the host cannot write the spec, as before
    assert answer.envs["PCIDEVICE_RDMA_HCA"] == "0000:3b:00.0,0000:86:00.2"  # the SR-IOV plugin's variables stay
    # Through the Device Plugin API the same config asks the host for the incumbents' annotation.
    plugin_mode = make_driver(standard, useCdi=True)
    plugin_mode.scan()
    assert _allocate(plugin_mode, "rdma/hca", "0000:3b:00.0").cdi_annotation_key == "rdma_net-pci"


def test_a_shared_pool_with_replicas_is_named_as_one_claim_at_a_time(
        standard: FakeRdmaNode, make_driver: Maker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", LOGGER)
    shared = [{"resourceName": "shared", "mode": "shared", "rdmaHcaMax": 4, "selectors": {"linkTypes": ["ether"]}}]
    make_driver(standard, frontend="dra", pools=shared)
    assert "rdma/shared: a shared pool with replicas (<pool>::n) is offered once through DRA" in caplog.text
    caplog.clear()
    driver = make_driver(standard, frontend="dra", pools=shared, sharedIds="index")
    assert "offered once" not in caplog.text
    [first, *_] = driver.scan()["rdma/shared"]
    answer = _allocate(driver, "rdma/shared", first.id)
    assert answer.annotations == {} and answer.envs["PCIDEVICE_RDMA_SHARED"]
