"""The v1beta1 messages and stubs, for tests that talk to an endpoint themselves.

Drivers' tests import them from here (``from multidp.testing import v1beta1``)
rather than from the host's generated code, which may move.
"""

from __future__ import annotations

from typing import Any

from multidp.api import pb as v1beta1
from multidp.api import pb_grpc as v1beta1_grpc


def allocate_request(*containers: list[str]) -> Any:
    """An AllocateRequest with one container request per list of IDs."""
    return v1beta1.AllocateRequest(
        container_requests=[v1beta1.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers])


def preferred_request(available: list[str], size: int, must_include: list[str] | None = None) -> Any:
    """A PreferredAllocationRequest for one container."""
    return v1beta1.PreferredAllocationRequest(container_requests=[v1beta1.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=must_include or [], allocation_size=size)])


def response_dict(response: Any) -> dict[str, Any]:
    """A ContainerAllocateResponse as plain data (envs, annotations, mounts, devices, cdi_devices)."""
    return {
        "envs": dict(response.envs),
        "annotations": dict(response.annotations),
        "mounts": [{"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
                   for m in response.mounts],
        "devices": [{"container_path": d.container_path, "host_path": d.host_path, "permissions": d.permissions}
                    for d in response.devices],
        "cdi_devices": [c.name for c in response.cdi_devices],
    }


__all__ = ["allocate_request", "preferred_request", "response_dict", "v1beta1", "v1beta1_grpc"]
