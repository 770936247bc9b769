"""Shared helpers: a multidp host with the nvidia driver over a fake NVML, through the kubelet stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest
from multidp.testing import Host, KubeletStandIn, allocate_request, preferred_request, v1beta1

from multidp_nvidia.fake_nvml import FakeMachine, FakeNvml
from multidp_nvidia.machines import write_host_files
from multidp_nvidia.plugin import NvidiaPlugin

FIXTURES = Path(__file__).parent / "fixtures"


def recording(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"nvidia_plugin_{name}.json").read_text())


class Node(msgspec.Struct):
    host: Host
    fake: FakeNvml
    plugin: NvidiaPlugin
    roots: dict[str, Path]
    kubelet: KubeletStandIn

    @property
    def driver(self) -> Any:
        return self.plugin.drivers[-1]

    def devices(self, resource: str, count: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
        view = self.kubelet.wait_devices(
            resource, lambda v: v.updates > 0 and (count is None or v.capacity == count), timeout,
            f"{count if count is not None else 'some'} devices")
        return dict(view.devices)

    def wait_health(self, resource: str, device_id: str, health: str, timeout: float = 10.0) -> None:
        self.kubelet.wait_devices(resource, lambda v: v.devices.get(device_id, ("",))[0] == health, timeout,
                                  f"{device_id} {health}")

    def allocate(self, resource: str, *ids: str) -> v1beta1.ContainerAllocateResponse:
        request = allocate_request(list(ids))
        return self.kubelet.stub(resource).Allocate(request, timeout=10).container_responses[0]

    def allocate_error(self, resource: str, *ids: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.allocate(resource, *ids)
        return caught.value

    def preferred(self, resource: str, available: list[str], size: int, must: list[str] | None = None) -> list[str]:
        request = preferred_request(available, size, must)
        answer = self.kubelet.stub(resource).GetPreferredAllocation(request, timeout=10)
        return list(answer.container_responses[0].deviceIDs)


@pytest.fixture
def nvidia_node(multidp_host: Callable[..., Host], kubelet: KubeletStandIn,
                tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``nvidia_node(machine, config={...}, environ={...})``: a started host over ``machine``; other
    keyword arguments are host settings (``driver_retry={"first": 0.05, "max": 0.2}``)."""

    def start(machine: FakeMachine, config: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
              recover_after: float | None = None, driver_files: bool = True, **settings: Any) -> Node:
        roots = write_host_files(machine, tmp_path / "node", driver_files)
        fake = FakeNvml(machine)
        plugin = NvidiaPlugin(fake, recover_after)
        section = {"procRoot": str(roots["proc"]), "containerDriverRoot": str(roots["driver"]), **(config or {})}
        host = multidp_host({"nvidia": plugin}, drivers={"nvidia": section}, environ=environ or {},
                            sysfs_root=roots["sys"], dev_root=roots["dev"], **settings)
        return Node(host, fake, plugin, roots, kubelet)

    yield start


def poll_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for state the kubelet stand-in does not see (driver internals, files)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def write_yaml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
