"""Registration, inventory, ListAndWatch and Allocate, end to end over real unix sockets."""

from __future__ import annotations

import json
import stat

import grpc
import pytest

from multidp.api import pb
from multidp.model import Device
from multidp.serving.sockets import socket_name
from multidp.testing import KubeletStandIn, SamplePlugin, wait_until

WIDGET = "example.com/widget"
SHARED = "example.com/widget-shared"


def test_registers_every_resource_with_its_options(kubelet: KubeletStandIn, multidp_host, sample: SamplePlugin):
    multidp_host({"sample": sample})
    for resource in (WIDGET, SHARED):
        reg = kubelet.wait_registered(resource)
        assert reg.version == "v1beta1"
        assert reg.endpoint == socket_name("sample", resource)
        assert reg.options.get_preferred_allocation_available is True
        assert reg.options.pre_start_required is False
        sock = kubelet.directory / reg.endpoint
        assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert kubelet.errors == []


def test_pre_start_is_offered_only_when_the_driver_has_one(kubelet, multidp_host, sample):
    multidp_host({"sample": sample}, drivers={"sample": {"preStart": True}})
    reg = kubelet.wait_registered(WIDGET)
    assert reg.options.pre_start_required is True
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    kubelet.stub(WIDGET).PreStartContainer(pb.PreStartContainerRequest(devices_ids=["widget-1"]), timeout=5)
    assert ("pre_start", (WIDGET, ("widget-1",))) in sample.driver.calls
    assert view.options.pre_start_required


def test_inventory_has_ids_health_numa_and_replicas(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    widgets = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    assert widgets.devices == {
        "widget-0": ("Healthy", (0,)),
        "widget-1": ("Healthy", (0,)),
        "widget-2": ("Healthy", (1,)),
        "widget-3": ("Healthy", (1,)),
    }
    shared = kubelet.wait_devices(SHARED, lambda v: v.capacity == 4)
    assert sorted(shared.devices) == [f"widget-shared-0::{i}" for i in range(4)]


def test_health_change_reaches_the_kubelet_and_recovers(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    sample.hardware.set_health(WIDGET, "widget-2", False, "overheated")
    view = kubelet.wait_devices(WIDGET, lambda v: v.devices["widget-2"][0] == "Unhealthy")
    assert (view.capacity, view.allocatable) == (4, 3)
    sample.hardware.set_health(WIDGET, "widget-2", True)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, what="recovery")


def test_replicas_share_the_health_of_their_device(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(SHARED, lambda v: v.allocatable == 4)
    sample.hardware.set_health(SHARED, "widget-shared-0", False)
    kubelet.wait_devices(SHARED, lambda v: v.allocatable == 0 and v.capacity == 4)


def test_nothing_is_sent_when_nothing_changed(kubelet, multidp_host, sample):
    host = multidp_host({"sample": sample}, drivers={"sample": {"pollInterval": 0.02}})
    view = kubelet.wait_devices(WIDGET, lambda v: v.updates >= 1)
    runner = host.runners["sample"]
    scans = runner.scans
    wait_until(lambda: runner.scans >= scans + 10, what="ten more scans")
    assert view.updates == 1


def test_devices_appear_and_vanish_without_restart(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    sample.hardware.add(WIDGET, Device("widget-9", numa_nodes=(1,)))
    kubelet.wait_devices(WIDGET, lambda v: "widget-9" in v.devices)
    sample.hardware.remove(WIDGET, "widget-0")
    view = kubelet.wait_devices(WIDGET, lambda v: "widget-0" not in v.devices)
    assert view.capacity == 4


def test_allocate_answer_as_the_driver_built_it(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    response = kubelet.allocate(WIDGET, 2)
    ids = response.envs["WIDGET_DEVICES"].split(",")
    assert len(ids) == 2
    assert [d.container_path for d in response.devices] == [f"/dev/{i}" for i in ids]
    assert all(d.host_path == "/dev/null" and d.permissions == "rw" for d in response.devices)
    assert [(m.container_path, m.read_only) for m in response.mounts] == [("/etc/widget", True)]
    assert response.cdi_devices == [f"example.com/widget={i}" for i in ids]


def test_preferred_allocation_packs_by_numa(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=["widget-0", "widget-2", "widget-3", "widget-1"],
        must_include_deviceIDs=["widget-2"], allocation_size=2)])
    answer = kubelet.stub(WIDGET).GetPreferredAllocation(request, timeout=5)
    assert list(answer.container_responses[0].deviceIDs) == ["widget-2", "widget-3"]


def test_replica_suffixes_are_stripped_and_duplicates_folded(kubelet, multidp_host, sample):
    multidp_host({"sample": sample}, drivers={"sample": {"resources": {SHARED: {"count": 2, "replicas": 3}}}})
    kubelet.wait_devices(SHARED, lambda v: v.capacity == 6)
    ids = ["widget-shared-1::2", "widget-shared-0::1", "widget-shared-1::0", "widget-shared-1::2"]
    response = kubelet.stub(SHARED).Allocate(
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=5)
    assert response.container_responses[0].envs["WIDGET_SHARED_DEVICES"] == "widget-shared-1,widget-shared-0"
    request = sample.driver.calls[-1][1]
    assert request.requested_ids == ("widget-shared-1::2", "widget-shared-0::1", "widget-shared-1::0")
    # Device nodes of one device requested twice appear once.
    assert [d.container_path for d in response.container_responses[0].devices] == [
        "/dev/widget-shared-1", "/dev/widget-shared-0"]


def test_driver_policy_refusal_is_invalid_argument(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(SHARED, lambda v: v.capacity == 4)
    with pytest.raises(grpc.RpcError) as err:
        kubelet.stub(SHARED).Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=["widget-shared-0::0", "widget-shared-0::1"])]), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (f'invalid allocation request for "{SHARED}": invalid request: '
                                   "maximum request size is 1; found 2")


def test_cdi_spec_written_for_the_driver(kubelet, multidp_host, sample):
    host = multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    spec_file = host.cdi.file_for("sample", "example.com/widget")
    kubelet.wait_for(spec_file.exists, what="the CDI spec")
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == "example.com/widget"
    assert [d["name"] for d in spec["devices"]] == ["widget-0", "widget-1", "widget-2", "widget-3"]
    assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/widget-0", "hostPath": "/dev/null", "permissions": "rw"}]
