"""The data a driver and the host exchange.

Drivers build and return these plain dataclasses; the host alone turns them
into Device Plugin API messages. Nothing here knows about protobuf or gRPC,
so the same drivers can later be served through a second front-end (DRA).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class Health(enum.StrEnum):
    """Health of one device, with the exact strings the kubelet expects."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclass(frozen=True, slots=True)
class SemVer:
    """A semantic version (semver 2.0.0, e.g. ``"12.4.0"``): a DRA device attribute of version type."""

    value: str


AttributeValue = bool | int | str | SemVer


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a resource, as the driver sees it now.

    ``id`` is the device ID advertised to the kubelet (for a device with
    ``replicas``, the base of the replica IDs ``<id>::<n>``). ``reason`` says
    why a device is unhealthy (shown in logs and ``multidp devices``);
    ``info`` holds a few human-readable facts for ``multidp devices``.
    ``cdi_devices`` (driver API 1.2) are the fully qualified CDI names
    (``vendor/class=name``) the driver's answers for this device will name:
    while the host cannot write the driver's CDI specs (a spec refused, the CDI
    directory unwritable, ``cdi_specs()`` failing), such a device is advertised
    Unhealthy with the reason, so that no pod is sent to it only to fail.

    ``attributes`` and ``capacity`` (driver API 1.4) describe the device to DRA's
    scheduler (ResourceSlices; the Device Plugin API has no place for them).
    A name is a C identifier of at most 32 characters (the driver's own, e.g.
    ``productName``) or ``<DNS subdomain>/<C identifier>`` for one defined by
    others (e.g. ``resource.kubernetes.io/pciBusID``); at most 32 attributes and
    capacities together. Attribute values are ``bool``, ``int``, ``str`` (at most
    64 bytes) or :class:`SemVer`; capacities are Kubernetes quantities (``"80Gi"``)
    or integers. The host adds ``resource.kubernetes.io/numaNode`` from
    ``numa_nodes`` when there is exactly one; what breaks these rules is left out
    and logged, naming the device and the attribute.
    """

    id: str
    health: Health = Health.HEALTHY
    numa_nodes: tuple[int, ...] = ()
    replicas: int | None = None
    reason: str = ""
    info: Mapping[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    capacity: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Whether ``health`` is Healthy."""
        return self.health is Health.HEALTHY


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount into the container."""

    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A device node made available in the container (permissions: r, w, m)."""

    container_path: str
    host_path: str
    permissions: str = "rw"

    @classmethod
    def same_path(cls, path: str, permissions: str = "rw") -> DeviceNode:
        """A device node at the same path in the host and the container."""
        return cls(container_path=path, host_path=path, permissions=permissions)


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """What one container asks of a resource, after the host's validation.

    ``device_ids`` are the driver's own device IDs: replica suffixes removed,
    duplicates folded, kubelet order kept. ``requested_ids`` are the IDs as
    the kubelet sent them (duplicates folded), for policies that count
    replicas, such as refusing shared requests larger than one.

    Through DRA (driver API 1.3) ``claim_uid`` and ``request_name`` name the
    ResourceClaim and the request in it that this answer is for (a driver may
    name per-claim things after them); through the Device Plugin API both are
    empty.
    """

    resource: str
    device_ids: tuple[str, ...]
    requested_ids: tuple[str, ...]
    claim_uid: str = ""
    request_name: str = ""


@dataclass(slots=True)
class ContainerAllocation:
    """A driver's answer for one container.

    ``cdi_devices`` are fully qualified CDI names (``vendor/class=name``) that
    go into the CRI ``cdi_devices`` field; ``cdi_annotation_key`` names an
    annotation ``cdi.k8s.io/<key>`` that should carry them instead (both may be
    used). The host de-duplicates ``device_nodes`` and ``mounts`` by container
    path, keeping the first.
    """

    envs: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    device_nodes: list[DeviceNode] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    cdi_devices: list[str] = field(default_factory=list)
    cdi_field: bool = True
    cdi_annotation_key: str | None = None


@dataclass(frozen=True, slots=True)
class PreferenceRequest:
    """GetPreferredAllocation for one container, already validated.

    IDs are as advertised (replica IDs keep their ``::<n>`` suffix);
    ``size`` is at least ``len(must_include)`` and at most ``len(available)``.
    """

    resource: str
    available: tuple[str, ...]
    must_include: tuple[str, ...]
    size: int


# The OCI lifecycle stages a CDI hook may name (CDI's validHookNames).
CDI_HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


@dataclass(frozen=True, slots=True)
class CDIHook:
    """A program the container runtime runs at one OCI lifecycle stage (``hook_name``).

    ``path`` is absolute on the host; ``args`` is the whole argv, so ``args[0]``
    is the program name, as in OCI. ``timeout`` is in seconds (None: no limit).
    """

    hook_name: str
    path: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class CDIDeviceSpec:
    """One device of a CDI spec: its name and the container edits it brings."""

    name: str
    device_nodes: Sequence[DeviceNode] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    hooks: Sequence[CDIHook] = ()


@dataclass(frozen=True, slots=True)
class CDISpec:
    """A CDI spec the host writes for a driver (``kind`` is ``vendor/class``)."""

    kind: str
    devices: Sequence[CDIDeviceSpec]
    common_device_nodes: Sequence[DeviceNode] = ()
    common_env: Mapping[str, str] = field(default_factory=dict)
    common_mounts: Sequence[Mount] = ()
    common_hooks: Sequence[CDIHook] = ()

    def qualified_name(self, device_name: str) -> str:
        """The fully qualified CDI name of one of this spec's devices: ``<kind>=<device_name>``."""
        return f"{self.kind}={device_name}"
