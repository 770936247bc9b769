"""What a fake machine is made of: GPUs, MIG devices, topology, and the H100's MIG profiles.

Plain data; :class:`multidp_nvidia.fake_nvml.FakeNvml` answers NVML calls from it
and :mod:`multidp_nvidia.machines` builds the recorded and synthetic machines.
"""

from __future__ import annotations

import msgspec


class FakeMig(msgspec.Struct):
    uuid: str
    gi: int
    ci: int
    gi_profile: int  # NVML_GPU_INSTANCE_PROFILE_* index
    ci_profile: int  # NVML_COMPUTE_INSTANCE_PROFILE_* index


class FakeGpu(msgspec.Struct):
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    minor: int = 0
    bus_id: str = "00000000:00:06.0"  # NVML's form
    memory_total: int = 85520809984
    mig_mode: tuple[int, int] | None = None  # None: "Not Supported"
    migs: list[FakeMig] = msgspec.field(default_factory=list)
    max_migs: int = 7
    nvlinks: list[str] | None = None  # remote bus id per link ("" inactive); None: "Not Supported"
    supported_events: int = 65439
    register_error: int | None = None  # NVML error code RegisterEvents answers with
    lost: bool = False  # every call on it raises GPU_IS_LOST
    remapped_rows: tuple[int, int, int, int] | None = (0, 0, 0, 0)  # None: "Not Supported"
    # Descriptive facts (the recorded H100's); None: NVML answers "Not Supported".
    brand: int | None = 14  # NVML_BRAND_NVIDIA
    architecture: int | None = 9  # NVML_DEVICE_ARCH_HOPPER
    compute_capability: tuple[int, int] | None = (9, 0)
    pcie_root: str | None = "pci0000:00"  # the root complex in sysfs; None: a flat sysfs with no devices tree


class FakeMachine(msgspec.Struct):
    gpus: list[FakeGpu]
    driver_version: str = "580.159.04"
    cuda_driver_version: int | None = 13000  # NVML's integer form (12040 is CUDA 12.4); None: "Not Supported"
    init_error: int | None = None  # NVML error code nvmlInit answers with
    topology: dict[tuple[int, int], int] = msgspec.field(default_factory=dict)  # NVML_TOPOLOGY_* per pair
    numa: dict[int, int] = msgspec.field(default_factory=dict)  # GPU index -> sysfs numa_node (-1 if absent)
    scheduled_xid: tuple[float, int, int] | None = None  # (seconds after registration, GPU index, XID)


# H100 80GB GPU-instance profiles: index -> (profile id, slices, memory MB).
H100_GI_PROFILES = {0: (19, 1, 9856), 7: (20, 1, 9856), 9: (15, 1, 19968), 1: (14, 2, 19968),
                    2: (9, 3, 40192), 3: (5, 4, 40192), 4: (0, 7, 80384)}
CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}  # compute-instance profile index -> slices (id = index)
