"""The shape of the nvidia driver's settings: NVIDIA's config file (v1), plus multidp's additions.

``drivers.nvidia`` in multidp's config accepts NVIDIA's own keys inline (``version``,
``flags``, ``resources``, ``sharing``, ``imex``) and ``configFile``, the path of an NVIDIA
config file, so operators keep the file they have. multidp's additions are
``health``, ``mpsContainerRoot``, ``replicaPolicy``, ``pollInterval``, ``procRoot`` and
``simulatedMachine``; ``resources`` and ``sharing.*.resources[].rename/devices`` are
multidp extensions too, honoured only here (NVIDIA v0.20.0 discards them from its file, and so
does multidp: :mod:`multidp_nvidia.file_naming`).
These structs are strict (multidp's own section); NVIDIA's file is first brought to
their spelling, as NVIDIA's decoder reads it, by :mod:`multidp_nvidia.nvidia_file`.
How the sources combine is in :mod:`multidp_nvidia.settings`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

DEFAULT_IGNORED_XIDS: tuple[int, ...] = (13, 31, 43, 45, 68, 109)

MigStrategy = Literal["none", "single", "mixed"]
DeviceIDStrategy = Literal["uuid", "index"]


class _Section(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Base of every section: camelCase keys as NVIDIA writes them, unknown keys refused."""


class PluginFlags(_Section):
    """``flags.plugin``: how Allocate answers name devices."""

    pass_device_specs: bool | None = None
    device_list_strategy: str | list[str] | None = None
    device_id_strategy: DeviceIDStrategy | None = msgspec.field(default=None, name="deviceIDStrategy")
    cdi_annotation_prefix: str | None = None
    # Where the host's driver root is mounted in this container (CDI spec building).
    container_driver_root: str | None = None
    # The host path of nvidia-ctk / nvidia-cdi-hook named in the CDI spec's hooks; "" writes no hooks.
    nvidia_ctk_path: str | None = msgspec.field(default=None, name="nvidiaCTKPath")
    # distributed | packed: how preferred allocations pick among replicas (multidp's replicaPolicy).
    shared_devices_allocation_policy: str | None = None


class Flags(_Section):
    """``flags``: NVIDIA's command-line flags, as its config file spells them."""

    mig_strategy: MigStrategy | None = None
    fail_on_init_error: bool | None = None
    nvidia_driver_root: str | None = None
    nvidia_dev_root: str | None = None
    gds_enabled: bool | None = None
    mofed_enabled: bool | None = None
    gdrcopy_enabled: bool | None = None
    device_discovery_strategy: str | None = None  # auto | nvml; tegra is refused (settings)
    plugin: PluginFlags | None = None
    # The host folder NVIDIA's MPS control daemon works in (MPS_ROOT); Allocate answers mount from it.
    mps_root: str | None = None
    # Accepted and ignored (logged): they belong to GFD and NFD.
    use_node_feature_api: bool | None = msgspec.field(default=None, name="useNodeFeatureAPI")
    gfd: dict[str, Any] | None = None


class ResourcePattern(_Section):
    """One ``resources.gpus`` / ``resources.mig`` entry: a name for what matches the pattern
    (NVIDIA's wildcard: ``*`` is any text; the pattern must match the whole product name or MIG profile)."""

    pattern: str
    name: str


class Resources(_Section):
    gpus: list[ResourcePattern] = msgspec.field(default_factory=list)
    mig: list[ResourcePattern] = msgspec.field(default_factory=list)


class ReplicatedResource(_Section):
    """One ``sharing.timeSlicing.resources`` / ``sharing.mps.resources`` entry.

    ``devices`` is ``all``, a count (the first N devices by index) or a list of
    GPU indexes (``0``), MIG indexes (``0:1``) or UUIDs; ``rename`` is the
    resource the replicas are served as. NVIDIA's schema has both; multidp honours
    them for time-slicing (for MPS they are ignored, as NVIDIA's MPS daemon ignores them).
    """

    name: str
    replicas: int
    rename: str | None = None
    # Checked as NVIDIA's ReplicatedDevices.UnmarshalJSON does, in multidp_nvidia.replicas.
    devices: str | int | list[Any] = "all"


class ReplicatedResources(_Section):
    """``sharing.timeSlicing`` or ``sharing.mps``: NVIDIA uses one schema for both."""

    rename_by_default: bool | None = None
    fail_requests_greater_than_one: bool | None = None
    resources: list[ReplicatedResource] | None = None


class Sharing(_Section):
    # UNSET when left out: an explicit null is refused, as NVIDIA refuses it (replicas.check_layer).
    time_slicing: ReplicatedResources | None | msgspec.UnsetType = msgspec.UNSET
    # Served like time-slicing plus the MPS pipe and shm mounts; NVIDIA's MPS control daemon
    # (its own DaemonSet, reading the same file) must run on the node.
    mps: ReplicatedResources | None = None


class Imex(_Section):
    """``imex``: IMEX channels injected into every GPU container (NVIDIA allows only ``[]`` or ``[0]``)."""

    channel_ids: list[int] | None = msgspec.field(default=None, name="channelIDs")
    required: bool | None = None


class Health(_Section):
    """multidp's health settings (also accepted inside an NVIDIA config file).

    ``enabled`` None leaves it to ``DP_DISABLE_HEALTHCHECKS``. ``ignoredXids``
    replaces the default list (13, 31, 43, 45, 68, 109). ``recoverAfter``: seconds
    without a new critical event, with NVML answering normally, before a GPU is
    trusted again; 0 never (NVIDIA's behaviour); None the default (300 s).
    """

    enabled: bool | None = None
    ignored_xids: list[int] | None = None
    double_bit_ecc: bool | None = None
    recover_after: float | None = None


class NvidiaFileConfig(_Section):
    """NVIDIA's config file (``version: v1``), with multidp's ``health`` section allowed."""

    version: str | None = None
    flags: Flags | None = None
    resources: Resources | None = None
    sharing: Sharing | None = None
    imex: Imex | None = None
    health: Health | None = None


class NvidiaConfig(NvidiaFileConfig):
    """``drivers.nvidia``: NVIDIA's keys inline, ``configFile``, and multidp's own keys.

    The top-level flag keys (``migStrategy``, ``passDeviceSpecs``, …) are
    shortcuts for the same keys under ``flags`` / ``flags.plugin`` that also
    work as ``MULTIDP_NVIDIA_<KEY>`` variables; they win over everything else.
    """

    config_file: str | None = None
    mig_strategy: MigStrategy | None = None
    fail_on_init_error: bool | None = None
    pass_device_specs: bool | None = None
    device_list_strategy: str | list[str] | None = None
    device_id_strategy: DeviceIDStrategy | None = msgspec.field(default=None, name="deviceIDStrategy")
    nvidia_driver_root: str | None = None
    nvidia_dev_root: str | None = None
    container_driver_root: str | None = None
    nvidia_ctk_path: str | None = msgspec.field(default=None, name="nvidiaCTKPath")
    mps_root: str | None = None
    # Where mpsRoot is mounted in this container, to check the MPS daemon is ready (default: mpsRoot).
    mps_container_root: str | None = None
    # None: from flags.plugin.sharedDevicesAllocationPolicy (distributed = spread), else spread.
    replica_policy: Literal["spread", "pack"] | None = None
    poll_interval: float = 5.0
    proc_root: str = "/proc"
    simulated_machine: Literal["h100", "nvlink8", "mig", "xid", "no-nvml"] = "nvlink8"
