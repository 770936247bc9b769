"""multidp.serving.contract: the order in which bad requests are refused, and preference requests folded."""

from __future__ import annotations

import pytest
from snapshot_helpers import snapshot_of

from multidp.errors import InvalidRequest
from multidp.model import Device
from multidp.serving.contract import allocation_requests, preference_requests


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
