"""One driver's failure never reaches another driver's resources."""

from __future__ import annotations

import logging
import time

import pytest

from multidp import hookimpl
from multidp.model import Device
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin

WIDGET = "example.com/widget"


def gadget_config(name: str = "example.com/gadget") -> dict:
    return {"resources": {name: {"count": 2}}}


class BrokenCreate(SamplePlugin):
    def __init__(self, fault: str | float) -> None:
        super().__init__()
        self.fault = fault

    @hookimpl  # pluggy reads the marker from the method that runs
    def multidp_create_driver(self, context):
        if self.fault == "raise":
            raise RuntimeError("no hardware handle")
        time.sleep(float(self.fault))
        return super().multidp_create_driver(context)


@pytest.mark.parametrize("fault", ["raise", 2.0])
def test_driver_failing_or_hanging_at_creation_beside_a_healthy_one(kubelet: KubeletStandIn, multidp_host,
                                                                    fault, caplog):
    caplog.set_level(logging.ERROR)
    host = multidp_host({"good": SamplePlugin(), "bad": BrokenCreate(fault)},
                        drivers={"bad": gadget_config()}, timeouts={"create": 0.5})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    assert kubelet.allocate(WIDGET, 1).envs["WIDGET_DEVICES"]
    status = host.statuses["bad"]
    assert status.state == "failed"
    expected = "no hardware handle" if fault == "raise" else "took longer than 0.5 s"
    assert expected in status.reason
    assert "driver bad (registered in-process) failed" in caplog.text
    assert host.statuses["good"].state == "running"


def test_bad_config_fails_that_driver_only_and_names_the_key(kubelet, multidp_host):
    host = multidp_host({"good": SamplePlugin(), "bad": SamplePlugin()},
                        drivers={"bad": {"resources": {"example.com/gadget": {"count": "two"}}}})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    reason = host.statuses["bad"].reason
    assert reason.startswith("bad config: drivers.bad.resources[...].count: Expected `int`, got `str`")


def test_driver_that_raises_on_every_call_beside_a_healthy_one(kubelet, multidp_host):
    bad = SamplePlugin()
    multidp_host({"good": SamplePlugin(), "bad": bad},
                 drivers={"bad": {**gadget_config(), "pollInterval": 0.05}}, timeouts={"allocate": 0.5})
    kubelet.wait_devices("example.com/gadget", lambda v: v.allocatable == 2)
    bad.driver.faults.update(scan="raise", allocate="raise", preferred="raise", cdi="raise")
    kubelet.wait_devices("example.com/gadget", lambda v: v.allocatable == 0, what="bad driver's devices unhealthy")
    for _ in range(3):
        kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
        response = kubelet.allocate(WIDGET, 1)
        kubelet.free(WIDGET)
        assert response.envs["WIDGET_DEVICES"]


def test_two_drivers_claiming_one_resource(kubelet, multidp_host, caplog):
    host = multidp_host({"alpha": SamplePlugin(), "beta": SamplePlugin()},
                        drivers={"alpha": gadget_config(), "beta": {"resources": {
                            "example.com/gadget": {"count": 5}, WIDGET: {"count": 1}}}})
    # alpha, first by name, serves it, whichever of the two scanned first.
    view = kubelet.wait_devices("example.com/gadget", lambda v: v.capacity == 2 and v.endpoint.startswith(
        "multidp-alpha-"), what="served by alpha")
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 1)
    time.sleep(0.3)
    assert view.capacity == 2
    assert host.table.resources_of("beta") == [WIDGET]
    assert "resource 'example.com/gadget' refused: it is already served by driver alpha" in caplog.text \
        or "driver alpha takes it over from driver beta" in caplog.text


def test_invalid_resource_names_and_devices_are_refused_with_a_reason(kubelet, multidp_host, caplog):
    class Sloppy(SampleDriver):
        def scan(self):
            inventory = super().scan()
            inventory["not-a-resource-name"] = [Device("x")]
            inventory[WIDGET] = [*inventory[WIDGET], Device("widget-0"), "junk", Device("y" * 2000)]
            return inventory

    multidp_host({"sample": SamplePlugin(Sloppy)})
    view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    assert sorted(view.devices) == ["widget-0", "widget-1", "widget-2", "widget-3"]
    assert ("resource 'not-a-resource-name' refused: it is not an extended resource name: must contain exactly "
            "one '/'") in caplog.text
    assert "device widget-0 is listed twice" in caplog.text
    assert "is a str, not a multidp Device" in caplog.text
    assert "has an empty or over-long ID (2000 bytes)" in caplog.text


def test_driver_returning_garbage_from_allocate_is_internal(kubelet, multidp_host):
    class Garbage(SampleDriver):
        def allocate(self, request):
            return {"envs": {}}

    multidp_host({"sample": SamplePlugin(Garbage)})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
    from multidp.testing import AllocationFailed

    with pytest.raises(AllocationFailed, match="allocate returned a dict, not a ContainerAllocation"):
        kubelet.allocate(WIDGET, 1)


def test_scan_hanging_marks_only_that_drivers_devices_unhealthy(kubelet, multidp_host):
    slow = SamplePlugin()
    multidp_host({"good": SamplePlugin(), "slow": slow},
                 drivers={"slow": {**gadget_config(), "pollInterval": 0.05}}, timeouts={"scan": 0.2})
    kubelet.wait_devices("example.com/gadget", lambda v: v.allocatable == 2)
    slow.driver.faults["scan"] = 2.0
    kubelet.wait_devices("example.com/gadget", lambda v: v.allocatable == 0 and v.capacity == 2)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    slow.driver.faults.clear()
    kubelet.wait_devices("example.com/gadget", lambda v: v.allocatable == 2, timeout=10, what="recovered")
