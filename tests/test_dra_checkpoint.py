"""The DRA checkpoint and names: what survives a restart, and what is never trusted."""

from __future__ import annotations

import json
import re

import pytest

from multidp.dra.checkpoint import (
    PREPARED,
    Checkpoint,
    CheckpointCorrupt,
    Contents,
    PreparedClaim,
    PreparedDevice,
    read_boot_id,
)
from multidp.dra.names import device_name, pool_name

DEVICE = PreparedDevice("gpu", "node-a/nvidia.com/gpu", "gpu-0", "nvidia.com/gpu", "GPU-0", ("nvidia.com/gpu=0",))


def claim(uid: str = "u1") -> PreparedClaim:
    return PreparedClaim(uid, "ns", f"claim-{uid}", PREPARED, (DEVICE,), ("/run/cdi/x.json",), "boot-1")


def test_round_trip_keeps_every_field(tmp_path):
    checkpoint = Checkpoint(tmp_path / "sub" / "checkpoint.json")
    checkpoint.save(Contents({"u1": claim("u1"), "u2": claim("u2")}))
    assert checkpoint.load().claims == {"u1": claim("u1"), "u2": claim("u2")}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["checkpoint.json"]  # no temporary file left


def test_no_file_is_an_empty_checkpoint(tmp_path):
    assert Checkpoint(tmp_path / "none.json").load().claims == {}


@pytest.mark.parametrize(("damage", "says"), [
    (lambda doc: doc["data"]["claims"]["u1"].update(name="other"), "checksum does not match"),
    (lambda doc: doc.update(version=2), "version 2, this multidp reads 1"),
    (lambda doc: doc.update(kind="Something"), "not a MultidpDRACheckpoint"),
])
def test_a_changed_file_is_refused_naming_it(tmp_path, damage, says):
    path = tmp_path / "checkpoint.json"
    Checkpoint(path).save(Contents({"u1": claim()}))
    document = json.loads(path.read_text())
    damage(document)
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointCorrupt, match=re.escape(says)) as caught:
        Checkpoint(path).load()
    assert str(path) in str(caught.value)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.json"
    Checkpoint(path).save(Contents({"u1": claim()}))
    path.write_text(path.read_text()[:40])
    with pytest.raises(CheckpointCorrupt, match="not JSON"):
        Checkpoint(path).load()


def test_a_bad_state_is_refused_even_with_a_matching_checksum(tmp_path):
    from multidp.dra import checkpoint as module

    path = tmp_path / "checkpoint.json"
    data = {"claims": {"u1": {"namespace": "ns", "name": "c", "state": "half", "devices": []}}}
    path.write_text(json.dumps({"kind": module.KIND, "version": 1, "checksum": module._checksum(data), "data": data}))
    with pytest.raises(CheckpointCorrupt, match="claim u1 has state 'half'"):
        Checkpoint(path).load()


def test_boot_id(tmp_path):
    (tmp_path / "boot_id").write_text("0b8f\n")
    assert read_boot_id(tmp_path / "boot_id") == "0b8f"
    assert read_boot_id(tmp_path / "missing") == ""


@pytest.mark.parametrize("driver_id", ["GPU-8c3a5e5b-1d2f-4b6a-9a3e-0123456789ab", "0000:3b:00.1", "mlx5_0",
                                       "MIG-GPU-1/2/3", "", "X" * 200, "-a-"])
def test_device_names_are_dns_labels_that_depend_on_the_id_alone(driver_id):
    name = device_name(driver_id)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name)
    assert device_name(driver_id) == name


def test_ids_that_are_labels_keep_their_name_and_others_never_meet():
    assert device_name("widget-0") == "widget-0"
    assert device_name("mlx5_0") != device_name("mlx5-0")
    assert device_name("GPU-ab") != device_name("gpu-ab")
    assert pool_name("node-a", "nvidia.com/gpu") == "node-a/nvidia.com/gpu"


def test_pool_names_are_dns_subdomains_even_for_resources_with_capitals_and_underscores():
    from multidp.dra.attributes import resource_value

    pattern = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    for resource in ("amd.com/MA35", "amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-1617814830", "rdma/hca",
                     "fpga.intel.com/af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs"):
        name = pool_name("node-a", resource)
        assert all(re.fullmatch(pattern, part) and len(part) <= 63 for part in name.split("/")), name
        assert len(resource_value(resource).encode()) <= 64
    assert pool_name("node-a", "nvidia.com/gpu") == "node-a/nvidia.com/gpu"
    assert pool_name("node-a", "amd.com/MA35") != pool_name("node-a", "amd.com/ma35")
