"""The health thread sleeps in NVML's event wait: long waits when nothing is due, a stop that never
frees NVML under a wait, and recoveries that still come without the host's poll."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import msgspec
from multidp import DriverContext

from multidp_nvidia import machines
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.fake_nvml import WHOLE, FakeNvml
from multidp_nvidia.health import RETRY_S, SOONEST_MS, WAIT_MS, HealthMonitor
from multidp_nvidia.machines import write_host_files
from multidp_nvidia.plugin import create
from multidp_nvidia.settings import Settings

from .conftest import poll_until

GPU = "nvidia.com/gpu"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingNvml(FakeNvml):
    """A fake NVML that notes each event wait's timeout and the order of frees and shutdowns."""

    def __init__(self, machine: Any) -> None:
        super().__init__(machine)
        self.timeouts: list[int] = []
        self.steps: list[str] = []

    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> Any:  # noqa: N802 - pynvml's name
        self.timeouts.append(timeout_ms)
        return super().nvmlEventSetWait(event_set, timeout_ms)

    def nvmlEventSetFree(self, event_set: Any) -> None:  # noqa: N802
        self.steps.append("free")
        super().nvmlEventSetFree(event_set)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.steps.append("shutdown")
        super().nvmlShutdown()


def _monitor(recover_after: float, nvml: Any = None) -> tuple[HealthMonitor, _Clock]:
    clock = _Clock()
    nvml = nvml or FakeNvml(machines.nvlink8())
    monitor = HealthMonitor(nvml, Settings(), recover_after, lambda: None, logging.getLogger("test"), clock)
    return monitor, clock


def test_with_nothing_due_a_wait_lasts_the_longest_wait() -> None:
    monitor, clock = _monitor(60.0)
    assert monitor.wait_ms(retried=clock.now) == WAIT_MS
    monitor.record("GPU-0", WHOLE, WHOLE, "XID 79")
    assert monitor.wait_ms(retried=clock.now) == WAIT_MS  # due in a minute: still the longest wait


def test_a_wait_ends_when_a_fault_is_due_to_recover() -> None:
    monitor, clock = _monitor(2.0)
    monitor.record("GPU-0", WHOLE, WHOLE, "XID 79")
    assert monitor.wait_ms(retried=clock.now) == 2000
    clock.now += 1.5
    assert monitor.wait_ms(retried=clock.now) == 500
    clock.now += 10  # due and not yet recovered (the host has not scanned): remind it, not in a busy loop
    assert monitor.wait_ms(retried=clock.now) == SOONEST_MS


def test_recover_after_zero_never_shortens_a_wait() -> None:
    monitor, clock = _monitor(0.0)
    monitor.record("GPU-0", WHOLE, WHOLE, "XID 79")
    assert monitor.wait_ms(retried=clock.now) == WAIT_MS


def test_a_wait_ends_when_an_unwatched_gpu_is_due_to_be_registered_again() -> None:
    monitor, clock = _monitor(60.0)
    monitor._unwatched["GPU-0"] = object()
    assert monitor.wait_ms(retried=clock.now) == WAIT_MS
    assert monitor.wait_ms(retried=clock.now - RETRY_S + 1.25) == 1250


def _waiting_monitor() -> tuple[RecordingNvml, HealthMonitor]:
    """A monitor watching the NVLink machine, its thread in its first event wait."""
    nvml = RecordingNvml(machines.nvlink8())
    nvml.nvmlInit()
    monitor = HealthMonitor(nvml, Settings(), 60.0, lambda: None, logging.getLogger("test"))
    monitor.start([(g.uuid, nvml.nvmlDeviceGetHandleByIndex(i)) for i, g in enumerate(nvml.machine.gpus)])
    assert nvml.wait_registered()
    poll_until(lambda: nvml.timeouts, 5, "the first event wait")
    return nvml, monitor


def test_an_idle_thread_waits_the_longest_wait() -> None:
    nvml, monitor = _waiting_monitor()
    assert nvml.timeouts == [5000]  # NVIDIA's own health loop waits 5000 ms
    nvml.raise_xid(3, 79)  # an event ends the wait at once
    poll_until(lambda: monitor.problem(nvml.machine.gpus[3].uuid) == "XID 79", 5, "the XID recorded")
    poll_until(lambda: len(nvml.timeouts) == 2, 5, "the next event wait")
    assert nvml.timeouts[1] == WAIT_MS  # recovery is a minute away
    monitor.stop()
    nvml.raise_xid(0, 79)  # ends the last wait
    poll_until(lambda: nvml.steps == ["free"], 5, "the event set freed")
    assert monitor.problem(nvml.machine.gpus[0].uuid) == ""  # an event after stop is not handled


def test_stop_leaves_the_nvml_shutdown_to_the_thread_until_its_wait_returns() -> None:
    nvml, monitor = _waiting_monitor()
    returned = threading.Event()
    monitor.stop(then=lambda: (nvml.nvmlShutdown(), returned.set()))
    assert nvml.steps == [] and nvml.initialised == 1  # the wait goes on: nothing freed under it
    nvml.raise_ecc(1)  # the wait returns
    assert returned.wait(5)
    assert nvml.steps == ["free", "shutdown"] and nvml.initialised == 0


def test_stop_after_the_thread_ended_shuts_down_at_once() -> None:
    nvml = RecordingNvml(machines.nvlink8())
    nvml.nvmlInit()
    monitor = HealthMonitor(nvml, Settings(), 60.0, lambda: None, logging.getLogger("test"))
    monitor.start([(g.uuid, nvml.nvmlDeviceGetHandleByIndex(i)) for i, g in enumerate(nvml.machine.gpus)])
    poll_until(lambda: nvml.timeouts, 5, "the first event wait")
    monitor.stop()
    nvml.raise_xid(0, 79)
    poll_until(lambda: nvml.steps == ["free"], 5, "the thread's end")
    poll_until(lambda: not monitor._running, 5, "the thread's last step")
    done: list[str] = []
    monitor.stop(then=lambda: done.append("shutdown"))
    assert done == ["shutdown"]


def test_closing_the_driver_shuts_nvml_down_after_the_wait(tmp_path: Path) -> None:
    machine = machines.nvlink8()
    roots = write_host_files(machine, tmp_path / "node")
    nvml = RecordingNvml(machine)
    config = msgspec.convert({"procRoot": str(roots["proc"]), "containerDriverRoot": str(roots["driver"])},
                             NvidiaConfig)
    driver = create(DriverContext("nvidia", config, sysfs_root=roots["sys"], dev_root=roots["dev"]), lambda: nvml)
    assert len(driver.scan()[GPU]) == 8
    assert nvml.wait_registered()
    poll_until(lambda: nvml.timeouts, 5, "the first event wait")
    driver.close()
    assert nvml.initialised == 1 and nvml.steps == []  # the health thread is still in its wait
    nvml.raise_xid(0, 79)  # ends it
    poll_until(lambda: nvml.initialised == 0, 10, "NVML shut down by the health thread")
    assert nvml.steps == ["free", "shutdown"]


def test_a_due_recovery_wakes_the_host_without_its_poll(nvidia_node: Any) -> None:
    node = nvidia_node(machines.nvlink8(), {"health": {"recoverAfter": 0.3}, "pollInterval": 60})
    ids = list(node.devices(GPU, 8))
    assert node.fake.wait_registered()
    node.fake.raise_xid(2, 48)
    node.wait_health(GPU, ids[2], "Unhealthy")
    node.wait_health(GPU, ids[2], "Healthy")  # no poll for a minute: the health thread asked for the scan
