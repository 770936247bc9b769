"""What a client can make the host hold: ListAndWatch streams per resource, containers per request.

The kubelet opens one ListAndWatch stream per resource and sends one container
per Allocate. A client that opens hundreds of streams, or sends thousands of
containers, is refused (RESOURCE_EXHAUSTED, INVALID_ARGUMENT) before it costs
threads, memory or driver calls; after a flood the daemon's threads and memory
are back near where they were, measured in /proc like an operator would.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faults_helpers
import grpc
import pytest
from faults_helpers import SHARED, WIDGET, wait_full

from multidp.api import pb, pb_grpc
from multidp.plugins.runner import CALL_WORKERS
from multidp.serving.sockets import socket_name
from multidp.testing import KubeletStandIn, SamplePlugin, wait_until

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures

STREAM_LIMIT = 8  # per resource, the kubelet's own stream included
FLOOD = 200
CONTAINER_LIMIT = 1_024


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} line")


def flood_streams(socket: Path, count: int) -> tuple[int, list[grpc.RpcError]]:
    """Open ``count`` ListAndWatch streams, read each one's first answer, then close them all.

    Returns how many got a device list, and the errors of the others.
    """
    channels = [grpc.insecure_channel(f"unix:{socket}") for _ in range(4)]
    streams = []
    listed, refused = 0, []
    try:
        for n in range(count):
            stream = pb_grpc.DevicePluginStub(channels[n % len(channels)]).ListAndWatch(pb.Empty(), timeout=60)
            streams.append(stream)
            try:
                next(stream)
                listed += 1
            except grpc.RpcError as exc:
                refused.append(exc)
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
    return listed, refused


def settled(pid: int, ceiling: int) -> int:
    """The daemon's thread count once it is at most ``ceiling``, or after a generous wait."""
    try:
        wait_until(lambda: proc_status(pid, "Threads") <= ceiling, 20, "threads to settle", interval=0.1)
    except AssertionError:
        pass  # the caller's assertion reports the figures
    return proc_status(pid, "Threads")


def test_streams_per_resource_are_capped_and_a_flood_leaves_nothing_behind(kubelet: KubeletStandIn, daemons):
    daemon = daemons(kubelet.directory)
    wait_full(kubelet)
    socket = kubelet.directory / socket_name("sample", WIDGET)
    threads_before = proc_status(daemon.pid, "Threads")
    rss_before = proc_status(daemon.pid, "VmRSS")

    listed, refused = flood_streams(socket, FLOOD)
    assert listed == STREAM_LIMIT - 1  # the kubelet holds one
    assert len(refused) == FLOOD - listed
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert refused[0].details() == (f'list for "{WIDGET}" refused: {STREAM_LIMIT} ListAndWatch streams are '
                                    f"open already (at most {STREAM_LIMIT} per resource)")

    # The kubelet's own stream was never disturbed, and the resource still allocates.
    view = kubelet.resources[WIDGET]
    assert view.stream_open and view.allocatable == 4
    assert kubelet.allocate(WIDGET, 1).envs["WIDGET_DEVICES"]

    # gRPC's pool keeps threads it started (idle), so "back" means: no more than the cap's worth.
    threads_after = settled(daemon.pid, threads_before + 2 * STREAM_LIMIT)
    assert threads_after <= threads_before + 2 * STREAM_LIMIT, (threads_before, threads_after)
    rss_after = proc_status(daemon.pid, "VmRSS")
    assert rss_after - rss_before < 8 * 1024, f"VmRSS {rss_before} kB -> {rss_after} kB"

    # A second flood reuses what the first left: no growth beyond a little slack.
    listed, refused = flood_streams(socket, FLOOD)
    assert listed == STREAM_LIMIT - 1
    threads_again = settled(daemon.pid, threads_after + 4)
    assert threads_again <= threads_after + 4, (threads_after, threads_again)
    assert daemon.problems() == []


def test_streams_come_back_once_the_others_close(kubelet: KubeletStandIn, multidp_host, sample: SamplePlugin):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4 and v.stream_open)
    socket = kubelet.directory / socket_name("sample", WIDGET)
    for _ in range(3):  # each flood's streams end, so the next one gets the same room
        listed, refused = flood_streams(socket, 20)
        assert listed == STREAM_LIMIT - 1 and len(refused) == 20 - listed
    sample.hardware.set_health(WIDGET, "widget-1", False)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 3)  # the kubelet's stream still delivers


def allocate(stub, containers: int) -> pb.AllocateResponse:
    return stub.Allocate(pb.AllocateRequest(container_requests=[
        pb.ContainerAllocateRequest(devices_ids=[f"widget-{i % 4}"]) for i in range(containers)]), timeout=30)


def test_allocate_with_too_many_containers_is_refused_before_the_driver(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    stub = kubelet.stub(WIDGET)
    with pytest.raises(grpc.RpcError) as err:
        allocate(stub, 10_000)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (f'invalid allocation request for "{WIDGET}": invalid request: '
                                   f"10000 container requests (at most {CONTAINER_LIMIT})")
    assert sample.driver.calls == []
    assert len(allocate(stub, CONTAINER_LIMIT).container_responses) == CONTAINER_LIMIT


def test_preferred_allocation_with_too_many_containers_is_refused(kubelet, multidp_host, sample):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    request = pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(available_deviceIDs=["widget-0", "widget-1"], allocation_size=1)
        for _ in range(CONTAINER_LIMIT + 1)])
    with pytest.raises(grpc.RpcError) as err:
        kubelet.stub(WIDGET).GetPreferredAllocation(request, timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"{CONTAINER_LIMIT + 1} container requests (at most {CONTAINER_LIMIT})" in err.value.details()


def host_threads() -> int:
    """Threads of the process that are not this test's clients."""
    return sum(1 for thread in threading.enumerate() if not thread.name.startswith("client-"))


def test_a_simultaneous_burst_costs_no_thread_per_call(kubelet):
    # 100 Allocate calls arriving at the same instant, to a driver that hangs (answered
    # DEADLINE_EXCEEDED after 1 s). The servers run on one event loop: the calls wait there, not on
    # a thread each, so the host's threads grow by at most the driver's call workers, and the loop
    # keeps answering the other resource meanwhile.
    from multidp.testing import running_host

    sample = SamplePlugin()
    with running_host(kubelet.directory, {"sample": sample}, timeouts={"allocate": 1}):
        wait_full(kubelet)
        wait_until(lambda: kubelet.resources[WIDGET].stream_open, what="the kubelet's stream")
        baseline = host_threads()
        sample.driver.faults["allocate"] = 5.0
        socket = kubelet.directory / socket_name("sample", WIDGET)
        clients = 100
        go = threading.Barrier(clients + 1)
        codes: list[grpc.StatusCode] = []
        done = threading.Event()
        samples: list[int] = []

        def one_call() -> None:
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                go.wait(10)
                request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["widget-0"])])
                try:
                    pb_grpc.DevicePluginStub(channel).Allocate(request, timeout=20)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

        def sample_threads() -> None:  # during the burst, not after each call returned
            while not done.wait(0.02):
                samples.append(host_threads())

        threads = [threading.Thread(target=one_call, name=f"client-{i}") for i in range(clients)]
        sampler = threading.Thread(target=sample_threads, name="client-sampler")
        for thread in threads:
            thread.start()
        sampler.start()
        go.wait(10)
        # While the calls wait on the hung driver, the loop still answers the other resource.
        answered = kubelet.stub(SHARED).GetDevicePluginOptions(pb.Empty(), timeout=5)
        assert answered is not None
        for thread in threads:
            thread.join(30)
        done.set()
        sampler.join(5)
        assert len(codes) == clients and set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}, set(codes)
        # The hung driver holds at most its call workers; nothing else grew with the calls.
        assert samples and max(samples) <= baseline + CALL_WORKERS, (max(samples), baseline)
        sample.driver.faults.clear()
