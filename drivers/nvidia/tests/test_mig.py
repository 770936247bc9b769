"""MIG strategies none / single / mixed on synthetic MIG machines, and their Allocate answers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from multidp_nvidia import machines
from multidp_nvidia.discovery import mig_memory_gb

from .conftest import poll_until

H100_BYTES = 85520809984


@pytest.mark.parametrize(("memory_mb", "gb"), [(9856, 10), (19968, 20), (40192, 40), (80384, 80)])
def test_profile_memory_rounds_like_nvidia(memory_mb: int, gb: int) -> None:
    assert mig_memory_gb(H100_BYTES, memory_mb) == gb


def test_mixed_serves_one_resource_per_profile(nvidia_node: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed"})
    expected = {"nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-2g.20gb": 1, "nvidia.com/mig-1g.10gb": 2,
                "nvidia.com/mig-4g.40gb": 1, "nvidia.com/mig-1g.10gb.me": 1, "nvidia.com/gpu": 1}
    for resource, count in expected.items():
        node.devices(resource, count)
    assert set(node.host.endpoints) == set(expected)
    fake = node.fake.machine
    assert list(node.devices("nvidia.com/gpu")) == [fake.gpus[2].uuid]  # the GPU without MIG
    assert set(node.devices("nvidia.com/mig-1g.10gb")) == {fake.gpus[0].migs[2].uuid, fake.gpus[0].migs[3].uuid}
    assert "1c.2g.20gb" in caplog.text  # the compute-instance slice is named in a log line, not served
    numa = {r: {n for _, n in node.devices(r).values()} for r in expected}
    assert numa["nvidia.com/mig-4g.40gb"] == {(0,)} and numa["nvidia.com/gpu"] == {(1,)}  # inherited from the GPU


def test_mig_device_specs_carry_the_capability_nodes(nvidia_node: Any) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed", "passDeviceSpecs": True,
                                              "deviceIDStrategy": "index"})
    mig = list(node.devices("nvidia.com/mig-2g.20gb", 1))[0]
    answer = node.allocate("nvidia.com/mig-2g.20gb", mig)
    assert dict(answer.envs) == {"NVIDIA_VISIBLE_DEVICES": "0:1"}
    table = machines.mig_minor_table(node.fake.machine)
    caps = [f"/dev/nvidia-caps/nvidia-cap{table[k]}" for k in ("gpu0/gi3/access", "gpu0/gi3/ci0/access")]
    assert [d.container_path for d in answer.devices] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0", *caps]


def test_single_serves_uniform_mig_devices_as_gpus(nvidia_node: Any) -> None:
    machine = machines.mig_uniform(gpus=2, per_gpu=7)
    node = nvidia_node(machine, {"migStrategy": "single"})
    devices = node.devices("nvidia.com/gpu", 14)
    assert set(devices) == {m.uuid for g in machine.gpus for m in g.migs}
    assert set(node.host.endpoints) == {"nvidia.com/gpu"}


def test_single_refuses_mixed_profiles_with_a_clear_error(nvidia_node: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "single"})
    poll_until(lambda: "MIG strategy single" in caplog.text, 10, "the MIG error in the log")
    assert node.host.endpoints == {}
    assert node.host.statuses["nvidia"].state == "running"  # the driver keeps trying; the host is fine


def test_none_serves_mig_gpus_whole(nvidia_node: Any) -> None:
    machine = machines.mig_mixed()
    node = nvidia_node(machine, {"migStrategy": "none"})
    assert list(node.devices("nvidia.com/gpu", 3)) == [g.uuid for g in machine.gpus]


def test_missing_mig_minors_make_mig_devices_unhealthy_only_when_nodes_are_handed_out(
        nvidia_node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed", "passDeviceSpecs": True,
                                              "procRoot": str(tmp_path / "no-proc")})
    health, _ = list(node.devices("nvidia.com/mig-2g.20gb", 1).values())[0]
    assert health == "Unhealthy"
    assert f"cannot read {tmp_path / 'no-proc' / 'driver/nvidia-caps/mig-minors'}" in caplog.text
    assert node.driver._inventory.resources["nvidia.com/mig-2g.20gb"][0].problem.startswith("cannot read")


def test_missing_mig_minors_do_not_matter_for_envvar_only(nvidia_node: Any, tmp_path: Path) -> None:
    node = nvidia_node(machines.mig_mixed(), {"migStrategy": "mixed", "procRoot": str(tmp_path / "no-proc")})
    health, _ = list(node.devices("nvidia.com/mig-2g.20gb", 1).values())[0]
    assert health == "Healthy"


def test_resource_patterns_are_anchored_and_nvidias_defaults_follow(nvidia_node: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # NVIDIA v0.20.0 anchors its patterns (api/config/v1/resources.go wildCardToRegexp, #1807): "H100" does not
    # match "NVIDIA H100 80GB HBM3", "1g.10gb" does not match "1g.10gb+me", '?' is a plain character, and the
    # first matching entry wins. Its defaults (internal/rm/rm.go AddDefaultResourcesToConfig) come after the
    # operator's patterns, so nothing is dropped: 3g.40gb, 2g.20gb and 1g.10gb+me keep their mig-<profile>.
    config = {"migStrategy": "mixed",
              "resources": {"gpus": [{"pattern": "H?00", "name": "never"}, {"pattern": "H100", "name": "never2"},
                                     {"pattern": "*H100*", "name": "h100"}],
                            "mig": [{"pattern": "1g.10gb", "name": "mig-small"},
                                    {"pattern": "4g.*", "name": "mig-big"}]}}
    node = nvidia_node(machines.mig_mixed(), config)
    node.devices("nvidia.com/h100", 1)
    node.devices("nvidia.com/mig-small", 2)  # 1g.10gb twice; not 1g.10gb+me
    node.devices("nvidia.com/mig-big", 1)
    for default in ("nvidia.com/mig-1g.10gb.me", "nvidia.com/mig-3g.40gb", "nvidia.com/mig-2g.20gb"):
        node.devices(default, 1)
    assert set(node.host.endpoints) == {"nvidia.com/h100", "nvidia.com/mig-small", "nvidia.com/mig-big",
                                        "nvidia.com/mig-1g.10gb.me", "nvidia.com/mig-3g.40gb",
                                        "nvidia.com/mig-2g.20gb"}
    assert "compute-instance slice (1c.2g.20gb)" in caplog.text


def test_a_pattern_for_one_model_keeps_the_other_gpus(nvidia_node: Any) -> None:
    # A mixed-model node configured for one model: the GPUs no pattern names stay nvidia.com/gpu (NVIDIA's "*").
    node = nvidia_node(machines.mig_mixed(), {"resources": {"gpus": [{"pattern": "*A100*", "name": "a100"}]}})
    node.devices("nvidia.com/gpu", 3)
    assert set(node.host.endpoints) == {"nvidia.com/gpu"}
