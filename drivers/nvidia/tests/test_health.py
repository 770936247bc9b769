"""Health from NVML events: XIDs, ECC, scopes, the ignore list, NVIDIA's variables, recovery."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from multidp_nvidia import machines
from multidp_nvidia.fake_nvml import WHOLE, FakeNvml
from multidp_nvidia.health import HealthMonitor
from multidp_nvidia.settings import Settings

from .conftest import poll_until

GPU = "nvidia.com/gpu"


def test_critical_xid_marks_only_that_gpu_unhealthy(nvidia_node: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.nvlink8())
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(2, 79)
    node.wait_health(GPU, ids[2], "Unhealthy")
    devices = node.devices(GPU)
    assert [h for h, _ in devices.values()].count("Unhealthy") == 1
    assert "XID 79 on GPU " + ids[2] in caplog.text


def test_ignored_xids_change_nothing(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8())
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    for xid in (13, 31, 43, 45, 68, 109):
        node.fake.raise_xid(0, xid)
    node.fake.raise_xid(1, 48)  # a critical one afterwards: once it shows, the ignored ones were handled
    node.wait_health(GPU, ids[1], "Unhealthy")
    assert node.devices(GPU)[ids[0]][0] == "Healthy"


def test_ignore_list_from_the_config_file(nvidia_node: Any, tmp_path: Any) -> None:
    path = tmp_path / "nvidia.yaml"
    path.write_text("version: v1\nhealth:\n  ignoredXids: [79]\n")
    node = nvidia_node(machines.nvlink8(), {"configFile": str(path)})
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(0, 79)
    node.fake.raise_xid(1, 13)  # no longer ignored: the configured list replaces the default
    node.wait_health(GPU, ids[1], "Unhealthy")
    assert node.devices(GPU)[ids[0]][0] == "Healthy"


def test_dp_disable_healthchecks_all_turns_events_off(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), environ={"DP_DISABLE_HEALTHCHECKS": "all"})
    node.devices(GPU, 8)
    assert node.driver._monitor is None
    assert node.fake.raise_xid(0, 79) == 0  # nobody registered for it


def test_dp_enable_healthchecks_takes_xids_off_the_ignore_list(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), environ={"DP_ENABLE_HEALTHCHECKS": "13"})
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(3, 13)
    node.wait_health(GPU, ids[3], "Unhealthy")


def test_double_bit_ecc_is_unhealthy_single_bit_is_not(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8())
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_ecc(0, double_bit=False)
    node.fake.raise_ecc(1, double_bit=True)
    node.wait_health(GPU, ids[1], "Unhealthy")
    assert node.devices(GPU)[ids[0]][0] == "Healthy"


def test_gpu_wide_event_marks_every_replica(nvidia_node: Any) -> None:
    config = {"sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 3}]}}}
    node = nvidia_node(machines.nvlink8(), config)
    ids = list(node.devices(GPU, 24))
    assert node.fake.wait_registered()
    node.fake.raise_xid(0, 79)
    node.kubelet.wait_devices(GPU, lambda v: sum(h == "Unhealthy" for h, _ in v.devices.values()) == 3)
    unhealthy = [i for i, (h, _) in node.devices(GPU).items() if h == "Unhealthy"]
    assert unhealthy == [f"{ids[0].split('::')[0]}::{n}" for n in range(3)]


def test_mig_scoped_event_marks_that_mig_device_only(nvidia_node: Any) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed"})
    small = list(node.devices("nvidia.com/mig-1g.10gb", 2))  # GPU 0, GPU instances 9 and 10
    assert node.fake.wait_registered()
    node.fake.raise_xid(0, 94, gi=9, ci=0)
    node.wait_health("nvidia.com/mig-1g.10gb", small[0], "Unhealthy")
    assert node.devices("nvidia.com/mig-1g.10gb")[small[1]][0] == "Healthy"
    assert list(node.devices("nvidia.com/mig-3g.40gb").values())[0][0] == "Healthy"


def test_gpu_wide_event_marks_every_mig_device_of_that_gpu(nvidia_node: Any) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed"})
    node.devices("nvidia.com/mig-1g.10gb", 2)
    assert node.fake.wait_registered()
    node.fake.raise_xid(0, 79)
    for resource in ("nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb"):
        node.kubelet.wait_devices(resource, lambda v: all(h == "Unhealthy" for h, _ in v.devices.values()))
    assert list(node.devices("nvidia.com/mig-4g.40gb").values())[0][0] == "Healthy"  # GPU 1
    assert list(node.devices(GPU).values())[0][0] == "Healthy"  # GPU 2, no MIG


def test_gpu_failing_mid_run_becomes_unhealthy(nvidia_node: Any) -> None:
    node = nvidia_node(machines.with_scheduled_xid(machines.nvlink8(), after_s=0.3, gpu=5, xid=79))
    ids = list(node.devices(GPU, 8))
    node.wait_health(GPU, ids[5], "Unhealthy")


def test_recovery_after_quiet_time_with_nvml_answering(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), {"health": {"recoverAfter": 0.3}, "pollInterval": 0.2})
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(4, 79, lost=True)
    node.wait_health(GPU, ids[4], "Unhealthy")
    node.fake.raise_xid(0, 48)  # GPU 0 answers NVML: it comes back after the quiet time
    node.wait_health(GPU, ids[0], "Unhealthy")
    node.wait_health(GPU, ids[0], "Healthy")
    assert node.devices(GPU)[ids[4]][0] == "Unhealthy"  # still lost: NVML does not answer for it
    node.fake.machine.gpus[4].lost = False
    node.wait_health(GPU, ids[4], "Healthy")


def test_pending_row_remapping_blocks_recovery(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    machine.gpus[2].remapped_rows = (0, 1, 1, 0)
    node = nvidia_node(machine, {"health": {"recoverAfter": 0.2}, "pollInterval": 0.1})
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(2, 48)
    node.wait_health(GPU, ids[2], "Unhealthy")
    poll_until(lambda: "row remapping pending" in node.driver._monitor.problem(ids[2]), 10,
               "the reason to say row remapping is pending")
    node.fake.machine.gpus[2].remapped_rows = (0, 1, 0, 0)
    node.wait_health(GPU, ids[2], "Healthy")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _monitor(recover_after: float, **settings: Any) -> tuple[HealthMonitor, _Clock, list[int]]:
    clock, woken = _Clock(), []
    nvml = FakeNvml(machines.nvlink8())
    monitor = HealthMonitor(nvml, Settings(**settings), recover_after, lambda: woken.append(1),
                            logging.getLogger("test"), clock)
    monitor._gpus = {g.uuid: None for g in nvml.machine.gpus}
    return monitor, clock, woken


def _event(kind: int, data: int, gi: int = WHOLE, ci: int = WHOLE) -> Any:
    from multidp_nvidia.fake_nvml import _Handle

    return SimpleNamespace(device=_Handle(0), eventType=kind, eventData=data, gpuInstanceId=gi, computeInstanceId=ci)


def test_recovery_rules_with_a_fake_clock() -> None:
    monitor, clock, woken = _monitor(60.0)
    monitor.nvml.nvmlInit()
    uuid = monitor.nvml.machine.gpus[0].uuid
    monitor.handle(_event(monitor.nvml.nvmlEventTypeXidCriticalError, 79))
    assert monitor.problem(uuid) == "XID 79" and woken
    clock.now += 59
    assert monitor.try_recover(lambda u: "") == [] and monitor.problem(uuid)
    clock.now += 2
    assert monitor.try_recover(lambda u: "still broken") == []  # NVML not answering: wait again
    assert monitor.problem(uuid) == "still broken"
    clock.now += 61
    assert [f.gpu_uuid for f in monitor.try_recover(lambda u: "")] == [uuid]
    assert monitor.problem(uuid) == ""


def test_recover_after_zero_never_recovers() -> None:
    monitor, clock, _ = _monitor(0.0)
    monitor.nvml.nvmlInit()
    uuid = monitor.nvml.machine.gpus[0].uuid
    monitor.handle(_event(monitor.nvml.nvmlEventTypeXidCriticalError, 79))
    clock.now += 10**6
    assert monitor.try_recover(lambda u: "") == [] and monitor.problem(uuid) == "XID 79"


def test_only_explicitly_enabled_xids_when_all_disabled() -> None:
    monitor, _, _ = _monitor(60.0, only_xids=frozenset({48}))
    assert monitor.watched(48) and not monitor.watched(79)


def test_event_wait_failure_marks_every_gpu(caplog: pytest.LogCaptureFixture) -> None:
    monitor, _, _ = _monitor(60.0)
    monitor._stop.set()  # so the pause after the failure ends at once
    monitor._wait_failed(monitor.nvml.NVMLError(monitor.nvml.NVML_ERROR_UNKNOWN))
    assert all(monitor.problem(u).startswith("NVML event wait failed") for u in monitor._gpus)
    assert "marking every GPU unhealthy" in caplog.text
