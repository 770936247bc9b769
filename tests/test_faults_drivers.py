"""Faults inside the host process: drivers that hang or raise, resources that come and go (docs/security.md).

What test_isolation.py and test_e2e_errors.py leave out: many calls hung at once
(three times the driver's call workers), every RPC of the broken resource answered
by the contract while it is broken, the healthy driver answering meanwhile, and
both coming back once the driver does. And two races of the endpoints, each
forced at one point so that its test is deterministic.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from multidp.api import pb
from multidp.testing import SampleDriver, SamplePlugin, wait_until

WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
BOUND_S = 30.0  # every wait: generous, never a speed


class Stuck(SampleDriver):
    """Blocks in every kubelet-driven call named in ``stuck`` until ``release`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stuck: set[str] = set()
        self.release = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def _block(self, call: str) -> None:
        if call in self.stuck:
            with self._lock:
                self.inside += 1
            self.release.wait(BOUND_S)

    def allocate(self, request):
        self._block("allocate")
        return super().allocate(request)

    def preferred_allocation(self, request):
        self._block("preferred")
        self._misbehave("preferred")
        return list(reversed(request.available))[: request.size]

    def pre_start(self, resource, device_ids):
        self._block("pre_start")
        super().pre_start(resource, device_ids)


@pytest.fixture
def pair(kubelet, multidp_host):
    """A healthy driver (widgets) and a ``Stuck`` one (two gadgets, with a pre-start step)."""
    bad = SamplePlugin(Stuck)
    multidp_host({"good": SamplePlugin(), "bad": bad},
                 drivers={"bad": {"resources": {GADGET: {"count": 2}}, "pollInterval": 0.05, "preStart": True}},
                 timeouts={"allocate": 1, "preStart": 1, "preferredAllocation": 0.3, "scan": 1})
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, BOUND_S)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, BOUND_S)
    return bad


def allocate_code(stub, ids: list[str]) -> tuple[str, str]:
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])
    try:
        stub.Allocate(request, timeout=BOUND_S)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", ""


def pre_start_code(stub, ids: list[str]) -> tuple[str, str]:
    try:
        stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids), timeout=BOUND_S)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", ""


def prefer(stub, available: list[str], size: int) -> list[str]:
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, allocation_size=size)])
    return list(stub.GetPreferredAllocation(request, timeout=BOUND_S).container_responses[0].deviceIDs)


def good_driver_answers(kubelet) -> None:
    for _ in range(3):
        assert kubelet.allocate(WIDGET, 2).envs["WIDGET_DEVICES"]
        kubelet.free(WIDGET)


def test_many_hung_calls_cost_only_the_hung_drivers_resource(kubelet, pair):
    bad: Stuck = pair.driver
    bad.stuck |= {"allocate", "pre_start", "preferred"}
    gadgets = kubelet.stub(GADGET)
    # Twelve Allocate calls at once: three times the driver's 4 call workers.
    with ThreadPoolExecutor(12) as pool:
        hung = [pool.submit(allocate_code, gadgets, [f"gadget-{i % 2}"]) for i in range(12)]
        wait_until(lambda: bad.inside >= 4, BOUND_S, "every call worker of the driver stuck")
        good_driver_answers(kubelet)  # while the other driver's workers are all stuck
        # The stuck resource's own stream still carries a health change (scans run on their own thread).
        pair.hardware.set_health(GADGET, "gadget-1", False, "fan failure")
        kubelet.wait_devices(GADGET, lambda v: v.devices["gadget-1"][0] == "Unhealthy", BOUND_S)
        answers = [future.result(timeout=BOUND_S) for future in hung]
    assert {code for code, _ in answers} == {"DEADLINE_EXCEEDED"}
    assert all("driver bad: allocate did not answer within 1 s" in details for _, details in answers)
    # Preferred allocation falls back to the host's pick, by NUMA node: never an error the kubelet fails pods on.
    assert prefer(gadgets, ["gadget-0", "gadget-1"], 1) in (["gadget-0"], ["gadget-1"])
    code, details = pre_start_code(gadgets, ["gadget-0"])
    assert code == "DEADLINE_EXCEEDED" and "pre-start did not answer within 1 s" in details
    good_driver_answers(kubelet)
    # The driver answers again: so does its resource.
    bad.release.set()
    pair.hardware.set_health(GADGET, "gadget-1", True)
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, BOUND_S, "gadget-1 Healthy again")
    wait_until(lambda: allocate_code(gadgets, ["gadget-0"]) == ("OK", ""), BOUND_S, "Allocate answering again")
    assert prefer(gadgets, ["gadget-0", "gadget-1"], 1) == ["gadget-1"]  # the driver's own preference again
    assert pre_start_code(gadgets, ["gadget-1"]) == ("OK", "")
    assert kubelet.errors == []


def test_driver_raising_in_every_call_is_answered_by_the_contract(kubelet, pair, caplog):
    caplog.set_level(logging.INFO)
    bad: Stuck = pair.driver
    bad.faults.update(scan="raise", allocate="raise", preferred="raise", pre_start="raise", cdi="raise")
    gadgets = kubelet.stub(GADGET)
    # Scans fail: the known IDs stay, every one Unhealthy (the host cannot vouch for them), the log says why.
    view = kubelet.wait_devices(GADGET, lambda v: v.allocatable == 0, BOUND_S, "gadgets Unhealthy")
    assert sorted(view.devices) == ["gadget-0", "gadget-1"]
    wait_until(lambda: "driver bad: scan failed: RuntimeError: sample driver told to fail in scan" in caplog.text,
               BOUND_S, "the scan failure logged")
    code, details = allocate_code(gadgets, ["gadget-0"])
    assert code == "INTERNAL"
    assert details == (f'allocation for "{GADGET}" failed: driver bad: allocate failed: RuntimeError: '
                       "sample driver told to fail in allocate")
    assert allocate_code(gadgets, ["gadget-9"])[0] == "INVALID_ARGUMENT"  # the contract comes first
    assert prefer(gadgets, ["gadget-1", "gadget-0"], 1) in (["gadget-0"], ["gadget-1"])  # NUMA fallback
    code, details = pre_start_code(gadgets, ["gadget-0"])
    assert code == "INTERNAL" and "driver bad: pre-start failed: RuntimeError" in details
    good_driver_answers(kubelet)
    # It stops raising: Healthy again, and its calls answer.
    bad.faults.clear()
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, BOUND_S, "gadgets Healthy again")
    wait_until(lambda: "driver bad: scanning works again" in caplog.text, BOUND_S, "the recovery logged")
    assert allocate_code(gadgets, ["gadget-0", "gadget-1"]) == ("OK", "")
    assert kubelet.errors == []


def test_a_failed_scan_is_logged_naming_the_driver_once(kubelet, pair, caplog):
    pair.driver.faults["scan"] = "raise"
    wait_until(lambda: "scan failed" in caplog.text, BOUND_S, "the scan failure logged")
    assert "driver bad: driver bad:" not in caplog.text


def test_a_resource_gone_and_back_at_once_while_registering(socket_dir):
    from multidp.model import Device
    from multidp.testing import KubeletStandIn, running_host

    shared = "example.com/widget-shared"
    kubelet = KubeletStandIn(socket_dir).start()
    sample = SamplePlugin()
    try:
        with running_host(socket_dir, {"sample": sample}, drivers={"sample": {"pollInterval": 0.05}}):
            kubelet.wait_devices(shared, lambda v: v.allocatable == 4, BOUND_S)
            kubelet.register_delay = 1.0  # a slow kubelet: every endpoint is inside Register for a second
            kubelet.restart()
            wait_until(lambda: len(kubelet.restarts) == 2, BOUND_S, "the restart")
            threading.Event().wait(0.2)
            sample.hardware.remove(shared)  # withdrawn ...
            threading.Event().wait(0.1)
            sample.hardware.add(shared, Device("widget-shared-0"))  # ... and back at the next scans
            kubelet.wait_devices(shared, lambda v: v.allocatable == 4 and v.stream_open, BOUND_S, "served again")
            assert kubelet.errors == []  # the kubelet never dialled a socket that was not there
    finally:
        kubelet.shutdown()


def test_one_register_per_kubelet_when_the_deletion_event_comes_late(socket_dir, monkeypatch):
    """Forces one interleaving the 100-restart test meets now and then: the watcher handles the
    deletion of our old socket only once the endpoint, woken by the new kubelet.sock, is serving again."""
    import os

    from multidp.serving.endpoint import Endpoint
    from multidp.testing import KubeletStandIn, running_host

    resources = (WIDGET, "example.com/widget-shared")
    kubelet = KubeletStandIn(socket_dir).start()
    try:
        with running_host(socket_dir, {"sample": SamplePlugin()}) as host:
            for resource in resources:
                kubelet.wait_devices(resource, lambda v: v.allocatable == 4, BOUND_S)
            real_replace, real_socket_deleted = os.replace, Endpoint.socket_deleted
            held: set[Endpoint] = set()
            delivered: set[Endpoint] = set()

            def socket_deleted_late(endpoint: Endpoint) -> None:
                if endpoint in delivered:
                    real_socket_deleted(endpoint)
                else:
                    held.add(endpoint)  # the event is still on its way

            def replace(src, dst, *args, **kwargs):
                endpoint = host.table.endpoint_at(Path(dst).absolute())
                if endpoint in held:  # ... and arrives now, just before the new socket is in place
                    held.discard(endpoint)
                    delivered.add(endpoint)
                    # On the watcher's side, as in life (a fix may well make it wait for the serve to end).
                    watcher = threading.Thread(target=real_socket_deleted, args=(endpoint,), name="late-event")
                    watcher.start()
                    watcher.join(0.5)
                return real_replace(src, dst, *args, **kwargs)

            monkeypatch.setattr(Endpoint, "socket_deleted", socket_deleted_late)
            monkeypatch.setattr(os, "replace", replace)
            kubelet.restart()
            for resource in resources:
                kubelet.wait_registered(resource, count=2, timeout=BOUND_S)
                kubelet.wait_devices(resource, lambda v: v.allocatable == 4 and v.stream_open, BOUND_S)
            threading.Event().wait(1.0)  # room for a second Register, if one is coming
            monkeypatch.undo()
            assert len(delivered) == 2  # the interleaving happened for both endpoints
            assert [sum(r.resource == res for r in kubelet.registrations) for res in resources] == [2, 2]
    finally:
        kubelet.shutdown()
