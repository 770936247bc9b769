"""held(): the kubelet's PodResources List over a real unix socket, against FakePodResources."""

from __future__ import annotations

import shutil
import socket as socketlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from multidp.api import podresources_v1_pb2 as podres
from multidp.dra.podresources import Held, PodResourcesUnavailable, held
from multidp.testing.podresources import FakePodResources
from multidp.testing.util import short_socket_dir

GPU = "example.com/gpu"
NIC = "example.com/nic"
DRIVER = "gpu.multidp.io"
POOL = "node1/gpu"


@pytest.fixture
def folder() -> Iterator[Path]:
    path = short_socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet(folder: Path) -> Iterator[FakePodResources]:
    with FakePodResources(folder / "kubelet.sock") as fake:
        yield fake


def test_device_plugin_devices_of_several_pods_with_replicas_folded(kubelet: FakePodResources) -> None:
    kubelet.pods = [
        ("default", "train", "main", {GPU: ["GPU-a", "GPU-b::0"], NIC: ["0000:3b:00.0"]}, []),
        ("default", "train", "sidecar", {GPU: ["GPU-b::1"]}, []),
        ("ml", "infer", "main", {GPU: ["GPU-b::2", "GPU-c::0"]}, []),
    ]
    answer = held(kubelet.socket_path)
    assert answer.devices == {GPU: frozenset({"GPU-a", "GPU-b", "GPU-c"}), NIC: frozenset({"0000:3b:00.0"})}
    assert answer.claims == frozenset()
    assert answer.holder(GPU, "GPU-a") == "default/train"
    # Two containers of one pod name it once; the replica ID finds the device behind it.
    assert answer.holder(GPU, "GPU-b::7") == "default/train, ml/infer"
    assert answer.holder(NIC, "0000:3b:00.0") == "default/train"
    assert answer.holder(GPU, "GPU-z") is None
    assert answer.holder(NIC, "GPU-a") is None


def test_dra_claims(kubelet: FakePodResources) -> None:
    kubelet.pods = [
        ("default", "sim", "main", {}, [(DRIVER, POOL, "gpu-0"), (DRIVER, POOL, "gpu-1")]),
        ("team", "render", "main", {GPU: ["GPU-a"]}, [("nic.multidp.io", "node1/nic", "nic-3")]),
    ]
    answer = held(kubelet.socket_path)
    assert answer.claims == frozenset({(DRIVER, POOL, "gpu-0"), (DRIVER, POOL, "gpu-1"),
                                       ("nic.multidp.io", "node1/nic", "nic-3")})
    assert answer.devices == {GPU: frozenset({"GPU-a"})}
    assert answer.claim_holder(DRIVER, POOL, "gpu-1") == "default/sim"
    assert answer.claim_holder("nic.multidp.io", "node1/nic", "nic-3") == "team/render"
    assert answer.claim_holder(DRIVER, POOL, "gpu-2") is None


def test_a_node_without_pods_holds_nothing(kubelet: FakePodResources) -> None:
    assert held(kubelet.socket_path) == Held()
    assert kubelet.calls == 1


def test_a_missing_socket_says_what_to_mount(folder: Path) -> None:
    missing = folder / "kubelet.sock"
    with pytest.raises(PodResourcesUnavailable) as caught:
        held(missing)
    assert str(missing) in str(caught.value)
    assert "hostPath /var/lib/kubelet/pod-resources" in str(caught.value)


def test_unavailable_names_the_socket_and_the_status(kubelet: FakePodResources) -> None:
    kubelet.unavailable = True
    with pytest.raises(PodResourcesUnavailable) as caught:
        held(kubelet.socket_path)
    message = str(caught.value)
    assert str(kubelet.socket_path) in message
    assert "UNAVAILABLE" in message and "PodResources is unavailable" in message


def test_a_socket_nobody_listens_on_is_unavailable(folder: Path) -> None:
    # What a kubelet that died leaves behind: the socket file, nobody accepting.
    path = folder / "kubelet.sock"
    stale = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        stale.bind(str(path))
        with pytest.raises(PodResourcesUnavailable, match="UNAVAILABLE"):
            held(path)
    finally:
        stale.close()


def test_fields_this_proto_leaves_out_are_skipped() -> None:
    # A kubelet also sends cpu_ids (3) and memory (4) per container; an older one, class_name (1).
    container = podres.ContainerResources(name="main").SerializeToString()
    container += bytes([3 << 3 | 0, 7])  # cpu_ids: varint 7
    dynamic = bytes([1 << 3 | 2, 3]) + b"gpu"  # class_name: "gpu"
    parsed = podres.ContainerResources.FromString(container + bytes([5 << 3 | 2, len(dynamic)]) + dynamic)
    assert parsed.name == "main"
    assert len(parsed.dynamic_resources) == 1


def test_a_kubelet_that_never_answers_runs_out_the_deadline(kubelet: FakePodResources) -> None:
    kubelet.hang = True
    with pytest.raises(PodResourcesUnavailable, match="DEADLINE_EXCEEDED") as caught:
        held(kubelet.socket_path, timeout=0.2)
    assert str(kubelet.socket_path) in str(caught.value)
