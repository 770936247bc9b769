"""MPS sharing as NVIDIA's plugin serves it, beside NVIDIA's MPS control daemon (faked by its files)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest
from multidp import ConfigError
from multidp.testing import response_dict

from multidp_nvidia import machines
from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.mps import answer_parts
from multidp_nvidia.settings import resolve

from .conftest import poll_until, write_yaml

GPU = "nvidia.com/gpu"


def _mps(*resources: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {"sharing": {"mps": {"resources": list(resources), **flags}}}


def _daemon(root: Path, *resources: str) -> Path:
    """The files NVIDIA's MPS control daemon leaves under mpsRoot once it runs."""
    for resource in resources:
        (root / resource / "pipe").mkdir(parents=True, exist_ok=True)
    (root / "shm").mkdir(parents=True, exist_ok=True)
    (root / ".ready").write_text("")
    return root


def _resolve(section: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return resolve(msgspec.convert(section, NvidiaConfig), environ or {})


def _mounts(answer: Any) -> list[tuple[str, str, bool]]:
    return [(m["container_path"], m["host_path"], m["read_only"]) for m in response_dict(answer)["mounts"]]


def test_replicas_are_advertised_like_time_slicing(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machine, {"flags": {"mpsRoot": str(root)}, **_mps({"name": "gpu", "replicas": 4})})
    devices = node.devices(GPU, 32)
    assert list(devices) == [f"{g.uuid}::{n}" for g in machine.gpus for n in range(4)]
    assert {health for health, _ in devices.values()} == {"Healthy"}


def test_rename_by_default_serves_the_shared_name(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", "nvidia.com/gpu.shared")
    node = nvidia_node(machine, {"mpsRoot": str(root), **_mps({"name": GPU, "replicas": 2}, renameByDefault=True)})
    ids = list(node.devices("nvidia.com/gpu.shared", 16))
    assert set(node.host.endpoints) == {"nvidia.com/gpu.shared"}
    answer = node.allocate("nvidia.com/gpu.shared", ids[0])
    assert answer.envs["CUDA_MPS_PIPE_DIRECTORY"] == "/mps/nvidia.com/gpu.shared/pipe"


def test_allocate_adds_nvidias_pipe_and_shm_mounts(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machine, {"mpsRoot": str(root), **_mps({"name": GPU, "replicas": 4})})
    ids = list(node.devices(GPU, 32))
    answer = node.allocate(GPU, ids[5])
    assert dict(answer.envs) == {"NVIDIA_VISIBLE_DEVICES": machine.gpus[1].uuid,
                                 "CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"}
    assert _mounts(answer) == [("/mps/nvidia.com/gpu/pipe", f"{root}/nvidia.com/gpu/pipe", False),
                               ("/dev/shm", f"{root}/shm", False)]
    assert list(answer.devices) == []


def test_pass_device_specs_and_volume_mounts_keep_nvidias_order(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machine, {"mpsRoot": str(root), "passDeviceSpecs": True, "deviceListStrategy": "volume-mounts",
                                 **_mps({"name": GPU, "replicas": 2})})
    ids = list(node.devices(GPU, 16))
    answer = node.allocate(GPU, ids[2])
    uuid = machine.gpus[1].uuid
    assert dict(answer.envs) == {"NVIDIA_VISIBLE_DEVICES": "/var/run/nvidia-container-devices",
                                 "CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"}
    assert [m[0] for m in _mounts(answer)] == ["/mps/nvidia.com/gpu/pipe", "/dev/shm",
                                               f"/var/run/nvidia-container-devices/{uuid}"]
    assert [(d.container_path, d.permissions) for d in answer.devices] == [
        ("/dev/nvidiactl", "rw"), ("/dev/nvidia-uvm", "rw"), ("/dev/nvidia-uvm-tools", "rw"), ("/dev/nvidia1", "rw")]


def test_cdi_strategies_keep_the_mps_parts(nvidia_node: Any, tmp_path: Path) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machine, {"mpsRoot": str(root), "deviceListStrategy": "cdi-cri",
                                 **_mps({"name": GPU, "replicas": 2})})
    ids = list(node.devices(GPU, 16))
    answer = node.allocate(GPU, ids[0])
    assert [c.name for c in answer.cdi_devices] == [f"k8s.device-plugin.nvidia.com/gpu={machine.gpus[0].uuid}"]
    assert dict(answer.envs) == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"}
    assert len(_mounts(answer)) == 2


def test_more_than_one_replica_is_refused_unless_explicitly_allowed(nvidia_node: Any, tmp_path: Path) -> None:
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machines.nvlink8(), {"mpsRoot": str(root), **_mps({"name": GPU, "replicas": 4})})
    ids = list(node.devices(GPU, 32))
    error = node.allocate_error(GPU, ids[0], ids[4])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().endswith("maximum request size for shared resources is 1; found 2")
    assert _resolve(_mps({"name": GPU, "replicas": 2}, failRequestsGreaterThanOne=True)).fail_requests_greater_than_one
    relaxed = _resolve(_mps({"name": GPU, "replicas": 2}, failRequestsGreaterThanOne=False))
    assert relaxed.fail_requests_greater_than_one is False
    assert "per client, not per replica" in relaxed.warnings[0]


def test_daemon_not_ready_makes_devices_unhealthy_until_its_files_appear(nvidia_node: Any, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = tmp_path / "mps"
    node = nvidia_node(machines.nvlink8(), {"mpsRoot": str(root), "pollInterval": 0.05,
                                            **_mps({"name": GPU, "replicas": 2})})
    ids = list(node.devices(GPU, 16))
    node.wait_health(GPU, ids[0], "Unhealthy")
    assert {health for health, _ in node.devices(GPU).values()} == {"Unhealthy"}
    assert node.driver._mps.problem(GPU) == f"MPS control daemon not ready: {root}/.ready is missing"
    (root / "shm").mkdir(parents=True)
    (root / ".ready").write_text("")
    poll_until(lambda: "nvidia.com/gpu/pipe is missing" in node.driver._mps.problem(GPU), 10, "the pipe named")
    (root / GPU / "pipe").mkdir(parents=True)
    node.wait_health(GPU, ids[0], "Healthy")
    assert {health for health, _ in node.devices(GPU).values()} == {"Healthy"}
    unhealthy = [r for r in caplog.records if "MPS devices are unhealthy" in r.getMessage()]
    assert len(unhealthy) == 2 and ".ready is missing" in unhealthy[0].getMessage()  # one line per change
    assert len([r for r in caplog.records if "the MPS control daemon is ready" in r.getMessage()]) == 1
    (root / ".ready").unlink()  # the daemon stopped: unhealthy again
    node.wait_health(GPU, ids[3], "Unhealthy")


def test_container_view_is_read_and_host_path_is_answered(nvidia_node: Any, tmp_path: Path) -> None:
    view = _daemon(tmp_path / "mnt-mps", GPU)
    node = nvidia_node(machines.nvlink8(), {"mpsContainerRoot": str(view), **_mps({"name": GPU, "replicas": 2})})
    ids = list(node.devices(GPU, 16))
    assert node.devices(GPU)[ids[0]][0] == "Healthy"
    assert [m[1] for m in _mounts(node.allocate(GPU, ids[0]))] == ["/run/nvidia/mps/nvidia.com/gpu/pipe",
                                                                   "/run/nvidia/mps/shm"]


def test_nvidias_mps_root_variable_is_honoured(nvidia_node: Any, tmp_path: Path) -> None:
    assert _resolve({}).mps_root == "/run/nvidia/mps"  # the chart's default, which NVIDIA passes as MPS_ROOT
    assert _resolve({}, {"MPS_ROOT": "/var/mps"}).mps_root == "/var/mps"
    assert _resolve({"mpsRoot": "/opt/mps"}, {"MPS_ROOT": "/var/mps"}).mps_root == "/opt/mps"  # multidp's key wins
    root = _daemon(tmp_path / "from-env", GPU)
    node = nvidia_node(machines.nvlink8(), _mps({"name": GPU, "replicas": 2}), environ={"MPS_ROOT": str(root)})
    ids = list(node.devices(GPU, 16))
    assert node.devices(GPU)[ids[0]][0] == "Healthy"  # the container view defaults to mpsRoot
    assert _mounts(node.allocate(GPU, ids[0]))[1] == ("/dev/shm", f"{root}/shm", False)


def test_nvidias_file_with_mps_is_read_unchanged(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "nvidia.yaml", "version: v1\nflags:\n  mpsRoot: /run/nvidia/mps\nsharing:\n"
                      "  mps:\n    renameByDefault: true\n    resources:\n    - name: nvidia.com/gpu\n"
                      "      replicas: 10\n")
    settings = _resolve({"configFile": path})
    [rule] = settings.replica_rules
    assert (rule.serve_as, rule.replicas, rule.mps, settings.fail_requests_greater_than_one) == (
        "nvidia.com/gpu.shared", 10, True, True)


def test_rename_and_devices_are_ignored_as_nvidia_does(nvidia_node: Any, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    machine = machines.nvlink8()
    root = _daemon(tmp_path / "mps", GPU)
    node = nvidia_node(machine, {"mpsRoot": str(root),
                                 **_mps({"name": GPU, "replicas": 2, "rename": "gpu-half", "devices": [0]})})
    assert list(node.devices(GPU, 16))[:2] == [f"{machine.gpus[0].uuid}::0", f"{machine.gpus[0].uuid}::1"]
    assert "resources[0]: rename and devices ignored" in caplog.text


@pytest.mark.parametrize(("section", "key", "words"), [
    ({"sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 2}]},
                  "mps": {"resources": [{"name": GPU, "replicas": 2}]}}},
     "drivers.nvidia.sharing", "mutually exclusive"),
    (_mps({"name": GPU, "replicas": 1}), "drivers.nvidia.sharing.mps.resources[0].replicas", "at least 2"),
    (_mps({"name": GPU, "replicas": 49}), "drivers.nvidia.sharing.mps.resources[0].replicas", "between 2 and 48"),
    ({"migStrategy": "mixed", **_mps({"name": GPU, "replicas": 2})}, "drivers.nvidia.flags.migStrategy",
     "not supported with sharing.mps"),
    (_mps({"name": "Bad_Name.", "replicas": 2}), "drivers.nvidia.sharing.mps.resources[0].name", "resource name"),
    ({"flags": {"mpsRoot": "run/nvidia/mps"}, **_mps({"name": GPU, "replicas": 2})},
     "drivers.nvidia.flags.mpsRoot", "absolute path"),
    ({"mpsContainerRoot": "/mps/../etc", **_mps({"name": GPU, "replicas": 2})},
     "drivers.nvidia.mpsContainerRoot", "absolute path"),
])
def test_config_errors_name_the_key(section: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _resolve(section)
    assert caught.value.key == key and words in caught.value.message


def test_mig_devices_are_refused_as_nvidia_does(nvidia_node: Any, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    node = nvidia_node(machines.mig_uniform(gpus=1, per_gpu=7),
                       {"migStrategy": "single", "mpsRoot": str(tmp_path), **_mps({"name": GPU, "replicas": 2})})
    poll_until(lambda: "MPS sharing is not supported for MIG devices" in caplog.text, 10, "the MIG refusal")
    assert "sharing.mps.resources[0]" in caplog.text and node.host.endpoints == {}


def test_answer_parts_name_host_paths_under_mps_root() -> None:
    envs, mounts = answer_parts("example.com/gpu-x", "/var/lib/mps")
    assert envs == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/example.com/gpu-x/pipe"}
    assert [(m.container_path, m.host_path, m.read_only) for m in mounts] == [
        ("/mps/example.com/gpu-x/pipe", "/var/lib/mps/example.com/gpu-x/pipe", False),
        ("/dev/shm", "/var/lib/mps/shm", False)]


def test_a_daemon_started_with_other_replica_counts_keeps_the_devices_unhealthy(nvidia_node: Any,
                                                                                 tmp_path: Path) -> None:
    # .ready holds the sharing config the daemon runs (NVIDIA's JSON); its per-client limits follow
    # its replica count, so a daemon set up for 2 replicas must not serve 4 clients a GPU.
    root = _daemon(tmp_path / "mps", GPU)
    (root / ".ready").write_text('{"resources":[{"name":"gpu","devices":"all","replicas":2}]}\n')
    node = nvidia_node(machines.nvlink8(), {"mpsRoot": str(root), "pollInterval": 0.05,
                                            **_mps({"name": GPU, "replicas": 4})})
    ids = list(node.devices(GPU, 32))
    node.wait_health(GPU, ids[0], "Unhealthy")
    assert node.driver._mps.problem(GPU) == (
        f"the MPS control daemon runs another sharing config (nvidia.com/gpu: 4 replicas here, 2 in the "
        f"daemon's; see {root}/.ready)")
    (root / ".ready").write_text('{"failRequestsGreaterThanOne":true,"resources":[{"name":"nvidia.com/gpu",'
                                 '"replicas":4}]}\n')
    node.wait_health(GPU, ids[0], "Healthy")
    assert {health for health, _ in node.devices(GPU).values()} == {"Healthy"}
