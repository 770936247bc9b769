"""A driver that raises SystemExit or KeyboardInterrupt is a failing driver, like one that raises
anything else: the call is answered, scanning goes on, creation reports it failed.

Driver code raises them on the driver's own threads; the host's own signals never arrive there
(``multidp run`` takes them with sigwait in the main thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import faults_helpers
import grpc
import pytest
from faults_helpers import START_S, STOP_S, WIDGET

from multidp import hookimpl
from multidp.api import pb
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin, fake_distribution

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures

GADGET = "example.com/gadget"
BASE_EXCEPTIONS = {"exit": "SystemExit", "interrupt": "KeyboardInterrupt"}
QUITTER_MODULES = {  # a driver module that calls sys.exit(5) when imported, or in its create hook
    "import": "import sys\nsys.exit(5)\n",
    "create": "import sys\nfrom multidp import hookimpl\n\n@hookimpl\ndef multidp_create_driver(context):\n"
              "    sys.exit(5)\n",
}
QUITTER_REASONS = {"import": "cannot load: SystemExit: 5", "create": "SystemExit: 5"}


class QuitsAt(SamplePlugin):
    """The sample plugin, raising SystemExit or KeyboardInterrupt in one of its hooks."""

    def __init__(self, hook: str, fault: str) -> None:
        super().__init__()
        self.hook, self.fault = hook, fault

    def _maybe(self, hook: str) -> None:
        if hook == self.hook:
            raise SystemExit(5) if self.fault == "exit" else KeyboardInterrupt()

    @hookimpl
    def multidp_config_type(self) -> type:
        self._maybe("config_type")
        return super().multidp_config_type()

    @hookimpl
    def multidp_create_driver(self, context):
        self._maybe("create")
        return super().multidp_create_driver(context)


def allocate(kubelet: KubeletStandIn, resource: str, ids: list[str]) -> pb.AllocateResponse:
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])
    return kubelet.stub(resource).Allocate(request, timeout=10)  # the kubelet sets none: we need one here


@pytest.mark.parametrize("fault", sorted(BASE_EXCEPTIONS))
def test_allocate_raising_system_exit_or_keyboard_interrupt_is_answered_internal(kubelet, multidp_host, sample,
                                                                                fault):
    multidp_host({"sample": sample})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    threads_before = threading.active_count()
    sample.driver.faults["allocate"] = fault
    for _ in range(6):  # more than the driver's 4 call workers: none of them is lost
        with pytest.raises(grpc.RpcError) as err:
            allocate(kubelet, WIDGET, ["widget-0"])
        assert err.value.code() is grpc.StatusCode.INTERNAL, err.value.details()
        assert f"driver sample: allocate failed: {BASE_EXCEPTIONS[fault]}" in err.value.details()
    sample.driver.faults.clear()
    assert allocate(kubelet, WIDGET, ["widget-1"]).container_responses[0].envs["WIDGET_DEVICES"] == "widget-1"
    assert threading.active_count() <= threads_before + 4  # at most the call pool growing to its 4 workers


@pytest.mark.parametrize("fault", sorted(BASE_EXCEPTIONS))
def test_preferred_allocation_raising_system_exit_falls_back_to_the_numa_pick(kubelet, multidp_host, fault):
    class Picky(SampleDriver):
        def preferred_allocation(self, request):
            self._misbehave("preferred")
            return ["widget-3"]

    plugin = SamplePlugin(Picky)
    multidp_host({"sample": plugin})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    plugin.driver.faults["preferred"] = fault
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=["widget-2", "widget-0", "widget-3", "widget-1"], must_include_deviceIDs=["widget-0"],
        allocation_size=2)])
    answer = kubelet.stub(WIDGET).GetPreferredAllocation(request, timeout=10)
    assert list(answer.container_responses[0].deviceIDs) == ["widget-0", "widget-1"]  # by NUMA node


@pytest.mark.parametrize("fault", sorted(BASE_EXCEPTIONS))
def test_scan_raising_system_exit_marks_devices_unhealthy_and_polling_goes_on(kubelet, multidp_host, fault):
    bad = SamplePlugin()
    host = multidp_host({"good": SamplePlugin(), "bad": bad},
                        drivers={"bad": {"resources": {GADGET: {"count": 2}}, "pollInterval": 0.05}})
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2)
    bad.driver.faults["scan"] = fault
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 0 and v.capacity == 2, START_S,
                         "the bad driver's devices Unhealthy")
    runner = host.runners["bad"]
    assert f"driver bad: scan failed: {BASE_EXCEPTIONS[fault]}" in runner.last_error
    failures = runner.scan_failures
    kubelet.wait_for(lambda: runner.scan_failures >= failures + 3, START_S, "scans go on failing, still polled")
    bad.driver.faults.clear()
    kubelet.wait_devices(GADGET, lambda v: v.allocatable == 2, START_S, "healthy again: the poll thread lives")
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)  # the other driver never noticed


@pytest.mark.parametrize("hook", ["create", "config_type"])
@pytest.mark.parametrize("fault", sorted(BASE_EXCEPTIONS))
def test_hook_raising_system_exit_fails_that_driver_only(kubelet, multidp_host, hook, fault):
    host = multidp_host({"good": SamplePlugin(), "bad": QuitsAt(hook, fault)},
                        drivers={"bad": {"resources": {GADGET: {"count": 2}}}})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    status = host.statuses.get("bad")
    assert status is not None and status.state == "failed", status
    assert status.reason.startswith(BASE_EXCEPTIONS[fault]), status.reason
    assert [s.name for s in host.failed_drivers] == ["bad"]
    assert host.statuses["good"].state == "running"


# The real command --------------------------------------------------------------------------------------------

def quitter_site(site_dir, where: str):
    fake_distribution(site_dir, "multidp-quitter", {"quitter": "quitter_driver_module"})
    (site_dir / "quitter_driver_module.py").write_text(QUITTER_MODULES[where])
    return site_dir


def run_multidp(site_dir, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "multidp", *args], env=env, capture_output=True, text=True,
                          timeout=START_S * 2)


@pytest.mark.parametrize("where", ["import", "create"])
def test_multidp_devices_reports_a_driver_that_exits_as_failed(site, where):
    quitter_site(site, where)
    table = run_multidp(site, "devices", "--drivers", "quitter,sample")
    assert table.returncode == 1, table.stderr  # a driver failed: the node is not as it should be
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "failed" in rows["quitter"] and QUITTER_REASONS[where] in rows["quitter"], table.stdout
    assert "widget-0" in table.stdout  # the other driver's devices are listed
    as_json = run_multidp(site, "devices", "--json", "--drivers", "quitter,sample")
    assert as_json.returncode == 1, as_json.stderr
    entries = {e["driver"]: e for e in json.loads(as_json.stdout)["drivers"]}
    assert entries["quitter"]["state"] == "failed" and entries["quitter"]["reason"] == QUITTER_REASONS[where]
    assert entries["sample"]["state"] == "ok"


def test_multidp_drivers_and_config_commands_report_a_driver_that_exits_at_import(site):
    quitter_site(site, "import")
    listed = run_multidp(site, "drivers", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)["drivers"]}
    assert entries["quitter"]["status"] == "failed" and entries["quitter"]["reason"] == "cannot load: SystemExit: 5"
    assert entries["sample"]["status"] == "ok"
    check = run_multidp(site, "config", "check")
    assert check.returncode == 2 and "multidp: driver quitter: cannot load: SystemExit: 5" in check.stderr
    schema = run_multidp(site, "config", "schema")
    assert schema.returncode == 0, schema.stderr
    assert "sample" in json.loads(schema.stdout)["$defs"]["FileConfig"]["properties"]["drivers"]["properties"]
    assert "multidp: driver quitter left out of the schema: cannot load: SystemExit: 5" in schema.stderr


@pytest.mark.parametrize("where", ["import", "create"])
def test_strict_run_exits_1_when_a_driver_exits(kubelet, site, daemons, where):
    quitter_site(site, where)
    daemon = daemons(kubelet.directory, "--drivers", "sample,quitter", "--strict")
    assert daemon.proc is not None
    try:
        code = daemon.proc.wait(timeout=START_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"--strict did not exit; log:\n{daemon.log[-3000:]}") from None
    assert code == 1, daemon.log
    daemon.wait_log(f"driver quitter (multidp-quitter 1.0) failed: {QUITTER_REASONS[where]}", STOP_S)
    daemon.wait_log("--strict: driver(s) failed at start: quitter", STOP_S)
    assert "Traceback" not in daemon.log
