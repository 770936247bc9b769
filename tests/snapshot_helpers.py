"""A resource's snapshot built from devices, for the unit tests of snapshots, the contract and picking.

A unique module name (test suites run together); pytest puts this folder on sys.path.
"""

from __future__ import annotations

from multidp.model import Device
from multidp.serving.resource import ResourceState, Snapshot


def snapshot_of(*devices: Device) -> Snapshot:
    state = ResourceState("example.com/w", "t")
    state.update(list(devices))
    return state.snapshot
