"""A node whose GPU driver container finishes after the pod starts (issue 13, item 6).

With ``failOnInitError`` true the driver's creation fails while NVML cannot be initialised; the
host tries again with growing delays and the GPUs appear once NVML works, with no restart. With
it false (multidp's default) the driver runs, serves nothing, and finds the GPUs at a later poll.
The fake NVML's init error is toggled as the driver container would: ``machine.init_error``.
"""

from __future__ import annotations

from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest

from multidp_nvidia import machines

from .conftest import poll_until

GPU = "nvidia.com/gpu"


FAST_RETRIES = {"first": 0.05, "max": 0.2}  # the default driverRetry is 1 s doubling to 5 min


# NVIDIA's README sets it under flags (and as FAIL_ON_INIT_ERROR); multidp also takes the shortcut.
FAIL_ON_INIT_ERROR = [
    pytest.param({"flags": {"failOnInitError": True}}, {}, id="flags"),
    pytest.param({"failOnInitError": True}, {}, id="shortcut"),
    pytest.param({}, {"FAIL_ON_INIT_ERROR": "true"}, id="variable"),
]


@pytest.mark.parametrize(("config", "environ"), FAIL_ON_INIT_ERROR)
def test_fail_on_init_error_retries_and_the_gpus_appear_once_nvml_works(
        nvidia_node: Any, config: dict[str, Any], environ: dict[str, str]) -> None:
    machine = machines.recorded_h100()
    machine.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    node = nvidia_node(machine, {"pollInterval": 0.05, **config}, environ=environ, driver_retry=FAST_RETRIES)
    poll_until(lambda: node.fake.calls["nvmlInit"] >= 3, 10, "creation tried again")
    status = node.host.statuses["nvidia"]
    assert status.state == "failed" and status.retrying, status
    assert "NVML cannot be initialised" in status.reason and "Driver Not Loaded" in status.reason
    assert status.reason.endswith("(failOnInitError is true)")
    assert [s.name for s in node.host.failed_drivers] == ["nvidia"]
    assert GPU not in node.kubelet.resources and node.host.endpoints == {}

    machine.init_error = None  # the driver container finished
    devices = node.devices(GPU, 1)
    assert list(devices) == [machine.gpus[0].uuid]
    assert node.host.statuses["nvidia"].state == "running" and node.host.failed_drivers == []
    tries = node.host.retries.attempts["nvidia"]
    assert tries >= 3 and node.host.retries.failures["nvidia"] == tries - 1
    assert node.allocate(GPU, machine.gpus[0].uuid).envs["NVIDIA_VISIBLE_DEVICES"] == machine.gpus[0].uuid


def test_without_fail_on_init_error_the_driver_runs_serves_nothing_and_finds_the_gpus_later(
        nvidia_node: Any) -> None:
    machine = machines.recorded_h100()
    machine.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    node = nvidia_node(machine, {"pollInterval": 0.05}, driver_retry=FAST_RETRIES)
    poll_until(lambda: node.fake.calls["nvmlInit"] >= 3, 10, "a few polls")
    assert node.host.statuses["nvidia"].state == "running" and node.host.failed_drivers == []
    assert node.host.endpoints == {} and len(node.plugin.drivers) == 1  # polled, not created again
    machine.init_error = None
    node.devices(GPU, 1)
    assert node.host.retries.attempts["nvidia"] == 1 and node.host.retries.failures["nvidia"] == 0
