"""A CDI spec the host cannot write: the devices whose answers name it are Unhealthy, with the reason.

Over real sockets with the kubelet stand-in: a spec refused or failing from the first scan, a CDI
directory that becomes unwritable, the specs mended (the next scan tries again), and a driver that
declares no ``Device.cdi_devices`` (unchanged: only its CDI allocations are refused).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_cli import env_with, run

from multidp.api import pb
from multidp.model import CDISpec, Device, DeviceNode, Health
from multidp.serving.cdi import CDIRegistry
from multidp.serving.devicecheck import left_out
from multidp.serving.resource import ResourceState
from multidp.testing import SampleDriver, SamplePlugin, fake_distribution, wait_until

WIDGET = "example.com/widget"
SHARED = "example.com/widget-shared"
KIND = "example.com/widget"
FAST = {"sample": {"pollInterval": 0.05}}


class BrokenSpecs(SampleDriver):
    """The sample driver, its CDI specs broken as ``fault`` says until a test sets it to None."""

    fault: str | None = None

    def cdi_specs(self) -> Any:
        specs = list(super().cdi_specs())
        if self.fault == "relative path":
            return [replace(s, devices=[replace(d, device_nodes=[DeviceNode(n.container_path, n.host_path[1:])
                                                                 for n in d.device_nodes]) for d in s.devices])
                    for s in specs]
        if self.fault == "bad kind":
            return [replace(s, kind="Example.com/widget") for s in specs]
        if self.fault == "raise":
            raise RuntimeError("the widget libraries are not installed")
        if self.fault == "number":
            return 7
        return specs


def broken(fault: str) -> type[BrokenSpecs]:
    return type(f"Broken_{fault.replace(' ', '_')}", (BrokenSpecs,), {"fault": fault})


def allocate(kubelet: Any, resource: str, device_id: str) -> pb.AllocateResponse:
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device_id])])
    response: pb.AllocateResponse = kubelet.stub(resource).Allocate(request, timeout=10)
    return response


def reason_of(host: Any, resource: str, device_id: str) -> str:
    return str(host.table.endpoints[resource].snapshot.by_id[device_id].reason)


@pytest.mark.parametrize(("fault", "why"), [
    ("relative path", "CDI spec of kind 'example.com/widget' refused: device 'widget-0': "
                      "device_nodes[0].host_path 'dev/null' is not an absolute path"),
    ("bad kind", "CDI spec of kind 'Example.com/widget' refused: kind 'Example.com/widget' is not vendor/class"),
    ("raise", "CDI specs failed: RuntimeError: the widget libraries are not installed"),
    ("number", "cdi_specs() returned an object of type 'int', not a list of CDISpec"),
])
def test_a_spec_failing_from_the_first_scan_keeps_its_devices_unhealthy_until_mended(
        kubelet: Any, multidp_host: Any, caplog: pytest.LogCaptureFixture, fault: str, why: str) -> None:
    caplog.set_level(logging.INFO)
    plugin = SamplePlugin(broken(fault))
    host = multidp_host({"sample": plugin}, drivers=FAST)
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    # The first list the endpoint made (version 1) already said so: no pod was sent to a widget in between.
    assert (view.allocatable, view.updates, host.table.endpoints[WIDGET].snapshot.version) == (0, 1, 1)
    assert kubelet.wait_devices(SHARED, lambda v: v.capacity == 4).allocatable == 4  # names no CDI device
    reason = reason_of(host, WIDGET, "widget-2")
    assert reason.startswith(f"needs CDI device {KIND}=widget-2, but driver sample: "), reason
    assert why in reason
    # Logged once the streams were woken: the kubelet does not wait for the log.
    wait_until(lambda: f"device widget-2 is Unhealthy: needs CDI device {KIND}=widget-2" in caplog.text,
               what="the log line")
    err = pytest.raises(grpc.RpcError, allocate, kubelet, WIDGET, "widget-2").value
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and why in err.details()

    assert plugin.driver is not None
    plugin.driver.fault = None  # mended: the next scan tries the specs again
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, what="the widgets Healthy again")
    assert reason_of(host, WIDGET, "widget-2") == ""
    wait_until(lambda: "device widget-2 is Healthy again" in caplog.text, what="the log line")
    answer = allocate(kubelet, WIDGET, "widget-2").container_responses[0]
    assert [d.name for d in answer.cdi_devices] == [f"{KIND}=widget-2"]
    written = json.loads(host.cdi.file_for("sample", KIND).read_text())
    assert [d["name"] for d in written["devices"]] == [f"widget-{i}" for i in range(4)]


def test_a_cdi_directory_unwritable_later_marks_the_devices_then_recovers(kubelet, multidp_host, sample):
    host = multidp_host({"sample": sample}, drivers=FAST)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    cdi_dir: Path = host.cdi.directory
    wait_until(lambda: host.cdi.file_for("sample", KIND).exists(), what="the first CDI spec")
    shutil.rmtree(cdi_dir)
    cdi_dir.write_text("a file where the CDI directory was\n")
    sample.hardware.set_health(WIDGET, "widget-1", False, "overheated")
    sample.hardware.add(WIDGET, Device("widget-4", numa_nodes=(0,)))  # the spec must be written again
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 5 and v.allocatable == 0, what="every widget marked")
    assert set(view.devices) == {f"widget-{i}" for i in range(5)}
    assert f"but cannot write CDI spec to {cdi_dir}: " in reason_of(host, WIDGET, "widget-4")
    assert reason_of(host, WIDGET, "widget-1").startswith(f"overheated; needs CDI device {KIND}=widget-1, but ")
    assert kubelet.wait_devices(SHARED, lambda v: v.capacity == 4).allocatable == 4
    err = pytest.raises(grpc.RpcError, allocate, kubelet, WIDGET, "widget-0").value
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION

    cdi_dir.unlink()  # writable again: a scan writes the specs, and the widgets are back
    view = kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, what="the widgets back")
    assert view.devices["widget-1"][0] == "Unhealthy" and reason_of(host, WIDGET, "widget-1") == "overheated"
    written = json.loads(host.cdi.file_for("sample", KIND).read_text())
    assert "widget-4" in [d["name"] for d in written["devices"]]


def test_a_driver_that_declares_no_cdi_devices_keeps_them_healthy(kubelet, multidp_host):
    class Undeclared(broken("relative path")):
        def scan(self) -> Any:  # as a driver written for driver API 1.1 scans
            return {r: [replace(d, cdi_devices=()) for d in ds] for r, ds in super().scan().items()}

    host = multidp_host({"sample": SamplePlugin(Undeclared)}, drivers=FAST)
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    assert view.allocatable == 4 and reason_of(host, WIDGET, "widget-0") == ""
    err = pytest.raises(grpc.RpcError, allocate, kubelet, WIDGET, "widget-0").value
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and "is not an absolute path" in err.details()


PLUGIN = '''
from multidp import CDIDeviceSpec, CDISpec, Device, DeviceNode, Driver, hookimpl

class Widgets(Driver):
    def scan(self):
        return {"example.com/widget": [Device("w0", cdi_devices=("example.com/widget=w0",)), Device("w1")]}

    def cdi_specs(self):
        return [CDISpec("example.com/widget", [CDIDeviceSpec("w0", [DeviceNode("/dev/w0", "HOST_PATH")])])]

@hookimpl
def multidp_create_driver(context):
    return Widgets()
'''


@pytest.mark.parametrize(("host_path", "cdi_dir_is_a_file", "why"), [
    ("dev/w0", False, "driver widgets: CDI spec of kind 'example.com/widget' refused: device 'w0': "
                      "device_nodes[0].host_path 'dev/w0' is not an absolute path"),
    ("/dev/w0", True, "cannot write CDI spec to {cdi}: {cdi} is not a directory"),
])
def test_multidp_devices_shows_the_marks_the_daemon_would_make(tmp_path, host_path, cdi_dir_is_a_file, why):
    fake_distribution(tmp_path, "multidp-widgets", {"widgets": "widgets_plugin"})
    (tmp_path / "widgets_plugin.py").write_text(PLUGIN.replace("HOST_PATH", host_path))
    cdi = tmp_path / "cdi"
    if cdi_dir_is_a_file:
        cdi.write_text("")
    result = run(["devices", "--json", "--drivers", "widgets"], env_with(tmp_path, MULTIDP_CDI_DIR=str(cdi)))
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["drivers"]
    w0, w1 = entry["resources"][WIDGET]
    assert (w0["health"], w0["reason"]) == ("Unhealthy", f"needs CDI device {WIDGET}=w0, but {why.format(cdi=cdi)}")
    assert (w1["health"], w1["reason"]) == ("Healthy", "")  # names no CDI device
    assert cdi.is_file() if cdi_dir_is_a_file else not cdi.exists()  # nothing written by a look


# The parts, without sockets ---------------------------------------------------------------------

def widgets() -> list[Device]:
    return [Device("w0", cdi_devices=(f"{KIND}=w0",)), Device("w1", Health.UNHEALTHY, reason="hot",
                                                                  cdi_devices=(f"{KIND}=w1",)), Device("plain")]


def test_marks_come_and_go_without_touching_what_the_driver_said() -> None:
    state = ResourceState(WIDGET, "sample")
    state.update(widgets())
    assert state.use_cdi_problem("the spec is refused")
    by_id = state.snapshot.by_id
    assert [by_id[i].health for i in ("w0", "w1", "plain")] == [Health.UNHEALTHY, Health.UNHEALTHY, Health.HEALTHY]
    assert by_id["w0"].reason == f"needs CDI device {KIND}=w0, but the spec is refused"
    assert by_id["w1"].reason == f"hot; needs CDI device {KIND}=w1, but the spec is refused"
    assert not state.use_cdi_problem("the spec is refused")  # the same problem: nothing to tell
    assert state.update(widgets()) is False  # a scan with the same devices: still marked, nothing new
    assert state.use_cdi_problem(None)
    assert list(state.snapshot.devices) == widgets()


def test_a_failed_scans_marks_outlive_a_cdi_change() -> None:
    state = ResourceState(WIDGET, "sample")
    state.update(widgets())
    state.mark_unhealthy("scan hung")
    state.use_cdi_problem("cannot write")
    state.use_cdi_problem(None)
    assert {d.id: (d.health, d.reason) for d in state.snapshot.devices} == {
        i: (Health.UNHEALTHY, "scan hung") for i in ("w0", "w1", "plain")}


def test_a_shared_pools_reason_names_a_few_of_its_cdi_devices() -> None:
    names = tuple(f"{KIND}=m{i}" for i in range(5))
    state = ResourceState("example.com/pool", "sample")
    state.update([Device(str(n), cdi_devices=names) for n in range(3)])
    state.use_cdi_problem("cannot write")
    reasons = {d.reason for d in state.snapshot.devices}
    assert reasons == {f"needs CDI devices {KIND}=m0, {KIND}=m1, {KIND}=m2 and 2 more, but cannot write"}


def test_cdi_devices_that_are_not_a_tuple_leave_the_device_out_saying_so() -> None:
    bad = Device("w0", cdi_devices=[f"{KIND}=w0"])  # type: ignore[arg-type]
    [(device, problem)], whole = left_out([bad, Device("w1")])
    assert device is bad and problem == f"has cdi_devices ['{KIND}=w0'], not a tuple of CDI names"
    assert whole is None


def test_the_registry_tells_its_listeners_of_each_change(tmp_path: Path) -> None:
    registry = CDIRegistry(tmp_path / "cdi")
    heard: list[tuple[str, str | None]] = []
    registry.subscribe(lambda driver: heard.append((driver, registry.error(driver))))
    good = [CDISpec(KIND, [])]
    registry.publish("t", good)
    registry.fail("t", "cannot write")
    registry.fail("t", "cannot write")
    registry.publish("t", [CDISpec("Bad Kind", [])])
    registry.publish("t", good)
    registry.publish("t", good)
    registry.fail("t", "cannot write")
    registry.publish("t", [])  # no specs any more: nothing left to fail
    assert [(d, e and e.split(":")[0]) for d, e in heard] == [
        ("t", "cannot write"), ("t", "driver t"), ("t", None), ("t", "cannot write"), ("t", None)]
