"""Picking devices: NUMA packing and answer repair (multidp.serving.picking), replica helpers
(multidp.preferred)."""

from __future__ import annotations

from snapshot_helpers import snapshot_of

from multidp.model import Device, PreferenceRequest
from multidp.names import base_id
from multidp.preferred import pack_replicas, spread_replicas
from multidp.serving.picking import repaired


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
