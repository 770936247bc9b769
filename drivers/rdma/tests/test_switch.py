"""Switching a node from Mellanox's plugin to multidp while pods hold shares.

The kubelet checkpoints the device IDs of running pods and, after a plugin restart, counts only
those it still finds advertised. The stand-in's checkpoint (``restore_checkpoint``) stands for the
IDs Mellanox's plugin handed out; it outlives registrations, as the kubelet's outlives the plugin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from multidp.testing import AllocationFailed, running_host

import multidp_rdma.plugin
from multidp_rdma.faketree import FakeRdmaNode

RESOURCE = "rdma/hca_shared_devices_a"
WAIT_S = 10.0


def _mellanox_file(tmp_path: Path) -> str:
    path = tmp_path / "config.json"  # the file Mellanox's plugin ran with
    path.write_text(json.dumps({"configList": [{"resourceName": "hca_shared_devices_a", "rdmaHcaMax": 4,
                                                "selectors": {"vendors": ["15b3"]}}]}))
    return str(path)


def _held_by_running_pods(kubelet: Any, ids: set[str]) -> None:
    """What the kubelet's checkpoint holds from Mellanox's plugin: IDs strconv.Itoa(n)."""
    kubelet.restore_checkpoint({RESOURCE: sorted(ids)})


def _serve(kubelet: Any, fake: FakeRdmaNode, section: dict[str, Any]) -> Any:
    return running_host(kubelet.directory, {"rdma": multidp_rdma.plugin}, drivers={"rdma": section},
                        sysfs_root=fake.sys, dev_root=fake.dev)


def test_mellanox_ids_keep_the_checkpoint_valid(kubelet, standard: FakeRdmaNode, tmp_path: Path) -> None:
    _held_by_running_pods(kubelet, {"0", "1"})
    with _serve(kubelet, standard, {"configFile": _mellanox_file(tmp_path)}):
        view = kubelet.wait_devices(RESOURCE, lambda v: v.allocatable == 4, WAIT_S, "four shares")
        assert {"0", "1"} <= set(view.devices) and not view.stale  # every checkpointed ID still exists
        kubelet.allocate(RESOURCE, 2)
        with pytest.raises(AllocationFailed, match="only 0 available"):
            kubelet.allocate(RESOURCE, 1)  # rdmaHcaMax holds: no share beyond the fourth
    assert kubelet.resources[RESOURCE].allocated == {"0", "1", "2", "3"}


def test_ids_are_stable_across_a_restart(kubelet, standard: FakeRdmaNode, tmp_path: Path) -> None:
    path = _mellanox_file(tmp_path)
    with _serve(kubelet, standard, {"configFile": path}):
        first = dict(kubelet.wait_devices(RESOURCE, lambda v: v.allocatable == 4, WAIT_S, "four shares").devices)
        kubelet.allocate(RESOURCE, 3)
    with _serve(kubelet, standard, {"configFile": path}):
        kubelet.wait_for(lambda: kubelet.resources[RESOURCE].stream_open and kubelet.registration_count(RESOURCE) == 2,
                         WAIT_S, "registered again")
        view = kubelet.wait_devices(RESOURCE, lambda v: v.allocatable == 4, WAIT_S, "four shares again")
        assert view.devices == first
        with pytest.raises(AllocationFailed, match="only 1 available"):
            kubelet.allocate(RESOURCE, 2)


def test_the_host_replica_ids_would_not_keep_it(kubelet, standard: FakeRdmaNode, tmp_path: Path) -> None:
    # Why Mellanox's IDs are the default for its file: with <pool>::n the checkpointed IDs are gone,
    # and the kubelet hands out rdmaHcaMax more shares beside those of the running pods.
    _held_by_running_pods(kubelet, {"0", "1"})
    with _serve(kubelet, standard, {"configFile": _mellanox_file(tmp_path), "sharedIds": "replicas"}):
        view = kubelet.wait_devices(RESOURCE, lambda v: v.allocatable == 4, WAIT_S, "four shares")
        assert view.stale == {"0", "1"}
        kubelet.allocate(RESOURCE, 4)  # six shares in use on a pool of four
