"""What a driver hands the host, hardened: malformed devices, lists past the kubelet's 4 MiB, bad answers.

A malformed device is left out and logged once, never taking its resource down;
a list the kubelet could not receive is refused whole and the previous one
stays; a preferred-allocation answer that is no list of IDs falls back to the
host's pick; an Allocate answer with wrong types is INTERNAL naming the driver.
None of these may log a traceback, and none is logged once per scan or call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from multidp.api import pb
from multidp.model import ContainerAllocation, Device, DeviceNode, Health, Mount
from multidp.serving.resource import ResourceState
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin, wait_until

WIDGET = "example.com/widget"
GOOD = ["widget-0", "widget-1", "widget-2", "widget-3"]
MIB = 1024 * 1024
KUBELET_LIMIT = 4 * MIB
UUID = "GPU-{:08x}-1234-5678-9abc-def012345678"  # NVIDIA's ID shape: 40 characters


class Scans:
    """A sample driver whose widget resource gets ``extra`` appended; counts its scans."""

    def __init__(self, extra: list[object] | None = None) -> None:
        self.extra: list[object] = list(extra or [])
        self.count = 0
        scans = self

        class Sloppy(SampleDriver):
            def scan(self):  # type: ignore[override]
                inventory = dict(super().scan())
                inventory[WIDGET] = [*inventory[WIDGET], *scans.extra]
                scans.count += 1
                return inventory

        self.plugin = SamplePlugin(Sloppy)

    def wait(self, more: int = 5) -> None:
        """Let ``more`` scans run (each sees the current ``extra``)."""
        target = self.count + more + 1  # +1: one may have started with the old ``extra``
        wait_until(lambda: self.count >= target, 10, f"{target} scans")


def start(multidp_host: Callable[..., object], scans: Scans) -> None:
    multidp_host({"sample": scans.plugin}, drivers={"sample": {"pollInterval": 0.05}})


def full_list(view) -> bool:
    return sorted(view.devices) == GOOD and view.allocatable == 4 and view.stream_open


def lines(caplog: pytest.LogCaptureFixture, *texts: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if all(t in r.getMessage() for t in texts)]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert "Traceback" not in caplog.text


# Item 3: a malformed device is left out; the rest of the resource is served -----------------------------

MALFORMED: dict[str, object] = {
    "NUMA nodes a list": Device("bad", numa_nodes=[0]),  # type: ignore[arg-type]
    "NUMA nodes None": Device("bad", numa_nodes=None),  # type: ignore[arg-type]
    "NUMA node 2**70": Device("bad", numa_nodes=(2**70,)),
    "NUMA node negative": Device("bad", numa_nodes=(-1,)),
    "NUMA node a bool": Device("bad", numa_nodes=(True,)),
    "NUMA node a str": Device("bad", numa_nodes=("0",)),  # type: ignore[arg-type]
    "ID bytes": Device(b"bad"),  # type: ignore[arg-type]
    "ID a lone surrogate": Device("bad\ud800"),
    "ID an int": Device(7),  # type: ignore[arg-type]
    "ID empty": Device(""),
    "replicas a str": Device("bad", replicas="3"),  # type: ignore[arg-type]
    "replicas a bool": Device("bad", replicas=True),
    "replicas 0": Device("bad", replicas=0),
    "replicas 100,001": Device("bad", replicas=100_001),
    "health a str": Device("bad", health="Healthy"),  # type: ignore[arg-type]
    "not a Device": {"id": "bad"},
    "None": None,
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_device_is_left_out_and_the_rest_is_served(kubelet: KubeletStandIn, multidp_host, caplog, bad):
    caplog.set_level(logging.INFO)
    scans = Scans([bad])
    start(multidp_host, scans)
    kubelet.wait_devices(WIDGET, full_list, what="the four good widgets, stream open")
    scans.wait()
    view = kubelet.resources[WIDGET]
    assert full_list(view), view.devices
    left_out = lines(caplog, f"resource {WIDGET}: ", "leaving it out")
    assert len(left_out) == 1, left_out  # once, not once per scan
    assert_no_traceback(caplog)


def test_the_reason_names_the_device_and_what_is_wrong(kubelet, multidp_host, caplog):
    scans = Scans([Device("n", numa_nodes=[0]), Device(7), Device("r", replicas="3"),  # type: ignore[arg-type]
                   Device("big", numa_nodes=(2**70,)), Device("s\ud800"), Device("many", replicas=100_001)])
    start(multidp_host, scans)
    kubelet.wait_devices(WIDGET, full_list)
    scans.wait()
    text = "\n".join(lines(caplog, "leaving it out"))
    assert "device n has NUMA nodes [0] (a tuple of integers 0..2**63-1)" in text
    assert "device 7 has an ID of type int, not str" in text
    assert "device r asks for '3' replicas (an integer 1..100000)" in text
    assert "device big has NUMA nodes (1180591620717411303424,)" in text
    assert "has an ID that is not valid UTF-8" in text
    assert "device many asks for 100001 replicas (an integer 1..100000)" in text


def test_left_out_is_logged_again_only_when_the_problem_changes_or_comes_back(kubelet, multidp_host, caplog):
    scans = Scans([Device("flaky", numa_nodes=[0])])  # type: ignore[arg-type]
    start(multidp_host, scans)
    kubelet.wait_devices(WIDGET, full_list)
    scans.wait()
    assert len(lines(caplog, "device flaky ")) == 1
    scans.extra[:] = [Device("flaky", replicas="2")]  # type: ignore[arg-type]  # another problem
    scans.wait()
    assert len(lines(caplog, "device flaky ")) == 2
    scans.extra[:] = [Device("flaky")]  # fine for a while
    kubelet.wait_devices(WIDGET, lambda v: "flaky" in v.devices)
    scans.wait()
    scans.extra[:] = [Device("flaky", replicas="2")]  # type: ignore[arg-type]  # the same problem again
    kubelet.wait_devices(WIDGET, lambda v: "flaky" not in v.devices)
    scans.wait()
    assert len(lines(caplog, "device flaky ")) == 3
    assert_no_traceback(caplog)


def test_many_malformed_devices_are_summed_up_not_logged_one_by_one(caplog):
    caplog.set_level(logging.INFO)
    state = ResourceState(WIDGET, "t")
    assert state.update([Device("ok"), *(Device(i) for i in range(5_000))])  # type: ignore[arg-type]
    assert state.snapshot.ids == ("ok",)
    logged = [r.getMessage() for r in caplog.records if r.name == "multidp.serving.resource"]
    assert len(logged) == 11, logged[:20]
    assert logged[-1] == f"resource {WIDGET}: and 4990 more devices left out (not listed here)"
    caplog.clear()
    assert not state.update([Device("ok"), *(Device(i) for i in range(5_000))])  # type: ignore[arg-type]
    assert [r for r in caplog.records if r.name == "multidp.serving.resource"] == []  # nothing new to say


def test_a_replica_id_that_another_device_already_has_is_left_out(caplog):
    state = ResourceState(WIDGET, "t")
    state.update([Device("dup", replicas=2), Device("dup::1"), Device("x::0"), Device("x", replicas=2)])
    assert state.snapshot.ids == ("dup::0", "dup::1", "x::0")
    assert len(state.snapshot.ids) == len(set(state.snapshot.ids))
    assert "device dup::1 is listed twice" in caplog.text
    assert "device x would advertise x::0, which is listed already" in caplog.text


@pytest.mark.parametrize("devices", [5, "widget-0", {"widget-0": Device("widget-0")}, None],
                         ids=["an int", "a str", "a dict", "None"])
def test_a_resource_whose_devices_are_no_list_keeps_its_list(caplog, devices):
    state = ResourceState(WIDGET, "t")
    assert state.update([Device("widget-0")])
    for _ in range(3):
        assert not state.update(devices)
    assert state.snapshot.ids == ("widget-0",)
    refused = lines(caplog, "refused")
    assert refused == [f"resource {WIDGET}: the list of driver t is refused: it is a {type(devices).__name__}, "
                       "not a list of Devices; the kubelet keeps the previous list (1 IDs)"]


# Item 4: nothing past the kubelet's 4 MiB is advertised --------------------------------------------------

def uuid_devices(count: int, replicas: int | None = None, start_at: int = 0) -> list[Device]:
    return [Device(UUID.format(start_at + i), numa_nodes=(i % 2,), replicas=replicas) for i in range(count)]


def test_a_list_over_4_mib_is_refused_and_the_previous_list_stays(kubelet, multidp_host, caplog):
    scans = Scans()
    start(multidp_host, scans)
    view = kubelet.wait_devices(WIDGET, full_list)
    # NVIDIA time-slicing at the replica cap on 100 GPUs: ~6.4 MB of IDs.
    scans.extra[:] = uuid_devices(100, replicas=1_000)
    scans.wait(10)
    assert full_list(view), "the previous list must stay, the stream open"
    refused = lines(caplog, f"resource {WIDGET}: ", "refused")
    assert len(refused) == 1, refused  # once, not once per scan
    assert "104 devices" in refused[0] and "100,004 IDs with replicas" in refused[0]
    assert "over the kubelet's limit of 4,194,304" in refused[0]
    assert [r.levelname for r in caplog.records if r.getMessage() == refused[0]] == ["ERROR"]
    scans.extra[:] = [Device("widget-9")]  # back within bounds: updates resume
    kubelet.wait_devices(WIDGET, lambda v: sorted(v.devices) == [*GOOD, "widget-9"] and v.stream_open)
    assert_no_traceback(caplog)


def test_a_new_resource_over_4_mib_advertises_nothing_until_it_fits(caplog):
    state = ResourceState(WIDGET, "t")
    assert not state.update(uuid_devices(100, replicas=1_000))
    assert state.snapshot.version == 0 and state.snapshot.ids == ()
    assert state.update(uuid_devices(2))
    assert len(state.snapshot.ids) == 2


def exact_list(size: int) -> list[Device]:
    """Devices whose ListAndWatch message is exactly ``size`` bytes (as protobuf counts them)."""
    def message_size(devices: list[Device]) -> int:
        return pb.ListAndWatchResponse(devices=[pb.Device(ID=d.id, health=d.health) for d in devices]).ByteSize()

    entry = message_size([Device("0" * 100)])
    devices = [Device(f"{i:06d}" + "x" * 94) for i in range((size - 600) // entry)]
    rest = size - message_size(devices)  # 600 bytes or a little more
    # One more device whose ID length makes up the rest (entries of a list simply add up).
    for length in range(1, 1_025):
        if message_size([Device("y" * length)]) == rest:
            return [*devices, Device("y" * length)]
    raise AssertionError(f"no ID length makes {rest} bytes")


def test_a_list_is_taken_when_it_fits_even_with_every_device_unhealthy():
    """The limit is exact: the encoded list plus 3 bytes per ID (what turning Unhealthy may add) in 4 MiB."""
    size = KUBELET_LIMIT
    for _ in range(5):  # the room depends on the count, the count on the size
        size = KUBELET_LIMIT - 3 * len(exact_list(size))
    devices = exact_list(size)
    assert size + 3 * len(devices) == KUBELET_LIMIT
    state = ResourceState(WIDGET, "t")
    assert state.update(devices)
    assert len(state.snapshot.message) == size
    assert pb.ListAndWatchResponse.FromString(state.snapshot.message).devices[-1].ID == devices[-1].id
    assert state.mark_unhealthy("scan failed")  # a failed scan's list must go out too
    assert len(state.snapshot.message) <= KUBELET_LIMIT
    version = state.snapshot.version
    one_more = exact_list(size + 1)
    assert len(one_more) == len(devices)
    assert not state.update(one_more)
    assert state.snapshot.version == version


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_replicas_past_the_cap_cost_no_memory(caplog):
    state = ResourceState(WIDGET, "t")
    state.update(uuid_devices(8))
    before = rss_kb()
    assert state.update(uuid_devices(8, replicas=200_000))  # every device left out: the list changed to empty
    growth = rss_kb() - before
    assert growth < 10_000, f"VmRSS grew by {growth} kB"
    assert state.snapshot.ids == ()
    assert "asks for 200000 replicas (an integer 1..100000)" in caplog.text


def test_unchanged_big_list_is_neither_rechecked_nor_relogged(caplog):
    state = ResourceState(WIDGET, "t")
    big = uuid_devices(100, replicas=1_000)
    for _ in range(3):
        assert not state.update(big)
    assert len(lines(caplog, "refused")) == 1


# Item 3: preferred-allocation answers that are no list of IDs ------------------------------------------

NOT_A_LIST_OF_IDS: dict[str, object] = {
    "a dict": {"widget-2": 1, "widget-3": 2},
    "a list of ints": [0, 1],
    "an int": 3,
    "a list of lists": [["widget-0"], ["widget-1"]],
    "a list with None": [None, "widget-0"],
    "bytes": b"widget-2",
    "a set": {"widget-2", "widget-3"},
    "an object": object(),
}


def prefer(stub, available: list[str], size: int) -> list[str]:
    response = stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(available_deviceIDs=available, allocation_size=size)]), timeout=5)
    return list(response.container_responses[0].deviceIDs)


@pytest.mark.parametrize("answer", NOT_A_LIST_OF_IDS.values(), ids=NOT_A_LIST_OF_IDS.keys())
def test_preferred_answer_that_is_no_list_of_ids_falls_back_to_the_hosts_pick(kubelet, multidp_host, caplog,
                                                                              answer):
    class Odd(SampleDriver):
        def preferred_allocation(self, request):  # type: ignore[override]
            return answer

    multidp_host({"sample": SamplePlugin(Odd)})
    kubelet.wait_devices(WIDGET, full_list)
    stub = kubelet.stub(WIDGET)
    available = ["widget-0", "widget-2", "widget-1", "widget-3"]
    for _ in range(5):
        assert prefer(stub, available, 2) == ["widget-0", "widget-1"]  # NUMA node 0, the host's pick
    warned = lines(caplog, f"resource {WIDGET}: driver sample", "preferred")
    assert len(warned) == 1, warned  # once per driver and problem, not per call
    assert_no_traceback(caplog)


# Item 3: Allocate answers with wrong types -------------------------------------------------------------

BAD_ALLOCATIONS: dict[str, object] = {
    "envs with int keys": ContainerAllocation(envs={1: 2}),  # type: ignore[dict-item]
    "envs a list": ContainerAllocation(envs=["A=1"]),  # type: ignore[arg-type]
    "annotations with int values": ContainerAllocation(annotations={"a": 1}),  # type: ignore[dict-item]
    "device node None": ContainerAllocation(device_nodes=[None]),  # type: ignore[list-item]
    "device node path None": ContainerAllocation(device_nodes=[DeviceNode(None, "/dev/null")]),  # type: ignore
    "device node permissions an int": ContainerAllocation(device_nodes=[DeviceNode("/a", "/b", 6)]),  # type: ignore
    "mount None": ContainerAllocation(mounts=[None]),  # type: ignore[list-item]
    "mount read_only a str": ContainerAllocation(mounts=[Mount("/a", "/b", read_only="yes")]),  # type: ignore
    "mounts a dict": ContainerAllocation(mounts={"/a": "/b"}),  # type: ignore[arg-type]
    "cdi devices ints": ContainerAllocation(cdi_devices=[1]),  # type: ignore[list-item]
    "cdi devices a str": ContainerAllocation(cdi_devices="example.com/widget=widget-0"),  # type: ignore
    "cdi annotation key an int": ContainerAllocation(cdi_devices=["example.com/widget=widget-0"],
                                                     cdi_annotation_key=5),  # type: ignore[arg-type]
    "a list of allocations": [ContainerAllocation()],
}


@pytest.mark.parametrize("alloc", BAD_ALLOCATIONS.values(), ids=BAD_ALLOCATIONS.keys())
def test_allocate_answer_with_wrong_types_is_internal_naming_the_driver(kubelet, multidp_host, caplog, alloc):
    class Wrong(SampleDriver):
        broken = True

        def allocate(self, request):  # type: ignore[override]
            return alloc if self.broken else super().allocate(request)

    plugin = SamplePlugin(Wrong)
    multidp_host({"sample": plugin})
    kubelet.wait_devices(WIDGET, full_list)
    stub = kubelet.stub(WIDGET)
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["widget-0"])])
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INTERNAL
        assert f'allocation for "{WIDGET}" failed: driver sample allocate returned' in err.value.details()
    logged = lines(caplog, "driver sample allocate returned")
    assert len(logged) == 1, logged  # once per driver and problem
    assert_no_traceback(caplog)
    plugin.driver.broken = False  # type: ignore[union-attr]
    assert stub.Allocate(request, timeout=5).container_responses[0].envs["WIDGET_DEVICES"] == "widget-0"
    plugin.driver.broken = True  # type: ignore[union-attr]
    with pytest.raises(grpc.RpcError):
        stub.Allocate(request, timeout=5)
    assert len(lines(caplog, "driver sample allocate returned")) == 2  # again, after it was fine


def test_a_well_formed_replicated_device_is_served_as_before(kubelet, multidp_host):
    """A control: a replicated device with two NUMA nodes, its health followed by every replica."""
    scans = Scans([Device("shared", numa_nodes=(0, 1), replicas=3)])
    start(multidp_host, scans)
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 7)
    assert view.devices["shared::2"] == ("Healthy", (0, 1))
    scans.extra[:] = [replace(scans.extra[0], health=Health.UNHEALTHY)]  # type: ignore[arg-type]
    kubelet.wait_devices(WIDGET, lambda v: v.devices.get("shared::0", ("",))[0] == "Unhealthy")
