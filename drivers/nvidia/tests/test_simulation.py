"""The module-level plugin under --simulate (what `multidp demo` uses), and small file readers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import multidp_nvidia.plugin as plugin
from multidp_nvidia.discovery import read_mig_minors


@pytest.mark.parametrize(("machine", "resources"), [("h100", {"nvidia.com/gpu": 1}),
                                                    ("nvlink8", {"nvidia.com/gpu": 8})])
def test_simulated_machines_serve_and_fault_through_events(multidp_host: Any, kubelet: Any, machine: str,
                                                           resources: dict[str, int]) -> None:
    host = multidp_host({"nvidia": plugin}, drivers={"nvidia": {"simulatedMachine": machine}}, simulate=True)
    for resource, count in resources.items():
        kubelet.wait_devices(resource, lambda v, c=count: v.capacity == c and v.allocatable == c)
    simulation = host.factory.simulations["nvidia"]
    assert simulation.nvml.wait_registered()
    assert "XID 79" in simulation.inject_fault()
    kubelet.wait_devices("nvidia.com/gpu", lambda v: v.allocatable == resources["nvidia.com/gpu"] - 1)
    assert "answers NVML again" in simulation.clear_fault()
    kubelet.wait_devices("nvidia.com/gpu", lambda v: v.allocatable == resources["nvidia.com/gpu"])


def test_simulated_machine_without_nvml_serves_nothing(multidp_host: Any, kubelet: Any) -> None:
    host = multidp_host({"nvidia": plugin}, drivers={"nvidia": {"simulatedMachine": "no-nvml"}}, simulate=True)
    assert host.endpoints == {} and host.statuses["nvidia"].state == "running"


def test_malformed_mig_minor_lines_are_named_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "driver/nvidia-caps/mig-minors"
    path.parent.mkdir(parents=True)
    path.write_text("config 1\ngpu0/gi1/access twelve\ngpu0/gi1/ci0/access 13\n\n")
    minors, problem = read_mig_minors(tmp_path, logging.getLogger("t"))
    assert minors == {"config": 1, "gpu0/gi1/ci0/access": 13} and problem == ""
    assert f"{path} line 2 is malformed" in caplog.text
