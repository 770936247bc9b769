"""What is on this node: GPUs and MIG devices as NVML reports them, NUMA from sysfs.

Discovery runs once per NVML session (at the first successful scan, and again
only when the GPU count changes); allocation and health work from its result.
Each fact that cannot be read becomes a ``problem`` on that device, with the
file or NVML call named, instead of an exception that would hide every GPU.
The facts DRA's attributes need (:mod:`.facts`) are read here too, once; those
NVML or sysfs cannot tell stay empty and are left out.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import msgspec

from multidp_nvidia.facts import GpuFacts, cuda_version, optional, read_facts
from multidp_nvidia.nvml import error_name, is_code, sysfs_bus_id, text
from multidp_nvidia.topology import LinkGraph, read_link_graph

MIG_MINORS = "driver/nvidia-caps/mig-minors"
WHOLE = 0xFFFFFFFF  # NVML's "no GPU / compute instance": the whole GPU


class MigInfo(msgspec.Struct, frozen=True):
    uuid: str
    index: str  # "<gpu index>:<mig index>", NVIDIA's MIG index
    parent_uuid: str
    gi: int
    ci: int
    profile: str  # "1g.10gb", "1c.2g.20gb", "1g.10gb+me"
    full_instance: bool  # compute slices == GPU slices (NVIDIA serves only these)
    cap_nodes: tuple[str, ...]  # /dev/nvidia-caps/nvidia-cap<N> of its GPU and compute instance
    problem: str = ""
    memory: int = 0  # bytes (0: unknown)


class GpuInfo(msgspec.Struct, frozen=True):
    index: int
    uuid: str
    name: str
    minor: int
    bus_id: str  # sysfs form, 0000:3b:00.0
    numa: int | None
    memory_total: int
    mig_enabled: bool
    migs: tuple[MigInfo, ...] = ()
    problem: str = ""
    facts: GpuFacts = GpuFacts()

    @property
    def node(self) -> str:
        return f"/dev/nvidia{self.minor}"


class Machine(msgspec.Struct, frozen=True):
    gpus: tuple[GpuInfo, ...]
    driver_version: str
    links: LinkGraph
    cuda_driver_version: str = ""  # "13.0.0"; '' when NVML cannot tell


def read_numa(sysfs_root: Path, bus_id: str, log: logging.Logger) -> int | None:
    """NUMA node of a PCI device; -1, missing or malformed → None (malformed is logged)."""
    path = sysfs_root / "bus" / "pci" / "devices" / bus_id / "numa_node"
    try:
        raw = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s; GPU %s gets no NUMA node", path, exc.strerror or exc, bus_id)
        return None
    try:
        node = int(raw)
    except ValueError:
        log.warning("%s holds %r, not a number; GPU %s gets no NUMA node", path, raw[:40], bus_id)
        return None
    return node if node >= 0 else None


def read_mig_minors(proc_root: Path, log: logging.Logger) -> tuple[dict[str, int], str]:
    """``gpu0/gi1/access`` → 12 from the kernel's mig-minors table, and a problem ('' when read)."""
    path = proc_root / MIG_MINORS
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return {}, f"cannot read {path}: {exc.strerror or exc}"
    minors: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            if line.strip():
                log.warning("%s line %d is malformed (%r); skipped", path, number, line[:60])
            continue
        minors[parts[0]] = int(parts[1])
    return minors, ""


def mig_memory_gb(total_bytes: int, mig_mb: int) -> int:
    """The GB in a MIG profile name: the memory fraction rounded up to eighths of the GPU's GB."""
    fraction = math.ceil(mig_mb * 1024 * 1024 / total_bytes * 8) / 8
    total_gb = (total_bytes + (1 << 30) - 1) >> 30
    return round(fraction * total_gb)


def _gi_slices(nvml: Any, index: int) -> tuple[int, str]:
    """GPU-instance slices and attribute suffix of a GI profile index (go-nvlib's naming)."""
    by_slices = {1: ("1_SLICE", "1_SLICE_REV1", "1_SLICE_REV2"), 2: ("2_SLICE", "2_SLICE_REV1"),
                 3: ("3_SLICE",), 4: ("4_SLICE",), 6: ("6_SLICE",), 7: ("7_SLICE",), 8: ("8_SLICE",)}
    for slices, names in by_slices.items():
        for name in names:
            if getattr(nvml, f"NVML_GPU_INSTANCE_PROFILE_{name}", None) == index:
                return slices, "+me" if name.endswith("_REV1") else ""
    raise ValueError(f"unknown GPU instance profile index {index}")


def _ci_slices(nvml: Any, index: int) -> int:
    for slices in (1, 2, 3, 4, 6, 7, 8):
        if getattr(nvml, f"NVML_COMPUTE_INSTANCE_PROFILE_{slices}_SLICE", None) == index:
            return slices
    if getattr(nvml, "NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1", None) == index:
        return 1
    raise ValueError(f"unknown compute instance profile index {index}")


def mig_profile(nvml: Any, parent: Any, memory_mb: int, gi_id: int, ci_id: int,
                total_bytes: int) -> tuple[str, bool]:
    """The profile name NVIDIA gives a MIG device of ``memory_mb``, and whether it is a full GPU instance."""
    gi = nvml.nvmlDeviceGetGpuInstanceById(parent, gi_id)
    gi_profile_id = nvml.nvmlGpuInstanceGetInfo(gi).profileId
    ci = nvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id)
    ci_profile_id = nvml.nvmlComputeInstanceGetInfo(ci).profileId
    for g_index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            if nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, g_index).id != gi_profile_id:
                continue
        except nvml.NVMLError:
            continue  # profile not supported on this GPU
        for c_index in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                if nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, c_index, 0).id != ci_profile_id:
                    continue
            except nvml.NVMLError:
                continue
            g, suffix = _gi_slices(nvml, g_index)
            c = _ci_slices(nvml, c_index)
            gb = mig_memory_gb(total_bytes, memory_mb)
            name = f"{g}g.{gb}gb{suffix}" if c == g else f"{c}c.{g}g.{gb}gb{suffix}"
            return name, c == g
    raise ValueError(f"no MIG profile matches GPU instance profile {gi_profile_id} / compute profile {ci_profile_id}")


def _migs(nvml: Any, gpu: GpuInfo, handle: Any, minors: dict[str, int], minors_problem: str) -> list[MigInfo]:
    found = []
    for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
        except nvml.NVMLError as exc:
            if is_code(exc, nvml, "NOT_FOUND") or is_code(exc, nvml, "INVALID_ARGUMENT"):
                continue  # no MIG device in that slot
            raise
        uuid = text(nvml.nvmlDeviceGetUUID(mig))
        gi, ci = nvml.nvmlDeviceGetGpuInstanceId(mig), nvml.nvmlDeviceGetComputeInstanceId(mig)
        problem, full, memory_mb = "", True, 0
        try:
            memory_mb = nvml.nvmlDeviceGetAttributes(mig).memorySizeMB
            profile, full = mig_profile(nvml, handle, memory_mb, gi, ci, gpu.memory_total)
        except (nvml.NVMLError, ValueError) as exc:
            profile, problem = "unknown", f"cannot tell its MIG profile: {error_name(exc)}"
        gi_key, ci_key = f"gpu{gpu.minor}/gi{gi}/access", f"gpu{gpu.minor}/gi{gi}/ci{ci}/access"
        caps: tuple[str, ...] = ()
        if gi_key in minors and ci_key in minors:
            caps = (f"/dev/nvidia-caps/nvidia-cap{minors[gi_key]}", f"/dev/nvidia-caps/nvidia-cap{minors[ci_key]}")
        elif not problem:
            problem = minors_problem or f"no capability minors for {gi_key} in {MIG_MINORS}"
        found.append(MigInfo(uuid, f"{gpu.index}:{j}", gpu.uuid, gi, ci, profile, full, caps, problem,
                             memory_mb * 1024 * 1024))
    return found


def discover(nvml: Any, sysfs_root: Path, proc_root: Path, log: logging.Logger) -> Machine:
    """Every GPU NVML sees, with its MIG devices and the NVLink/PCIe graph between GPUs."""
    count = nvml.nvmlDeviceGetCount()
    minors: dict[str, int] | None = None
    minors_problem = ""
    gpus, handles = [], []
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        pci = nvml.nvmlDeviceGetPciInfo(handle)
        bus_id = sysfs_bus_id(pci.busId)
        try:
            mode = nvml.nvmlDeviceGetMigMode(handle)[0]
        except nvml.NVMLError:
            mode = 0  # "Not Supported": a GPU without MIG
        gpu = GpuInfo(
            index=i,
            uuid=text(nvml.nvmlDeviceGetUUID(handle)),
            name=text(nvml.nvmlDeviceGetName(handle)),
            minor=nvml.nvmlDeviceGetMinorNumber(handle),
            bus_id=bus_id,
            numa=read_numa(sysfs_root, bus_id, log),
            memory_total=nvml.nvmlDeviceGetMemoryInfo(handle).total,
            mig_enabled=mode == 1,
            facts=read_facts(nvml, handle, sysfs_root, bus_id, log),
        )
        if gpu.mig_enabled:
            if minors is None:
                minors, minors_problem = read_mig_minors(proc_root, log)
                if minors_problem:
                    log.warning("%s; MIG devices get no capability device nodes", minors_problem)
            gpu = msgspec.structs.replace(gpu, migs=tuple(_migs(nvml, gpu, handle, minors, minors_problem)))
        gpus.append(gpu)
        handles.append(handle)
    links = read_link_graph(nvml, handles, [g.bus_id for g in gpus], [g.numa for g in gpus], log)
    cuda = cuda_version(optional(nvml, nvml.nvmlSystemGetCudaDriverVersion)) if gpus else ""
    return Machine(tuple(gpus), text(nvml.nvmlSystemGetDriverVersion()), links, cuda)
