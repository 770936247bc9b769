"""multidp.serving.resource: snapshot versions change only for what the kubelet sees; replicas."""

from __future__ import annotations

from snapshot_helpers import snapshot_of

from multidp.model import Device, Health
from multidp.serving.contract import allocation_requests
from multidp.serving.resource import ResourceState


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


def test_health_changes_are_logged_with_the_drivers_reason(caplog):
    state = ResourceState("example.com/w", "t")
    caplog.set_level("INFO", logger="multidp.serving.resource")
    state.update([Device("a"), Device("b")])
    assert not caplog.records  # all healthy from the start: nothing to say
    state.update([Device("a", health=Health.UNHEALTHY, reason="temperature 104 C"), Device("b")])
    state.update([Device("a"), Device("b"), Device("c", health=Health.UNHEALTHY, reason="no /dev/c")])
    state.mark_unhealthy("scan failed")  # said once by the runner, not per device here
    assert [r.getMessage() for r in caplog.records] == [
        "resource example.com/w: device a is Unhealthy: temperature 104 C",
        "resource example.com/w: device a is Healthy again",
        "resource example.com/w: device c is Unhealthy: no /dev/c",
    ]
    caplog.clear()
    state.update([Device(f"d{i}", health=Health.UNHEALTHY) for i in range(15)])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11
    assert lines[-1] == "resource example.com/w: and 5 more devices changed health (not listed here)"
    assert lines[0] == "resource example.com/w: device d0 is Unhealthy: (the driver gave no reason)"


def test_after_a_failed_scan_health_is_logged_against_the_last_scan(caplog):
    """A scan that times out marks everything Unhealthy; the next good scan must name the device that
    really is Unhealthy, not announce the others as recovered (they never changed)."""
    state = ResourceState("nvidia.com/gpu", "t")
    state.update([Device(f"GPU-{i}") for i in range(4)])
    caplog.set_level("INFO", logger="multidp.serving.resource")
    state.mark_unhealthy("scan timed out")
    state.update([Device("GPU-0"), Device("GPU-1"), Device("GPU-2", health=Health.UNHEALTHY, reason="XID 79"),
                  Device("GPU-3")])
    assert [r.getMessage() for r in caplog.records] == ["resource nvidia.com/gpu: device GPU-2 is Unhealthy: XID 79"]
