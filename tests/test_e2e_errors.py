"""The error contract over the wire: every bad request, and drivers that raise or hang."""

from __future__ import annotations

import grpc
import pytest

from multidp.api import pb
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin, wait_until

WIDGET = "example.com/widget"
SHARED = "example.com/widget-shared"


@pytest.fixture
def stub(kubelet: KubeletStandIn, multidp_host, sample: SamplePlugin):
    multidp_host({"sample": sample}, timeouts={"allocate": 0.5, "preferredAllocation": 0.3})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    kubelet.wait_devices(SHARED, lambda v: v.capacity == 4)
    return kubelet.stub(WIDGET)


def allocate(stub, *containers: list[str]) -> pb.AllocateResponse:
    return stub.Allocate(pb.AllocateRequest(container_requests=[
        pb.ContainerAllocateRequest(devices_ids=ids) for ids in containers]), timeout=5)


def prefer(stub, available: list[str], must: list[str], size: int) -> pb.PreferredAllocationResponse:
    return stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(available_deviceIDs=available, must_include_deviceIDs=must,
                                               allocation_size=size)]), timeout=5)


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value


@pytest.mark.parametrize(("containers", "expected"), [
    ((), "invalid request: no container requests"),
    (([],), "invalid request: container request 0 names no devices"),
    ((["widget-0"], []), "invalid request: container request 1 names no devices"),
    ((["no-such-device"],), "invalid request: unknown device: no-such-device"),
    ((["widget-0", "nope-1", "nope-2", "nope-1"],), "invalid request: 2 unknown devices: nope-1, nope-2"),
])
def test_bad_allocate_requests_are_invalid_argument(stub, sample, containers, expected):
    err = rpc_error(allocate, stub, *containers)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f'invalid allocation request for "{WIDGET}": {expected}'
    assert sample.driver.calls == []


def test_huge_request_names_a_few_ids_and_the_count(stub, sample):
    err = rpc_error(allocate, stub, [f"x{i}" for i in range(20_000)])
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (f'invalid allocation request for "{WIDGET}": invalid request: '
                             "20000 unknown devices: x0, x1, x2 and 19997 more")


def test_over_long_id_is_refused_before_lookup_and_not_echoed_whole(stub):
    err = rpc_error(allocate, stub, ["widget-0", "y" * 100_000])
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "device ID longer than 1024 bytes" in err.details()
    assert "(100000 characters)" in err.details()
    assert len(err.details()) < 300


def test_duplicates_are_folded_not_refused(stub, sample):
    response = allocate(stub, ["widget-1", "widget-1", "widget-0", "widget-1"])
    assert response.container_responses[0].envs["WIDGET_DEVICES"] == "widget-1,widget-0"


def test_many_containers_get_one_answer_each(stub):
    response = allocate(stub, *[[f"widget-{i % 4}"] for i in range(64)])
    assert len(response.container_responses) == 64
    assert response.container_responses[5].envs["WIDGET_DEVICES"] == "widget-1"


def test_unknown_id_in_preferred_allocation(stub):
    err = rpc_error(prefer, stub, ["widget-0", "ghost"], [], 1)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (f'invalid preferred allocation request for "{WIDGET}": '
                             "invalid request: unknown device: ghost")


@pytest.mark.parametrize(("available", "must", "size", "problem"), [
    (["widget-0", "widget-1"], ["widget-2"], 2, "must_include devices not in available: widget-2"),
    (["widget-0", "widget-1"], ["widget-0", "widget-1"], 1, "allocation size 1 is outside 2..2"),
    (["widget-0", "widget-1"], [], 3, "allocation size 3 is outside 1..2"),
    (["widget-0"], [], 0, "allocation size 0 is outside 1..1"),
])
def test_inconsistent_preferred_requests(stub, available, must, size, problem):
    err = rpc_error(prefer, stub, available, must, size)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert problem in err.details()


def test_allocate_that_raises_is_internal_and_names_the_driver(stub, sample):
    sample.driver.faults["allocate"] = "raise"
    err = rpc_error(allocate, stub, ["widget-0"])
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "driver sample: allocate failed: RuntimeError" in err.details()
    sample.driver.faults.clear()
    assert allocate(stub, ["widget-0"]).container_responses[0].envs["WIDGET_DEVICES"] == "widget-0"


def test_allocate_that_hangs_is_deadline_exceeded_and_others_still_answer(kubelet, stub, sample):
    sample.driver.faults["allocate"] = 3.0
    err = rpc_error(allocate, stub, ["widget-0"])
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer within 0.5 s" in err.details()
    # The resource's other RPCs, and ListAndWatch, keep working meanwhile.
    assert prefer(stub, ["widget-0", "widget-1"], [], 1).container_responses[0].deviceIDs
    sample.hardware.set_health(WIDGET, "widget-3", False)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 3)


@pytest.mark.parametrize("fault", ["raise", 2.0])
def test_preferred_allocation_falls_back_to_numa_when_driver_fails(kubelet, multidp_host, fault):
    class Picky(SampleDriver):
        def preferred_allocation(self, request):
            self._misbehave("preferred")
            return ["widget-3"]

    plugin = SamplePlugin(Picky)
    multidp_host({"sample": plugin}, timeouts={"preferredAllocation": 0.3})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    stub = kubelet.stub(WIDGET)
    assert list(prefer(stub, ["widget-0", "widget-3"], [], 1).container_responses[0].deviceIDs) == ["widget-3"]
    plugin.driver.faults["preferred"] = fault
    answer = prefer(stub, ["widget-2", "widget-0", "widget-3", "widget-1"], ["widget-0"], 2)
    assert list(answer.container_responses[0].deviceIDs) == ["widget-0", "widget-1"]


def test_cdi_failure_costs_only_cdi_allocations(kubelet, multidp_host, sample):
    # No scan after the first: each scan tries the specs again while they failed, and would clear it.
    sample_config = {"sample": {"pollInterval": 3600}}
    host = multidp_host({"sample": sample}, drivers=sample_config)
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    kubelet.wait_devices(SHARED, lambda v: v.capacity > 0)
    wait_until(lambda: any((kubelet.directory / "cdi").glob("*.json")), what="the sample driver's CDI spec")
    host.cdi.fail("sample", "cannot write CDI spec to /nowhere: read-only file system")
    err = rpc_error(allocate, kubelet.stub(WIDGET), ["widget-0"])
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only file system" in err.details()
    shared = allocate(kubelet.stub(SHARED), ["widget-shared-0::1"])
    assert shared.container_responses[0].envs["WIDGET_SHARED_DEVICES"] == "widget-shared-0"


def test_undecodable_request_is_invalid_argument(stub, kubelet):
    raw = kubelet.resources[WIDGET].channel.unary_unary(
        "/v1beta1.DevicePlugin/Allocate", request_serializer=None, response_deserializer=None)
    err = rpc_error(raw, b"\x0a\x80\x80\x04garbage", 5)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid v1beta1.AllocateRequest" in err.details()
    assert allocate(stub, ["widget-0"]).container_responses[0].envs["WIDGET_DEVICES"] == "widget-0"
