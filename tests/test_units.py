"""Unit tests where they pay: names, snapshots, the error contract, picking devices, CDI documents."""

from __future__ import annotations

import json

import pytest

from multidp.errors import InvalidRequest
from multidp.model import CDIDeviceSpec, CDISpec, Device, DeviceNode, Health, Mount, PreferenceRequest
from multidp.names import base_id, list_some, resource_name_problem, shorten
from multidp.preferred import pack_replicas, spread_replicas
from multidp.serving.cdi import CDIRegistry, spec_document
from multidp.serving.contract import allocation_requests, preference_requests
from multidp.serving.picking import repaired
from multidp.serving.resource import ResourceState
from multidp.serving.sockets import socket_name


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "fpga.intel.com/af-695.d84.aVKNtusxV3qMNmj5-qCB9thCTcSko8QT-J5D",
                                  "rdma/hca_shared_devices_a", "amd.com/xilinx_u200_xdma_201830_2-1561465320"])
def test_valid_resource_names(name):
    assert resource_name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("gpu", "exactly one '/'"),
    ("a/b/c", "exactly one '/'"),
    ("kubernetes.io/gpu", "kubernetes.io/"),
    ("requests.nvidia.com/gpu", "requests."),
    ("Nvidia.com/gpu", "not a lowercase DNS-1123 subdomain"),
    ("nvidia.com/", "empty"),
    ("nvidia.com/" + "g" * 64, "64 characters long (at most 63)"),
    ("nvidia.com/-gpu", "must start and end with a letter or digit"),
    ("nvidia.com\n/gpu", "not a lowercase DNS-1123 subdomain"),  # "$" alone would let a final newline through
    ("nvidia.com/gpu\n", "must start and end with a letter or digit"),
])
def test_invalid_resource_names(name, problem):
    assert problem in (resource_name_problem(name) or "")


def test_socket_names_are_short_and_stable():
    long_name = "fpga.intel.com/af-695.d84.aVKNtusxV3qMNmj5-qCB9thCTcSko8QT-J5DNoP5BAs"
    assert socket_name("fpga", long_name) == socket_name("fpga", long_name)
    assert len(socket_name("fpga", long_name)) == len("multidp-fpga-12345678.sock")
    assert socket_name("fpga", long_name) != socket_name("fpga", long_name + "x")


def test_shorten_and_list_some():
    assert shorten("x" * 100, 10) == "xxxxxxxxxx… (100 characters)"
    assert list_some(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"


def snapshot_of(*devices: Device):
    state = ResourceState("example.com/w", "t")
    state.update(list(devices))
    return state.snapshot


def test_snapshot_versions_change_only_for_what_the_kubelet_sees():
    state = ResourceState("example.com/w", "t")
    assert state.update([Device("a"), Device("b", numa_nodes=(1,))])
    first = state.snapshot.version
    assert not state.update([Device("a", info={"model": "x"}), Device("b", numa_nodes=(1,), reason="note")])
    assert state.snapshot.version == first
    assert state.snapshot.by_id["a"].info == {"model": "x"}
    assert state.update([Device("a", health=Health.UNHEALTHY), Device("b", numa_nodes=(1,))])
    assert state.mark_unhealthy("scan failed") is True
    assert all(d.reason == "scan failed" for _, d in state.snapshot.advertised())
    assert state.withdraw() == state.snapshot.version and state.snapshot.ids == ()


def test_replicas_are_advertised_and_map_back():
    snap = snapshot_of(Device("gpu-0", replicas=3), Device("gpu-1"))
    assert snap.ids == ("gpu-0::0", "gpu-0::1", "gpu-0::2", "gpu-1")
    [request] = allocation_requests("r", snap, [["gpu-0::2", "gpu-1", "gpu-0::0", "gpu-1"]])
    assert request.device_ids == ("gpu-0", "gpu-1")
    assert request.requested_ids == ("gpu-0::2", "gpu-1", "gpu-0::0")


def test_contract_order_empty_then_long_then_unknown():
    snap = snapshot_of(Device("a"))
    with pytest.raises(InvalidRequest, match="names no devices"):
        allocation_requests("r", snap, [["z" * 2000], []])
    with pytest.raises(InvalidRequest, match="longer than 1024 bytes"):
        allocation_requests("r", snap, [["nope"], ["z" * 2000]])
    with pytest.raises(InvalidRequest, match="unknown device: nope"):
        allocation_requests("r", snap, [["a"], ["nope"]])


def test_preference_requests_validation_and_folding():
    snap = snapshot_of(Device("a"), Device("b"), Device("c"))
    [req] = preference_requests("r", snap, [(["a", "b", "b", "c"], ["b", "b"], 2)])
    assert (req.available, req.must_include, req.size) == (("a", "b", "c"), ("b",), 2)


def test_pack_by_numa_prefers_must_include_node_then_best_fit():
    snap = snapshot_of(*(Device(f"d{i}", numa_nodes=(n,)) for i, n in enumerate([0, 0, 0, 1, 1, 2])))
    from multidp.serving.picking import numa_pick

    req = PreferenceRequest("r", tuple(f"d{i}" for i in range(6)), (), 2)
    assert numa_pick(req, snap) == ["d3", "d4"]  # the smallest node that fits both
    req = PreferenceRequest("r", tuple(f"d{i}" for i in range(6)), ("d5",), 3)
    assert numa_pick(req, snap)[:1] == ["d5"] and numa_pick(req, snap)[1:] == ["d3", "d4"]
    req = PreferenceRequest("r", tuple(f"d{i}" for i in range(6)), (), 4)
    assert numa_pick(req, snap) == ["d0", "d1", "d2", "d3"]


def test_replica_helpers():
    ids = tuple(f"g{g}::{r}" for g in range(3) for r in range(3))
    assert base_id("GPU-1::12") == "GPU-1" and base_id("plain") == "plain" and base_id("a::b") == "a::b"
    spread = spread_replicas(PreferenceRequest("r", ids, (), 3))
    assert sorted(base_id(i) for i in spread) == ["g0", "g1", "g2"]
    busy = PreferenceRequest("r", ("g0::1", "g0::2", "g1::0", "g1::1", "g1::2"), (), 1)
    assert base_id(spread_replicas(busy)[0]) == "g1"  # g0 already has one replica taken
    packed = pack_replicas(PreferenceRequest("r", ids, ("g2::0",), 3))
    assert [base_id(i) for i in packed] == ["g2", "g2", "g2"]


def test_repaired_answers():
    req = PreferenceRequest("r", ("a", "b", "c", "d"), ("a",), 2)
    assert repaired(req, ["a", "c"], ["a", "b"]) == (["a", "c"], "")
    assert repaired(req, ["c", "zz", "c"], ["a", "b"]) == (
        ["a", "c"], "repeated IDs, 1 IDs not available, must-include IDs left out")
    assert repaired(req, ["b", "c", "d"], ["a", "b"])[0] == ["a", "b"]
    assert repaired(req, [], ["a", "d"]) == (["a", "d"], "must-include IDs left out, too few IDs")


def test_cdi_document_and_registry(tmp_path):
    spec = CDISpec("example.com/widget", [CDIDeviceSpec("w0", [DeviceNode("/dev/w0", "/dev/w0", "rw")],
                                                        {"W": "0"}, [Mount("/c", "/h", read_only=True)])],
                   common_device_nodes=[DeviceNode.same_path("/dev/wctl")])
    doc = spec_document(spec)
    assert doc["devices"][0]["containerEdits"] == {
        "deviceNodes": [{"path": "/dev/w0", "hostPath": "/dev/w0", "permissions": "rw"}],
        "env": ["W=0"],
        "mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["ro", "nosuid", "nodev", "bind"]}],
    }
    assert doc["containerEdits"]["deviceNodes"][0]["path"] == "/dev/wctl"
    registry = CDIRegistry(tmp_path / "cdi")
    registry.publish("t", [spec])
    written = json.loads(registry.file_for("t", "example.com/widget").read_text())
    assert written == doc
    assert registry.problem("t", ["example.com/widget=w0"]) is None
    assert "holds example.com/widget=w9" in registry.problem("t", ["example.com/widget=w9"])
    assert registry.problem("t", ["other.com/gpu=0"]) is None  # another tool's kind: not ours to check
    registry.publish("t", [CDISpec("Bad Kind", [])])
    assert "is not vendor/class" in registry.problem("t", ["example.com/widget=w0"])


def test_list_encoder_matches_protobuf_and_reuses_entries():
    from multidp.api import pb
    from multidp.serving.wire import ListEncoder

    state = ResourceState("example.com/w", "t")
    state.update([Device("a", numa_nodes=(0, 1)), Device("b", replicas=2), Device("é" * 200, numa_nodes=(300,))])
    encoder = ListEncoder()
    decoded = pb.ListAndWatchResponse.FromString(encoder.encode(state.snapshot))
    expected = pb.ListAndWatchResponse(devices=[
        pb.Device(ID="a", health="Healthy", topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=0), pb.NUMANode(ID=1)])),
        pb.Device(ID="b::0", health="Healthy"), pb.Device(ID="b::1", health="Healthy"),
        pb.Device(ID="é" * 200, health="Healthy", topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=300)]))])
    assert decoded == expected
    state.update([Device("a", Health.UNHEALTHY, numa_nodes=(0, 1)), Device("b", replicas=2)])
    decoded = pb.ListAndWatchResponse.FromString(encoder.encode(state.snapshot))
    assert [(d.ID, d.health) for d in decoded.devices] == [("a", "Unhealthy"), ("b::0", "Healthy"),
                                                           ("b::1", "Healthy")]
    assert state.update([]) and encoder.encode(state.snapshot) == b""


def test_call_pool_grows_only_when_busy_and_drops_abandoned_calls():
    import threading
    import time

    from multidp.plugins.calls import CallPool, CallTimeout, PoolClosed

    pool = CallPool("t", 3)
    assert pool.call(lambda x: x * 2, 21, timeout=5) == 42
    assert pool.call(lambda: 1, timeout=5) == 1
    assert pool._started == 1  # one worker was enough for calls one after another
    release = threading.Event()
    ran: list[int] = []
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)  # the first worker hangs
    assert pool.call(lambda: "still answering", timeout=5) == "still answering"
    assert pool._started == 2
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)
    with pytest.raises(CallTimeout):
        pool.call(release.wait, timeout=0.05)  # three hung: the pool is full
    with pytest.raises(CallTimeout):
        pool.call(ran.append, 1, timeout=0.05)  # queued behind them, then given up on
    release.set()
    time.sleep(0.2)
    assert ran == []  # the abandoned call was dropped, not run late
    with pytest.raises(ZeroDivisionError):
        pool.call(lambda: 1 / 0, timeout=5)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.call(lambda: 1, timeout=5)


def test_json_log_lines(capsys):
    import json
    import logging

    from multidp.cli.logsetup import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("json", "info")
    try:
        logging.getLogger("multidp.test").warning("resource %s: %s", "example.com/w", "waiting")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("multidp.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "multidp.test"
    assert lines[0]["message"] == "resource example.com/w: waiting" and lines[0]["time"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exception"]
