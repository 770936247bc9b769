"""Parity with NVIDIA's plugin on the recorded H100: the four nvidia_plugin_*.json recordings.

Each test starts multidp with this driver over the fake NVML built from the
recorded snapshot (with the other VM's UUID where the recording came from
there), with the settings of that recording (tests/fixtures/RECORDINGS.md), and
compares registration, inventory and the successful Allocate answers, device
node order included, apart from NVIDIA's duplicated nodes. Bad requests get
multidp's contract (INVALID_ARGUMENT) with NVIDIA's message text kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from multidp.testing import allocate_request, response_dict

from multidp_nvidia.machines import recorded_h100

from .conftest import Node, recording, write_yaml

OTHER_VM_UUID = "GPU-eee1c3c8-424e-0171-d02a-a13648e847f7"

TIMESLICE_YAML = """\
version: v1
flags:
  migStrategy: none
  plugin:
    passDeviceSpecs: true
    deviceListStrategy: envvar
    deviceIDStrategy: uuid
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
"""
INDEX_VOLUME_YAML = """\
version: v1
flags:
  plugin: {passDeviceSpecs: true, deviceListStrategy: volume-mounts, deviceIDStrategy: index}
"""
SHARED_STRICT_YAML = """\
version: v1
sharing:
  timeSlicing:
    renameByDefault: true
    failRequestsGreaterThanOne: true
    resources: [{name: nvidia.com/gpu, replicas: 3}]
"""


def _without_duplicates(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for node in nodes:
        if node["container_path"] not in seen:
            seen.add(node["container_path"])
            kept.append(node)
    return kept


def _start(nvidia_node: Any, tmp_path: Path, name: str) -> tuple[Node, dict[str, Any]]:
    rec = recording(name)
    uuid = rec["inventory"][next(iter(rec["inventory"]))][0]["ID"].split("::")[0]
    yaml_text = {"timeslice": TIMESLICE_YAML, "index_volume_mounts": INDEX_VOLUME_YAML,
                 "shared_strict": SHARED_STRICT_YAML}.get(name)
    # As recorded: --fail-on-init-error=true, plus --config-file where one was used.
    config: dict[str, Any] = {"failOnInitError": True}
    if yaml_text:
        config["configFile"] = write_yaml(tmp_path / f"{name}.yaml", yaml_text)
    return nvidia_node(recorded_h100(uuid), config), rec


def _check_registration_and_inventory(node: Node, rec: dict[str, Any]) -> None:
    for expected in rec["registrations"]:
        reg = node.kubelet.wait_registered(expected["resource"])
        assert reg.version == expected["version"]
        options = rec["plugin_options"][expected["resource"]]
        assert reg.options.pre_start_required is options["pre_start_required"]
        assert reg.options.get_preferred_allocation_available is options["preferred"]
    assert {r.resource for r in node.kubelet.registrations} == {r["resource"] for r in rec["registrations"]}
    for resource, devices in rec["inventory"].items():
        seen = node.devices(resource, len(devices))
        assert [(i, h, list(n)) for i, (h, n) in seen.items()] == [(d["ID"], d["health"], d["numa"]) for d in devices]


def _check_allocations(node: Node, rec: dict[str, Any]) -> None:
    for case in rec["allocate"].values():
        resource, n = case["resource"], case["n"]
        available = [d["ID"] for d in rec["inventory"][resource]]
        picked = node.preferred(resource, available, n)
        assert len(picked) == n and set(picked) <= set(available)  # picks among equal replicas may differ
        answer = response_dict(node.allocate(resource, *case["devices_ids"]))
        expected = dict(case["response"])
        expected["devices"] = _without_duplicates(expected["devices"])
        assert answer == expected, case


def _check_bad_input(node: Node, rec: dict[str, Any]) -> None:
    resource = rec["registrations"][0]["resource"]
    known = rec["inventory"][resource][0]["ID"]
    stub = node.kubelet.stub(resource)
    cases = {
        "unknown_id": [["no-such-device"]],
        "empty_container": [[]],
        "duplicate_id": [[known, known]],
        "huge_request": [[f"x{i}" for i in range(20000)]],
        "long_id": [["y" * 100_000]],
        "many_containers": [[known] for _ in range(64)],
    }
    for case in rec["bad_input"]:
        request = allocate_request(*cases[case["case"]])
        try:
            answer = stub.Allocate(request, timeout=10)
        except grpc.RpcError as exc:
            outcome, details = exc.code(), exc.details()
        else:
            outcome, details = "ok", ""
            assert len(answer.container_responses) == len(cases[case["case"]])
        if case["case"] == "empty_container":
            # multidp's contract refuses a container without IDs (NVIDIA answers it with an empty response).
            assert outcome == grpc.StatusCode.INVALID_ARGUMENT and "names no devices" in details
        elif case["result"] == "ok":
            assert outcome == "ok", (case, details)
        else:
            assert outcome == grpc.StatusCode.INVALID_ARGUMENT, case
            prefix = f'invalid allocation request for "{resource}": invalid request: '
            assert details.startswith(prefix)
            if case["case"] == "unknown_id":
                assert details == case["details"]  # NVIDIA's text, word for word
            if case["case"] == "huge_request":
                assert "x0" in details and "20000 unknown devices" in details
            if case["case"] == "long_id":
                assert "longer than 1024 bytes" in details


@pytest.mark.parametrize("name", ["default", "timeslice", "index_volume_mounts", "shared_strict"])
def test_parity_with_nvidia_recording(nvidia_node: Any, tmp_path: Path, name: str) -> None:
    node, rec = _start(nvidia_node, tmp_path, name)
    _check_registration_and_inventory(node, rec)
    _check_allocations(node, rec)
    if "bad_input" in rec:
        _check_bad_input(node, rec)


def test_shared_strict_refuses_more_than_one_replica_with_nvidias_text(nvidia_node: Any, tmp_path: Path) -> None:
    node, rec = _start(nvidia_node, tmp_path, "shared_strict")
    ids = [d["ID"] for d in rec["inventory"]["nvidia.com/gpu.shared"]]
    node.devices("nvidia.com/gpu.shared", 3)
    error = node.allocate_error("nvidia.com/gpu.shared", *ids)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ('invalid allocation request for "nvidia.com/gpu.shared": invalid request: '
                               "maximum request size for shared resources is 1; found 3")
