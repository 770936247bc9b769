"""What the kubelet stand-in knows and hands back, in plain types (no protobuf).

The stand-in keeps one :class:`ResourceView` per resource name, records each
:class:`Registration`, and answers :meth:`KubeletStandIn.allocate` with a
:class:`KubeletAllocation` made of the driver API's own :class:`~multidp.Mount`
and :class:`~multidp.DeviceNode`, so a driver's tests compare what the kubelet
received with what the driver returned, in the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multidp.model import DeviceNode, Mount


class AllocationFailed(Exception):
    """The kubelet would fail the pod (UnexpectedAdmissionError); the message says why."""


@dataclass(frozen=True)
class PluginOptions:
    """The plugin's answer to GetDevicePluginOptions, which the kubelet asks at registration."""

    pre_start_required: bool = False
    get_preferred_allocation_available: bool = False

    @classmethod
    def from_wire(cls, options: Any) -> PluginOptions:
        """From the v1beta1 DevicePluginOptions message."""
        return cls(bool(options.pre_start_required), bool(options.get_preferred_allocation_available))


@dataclass
class Registration:
    """One Register call the stand-in accepted."""

    resource: str
    endpoint: str  # the plugin's socket file name, in the kubelet's directory
    version: str
    options: PluginOptions
    at: float  # time.monotonic() when Register arrived


@dataclass
class ResourceView:
    """What the kubelet knows of one resource (read it under :meth:`KubeletStandIn.wait_devices`).

    ``devices`` maps each advertised ID to (health, NUMA nodes), as of the last
    ListAndWatch message; ``allocated`` holds the IDs the stand-in handed out and
    has not freed, as the kubelet's checkpoint does (it outlives registrations and
    restarts, and :meth:`KubeletStandIn.restore_checkpoint` seeds it); ``stream_open``
    is false once the plugin's stream ended (every device then reads Unhealthy);
    ``updates`` counts the messages taken.
    """

    name: str
    endpoint: str = ""
    options: PluginOptions | None = None
    devices: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # id -> (health, numa)
    allocated: set[str] = field(default_factory=set)
    updates: int = 0
    last_update_at: float = 0.0
    stream_open: bool = False
    channel: Any = None  # the stand-in's gRPC channel to the plugin, while connected

    @property
    def capacity(self) -> int:
        """How many IDs the node advertises (the kubelet's Capacity)."""
        return len(self.devices)

    @property
    def healthy(self) -> list[str]:
        """The IDs that are Healthy, in the plugin's order."""
        return [i for i, (health, _) in self.devices.items() if health == "Healthy"]

    @property
    def allocatable(self) -> int:
        """How many healthy IDs the node advertises (the kubelet's Allocatable)."""
        return len(self.healthy)

    @property
    def free(self) -> list[str]:
        """The healthy IDs no pod holds: what the kubelet would hand to the next pod."""
        return [i for i in self.healthy if i not in self.allocated]

    @property
    def stale(self) -> set[str]:
        """Held IDs the plugin no longer advertises (after a switch of plugins, say): the kubelet keeps
        them in its checkpoint for the pods that hold them, but can give the plugin none of them."""
        return self.allocated - self.devices.keys()


@dataclass(frozen=True)
class KubeletAllocation:
    """One container's Allocate answer as the kubelet received it, after the host's encoding.

    ``device_ids`` are the IDs the stand-in asked for; ``cdi_devices`` are the
    fully qualified CDI names of the answer's CDI field (an annotation the driver
    asked for instead is in ``annotations``).
    """

    device_ids: tuple[str, ...]
    envs: dict[str, str]
    mounts: list[Mount]
    device_nodes: list[DeviceNode]
    annotations: dict[str, str]
    cdi_devices: list[str]

    @property
    def devices(self) -> list[DeviceNode]:
        """:attr:`device_nodes` under the kubelet's own name for them."""
        return self.device_nodes

    def describe(self) -> list[str]:
        """One line per env, device node, mount, annotation and CDI device, for people to read."""
        lines = [f"env {k}={v}" for k, v in sorted(self.envs.items())]
        lines += [f"device {d.host_path} -> {d.container_path} ({d.permissions})" for d in self.device_nodes]
        lines += [f"mount {m.host_path} -> {m.container_path}{' (ro)' if m.read_only else ''}" for m in self.mounts]
        lines += [f"annotation {k}={v}" for k, v in sorted(self.annotations.items())]
        return lines + [f"CDI device {name}" for name in self.cdi_devices]

    @classmethod
    def from_wire(cls, device_ids: list[str], response: Any) -> KubeletAllocation:
        """From a v1beta1 ContainerAllocateResponse."""
        return cls(
            device_ids=tuple(device_ids),
            envs=dict(response.envs),
            mounts=[Mount(m.container_path, m.host_path, m.read_only) for m in response.mounts],
            device_nodes=[DeviceNode(d.container_path, d.host_path, d.permissions) for d in response.devices],
            annotations=dict(response.annotations),
            cdi_devices=[c.name for c in response.cdi_devices],
        )
