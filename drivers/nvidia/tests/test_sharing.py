"""Time-slicing: replicas through the host, renames, per-GPU counts from NVIDIA's `devices` and `rename`."""

from __future__ import annotations

from typing import Any

import grpc

from multidp_nvidia import machines


def _sharing(*resources: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {"sharing": {"timeSlicing": {"resources": list(resources), **flags}}}


def test_per_gpu_replica_counts_and_renames(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    config = _sharing({"name": "nvidia.com/gpu", "replicas": 4, "devices": [0, "1"]},
                      {"name": "gpu", "replicas": 2, "rename": "gpu-half", "devices": [machine.gpus[2].uuid]})
    node = nvidia_node(machine, config)
    shared = node.devices("nvidia.com/gpu", 8 + 5)  # 4 + 4 replicas, and GPUs 3..7 whole
    uuids = [g.uuid for g in machine.gpus]
    assert list(shared) == [f"{uuids[0]}::{n}" for n in range(4)] + [f"{uuids[1]}::{n}" for n in range(4)] + uuids[3:]
    assert list(node.devices("nvidia.com/gpu-half", 2)) == [f"{uuids[2]}::0", f"{uuids[2]}::1"]


def test_devices_count_takes_the_first_gpus(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine, _sharing({"name": "nvidia.com/gpu", "replicas": 2, "devices": 3},
                                         renameByDefault=True))
    assert list(node.devices("nvidia.com/gpu.shared", 6)) == [f"{g.uuid}::{n}" for g in machine.gpus[:3]
                                                              for n in range(2)]
    assert list(node.devices("nvidia.com/gpu", 5)) == [g.uuid for g in machine.gpus[3:]]


def test_unknown_device_reference_is_logged_and_skipped(nvidia_node: Any, caplog: Any) -> None:
    # NVIDIA v0.20.0 accepts a well-formed UUID that names no GPU (and then discards `devices`): warned here.
    absent = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
    node = nvidia_node(machines.nvlink8(), _sharing({"name": "nvidia.com/gpu", "replicas": 2,
                                                     "devices": ["0", absent]}))
    node.devices("nvidia.com/gpu", 9)
    assert f"sharing.timeSlicing.resources[0].devices: no nvidia.com/gpu device '{absent}'" in caplog.text


def test_allocating_replicas_names_the_gpus_once(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine, {**_sharing({"name": "nvidia.com/gpu", "replicas": 4}), "passDeviceSpecs": True})
    ids = list(node.devices("nvidia.com/gpu", 32))
    answer = node.allocate("nvidia.com/gpu", ids[0], ids[1], ids[5])
    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == f"{machine.gpus[0].uuid},{machine.gpus[1].uuid}"
    assert [d.container_path for d in answer.devices][-2:] == ["/dev/nvidia0", "/dev/nvidia1"]


def test_fail_requests_greater_than_one_spares_whole_gpus(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    config = _sharing({"name": "nvidia.com/gpu", "replicas": 2, "devices": [0]}, failRequestsGreaterThanOne=True)
    node = nvidia_node(machine, config)
    ids = list(node.devices("nvidia.com/gpu", 9))
    error = node.allocate_error("nvidia.com/gpu", ids[0], ids[1])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().endswith("maximum request size for shared resources is 1; found 2")
    assert node.allocate("nvidia.com/gpu", ids[2], ids[3]).envs["NVIDIA_VISIBLE_DEVICES"]  # two whole GPUs


def test_replicas_spread_by_default_and_pack_as_an_option(nvidia_node: Any, kubelet: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine, _sharing({"name": "nvidia.com/gpu", "replicas": 4, "devices": 2}))
    ids = [i for i in node.devices("nvidia.com/gpu", 14) if "::" in i]
    picked = node.preferred("nvidia.com/gpu", ids, 2)
    assert {i.split("::")[0] for i in picked} == {machine.gpus[0].uuid, machine.gpus[1].uuid}


def test_replicas_pack(nvidia_node: Any) -> None:
    machine = machines.nvlink8()
    node = nvidia_node(machine, {**_sharing({"name": "nvidia.com/gpu", "replicas": 4, "devices": 2}),
                                 "replicaPolicy": "pack"})
    ids = [i for i in node.devices("nvidia.com/gpu", 14) if "::" in i]
    picked = node.preferred("nvidia.com/gpu", ids, 3)
    assert len({i.split("::")[0] for i in picked}) == 1


def test_mig_devices_can_be_shared_too(nvidia_node: Any) -> None:
    machine = machines.mig_mixed()
    node = nvidia_node(machine, {"migStrategy": "mixed", **_sharing(
        {"name": "nvidia.com/mig-1g.10gb", "replicas": 3, "devices": ["0:2"]})})
    ids = list(node.devices("nvidia.com/mig-1g.10gb", 4))
    assert ids[:3] == [f"{machine.gpus[0].migs[2].uuid}::{n}" for n in range(3)]
    assert ids[3] == machine.gpus[0].migs[3].uuid
