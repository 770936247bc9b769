"""Allocate answers NVIDIA's container runtime understands, and the CDI spec behind them.

Per device-list strategy, as NVIDIA's plugin answers: ``envvar`` sets
``NVIDIA_VISIBLE_DEVICES=<ids>``; ``volume-mounts`` sets it to
``/var/run/nvidia-container-devices`` and mounts ``/dev/null`` at
``/var/run/nvidia-container-devices/<id>`` per device; ``cdi-annotations`` puts
``k8s.device-plugin.nvidia.com/gpu=<id>,…`` into the annotation
``cdi.k8s.io/nvidia-device-plugin_<response uuid>``; ``cdi-cri`` fills the CRI
``cdi_devices`` field. With ``passDeviceSpecs`` the control nodes that exist come
first, then each device's ``/dev/nvidia<minor>`` and MIG capability nodes. MPS
replicas add the MPS pipe and shm (:mod:`multidp_nvidia.mps`) with every strategy,
CDI included, before the volume mounts, in NVIDIA's order.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence
from pathlib import Path

from multidp import (
    AllocationRefused,
    AllocationRequest,
    CDIDeviceSpec,
    CDISpec,
    ContainerAllocation,
    DeviceNode,
    Mount,
    base_id,
)

from multidp_nvidia import elf, imex, mps
from multidp_nvidia.cdi_hooks import cdi_hooks
from multidp_nvidia.inventory import Inventory, Served
from multidp_nvidia.ldcache import LdCacheError, libraries
from multidp_nvidia.settings import Settings

VISIBLE = "NVIDIA_VISIBLE_DEVICES"
MOUNT_ROOT = "/var/run/nvidia-container-devices"
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
CDI_KIND = "k8s.device-plugin.nvidia.com/gpu"
ANNOTATION_PLUGIN = "nvidia-device-plugin"
DEFAULT_PREFIX = "cdi.k8s.io/"
# NVIDIA's toolkit's fixed library folders, then usr/lib; after them, the folders ld.so.cache names
LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib/aarch64-linux-gnu",
            "usr/lib/x86_64-linux-gnu/nvidia/current", "usr/lib/aarch64-linux-gnu/nvidia/current",
            "lib/x86_64-linux-gnu", "lib64", "lib/aarch64-linux-gnu", "lib/x86_64-linux-gnu/nvidia/current",
            "lib/aarch64-linux-gnu/nvidia/current", "glibc/lib", "usr/lib")
LD_CACHE = "etc/ld.so.cache"
REQUIRED_LIBS = ("libcuda.so", "libnvidia-ml.so")
OPTIONAL_LIBS = ("libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so", "libcudadebugger.so", "libnvidia-cfg.so",
                 "libnvidia-gpucomp.so", "libnvidia-allocator.so", "libnvidia-opencl.so")
BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
            "nvidia-cuda-mps-server")
TOOL_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")  # NVIDIA's toolkit's order


def existing_control_nodes(dev_root: Path) -> tuple[str, ...]:
    """The control nodes present under the node's /dev (NVIDIA stats them the same way)."""
    return tuple(p for p in CONTROL_NODES if (dev_root / p.removeprefix("/dev/")).exists())


def host_node(settings: Settings, path: str) -> DeviceNode:
    """A device node; its host path carries nvidiaDevRoot (NVIDIA's filepath.Join(root, path))."""
    return DeviceNode(path, posixpath.join(settings.dev_root, path.lstrip("/")), "rw")


def refusal(request: AllocationRequest, settings: Settings) -> str:
    """NVIDIA's policy text when a shared request is too big, or ''."""
    if not settings.fail_requests_greater_than_one or len(request.requested_ids) <= 1:
        return ""
    if any(base_id(i) != i for i in request.requested_ids):
        return f"maximum request size for shared resources is 1; found {len(request.requested_ids)}"
    return ""


def cdi_names(name_ids: Sequence[str], channels: Sequence[str]) -> list[str]:
    """The CDI devices a CDI answer names: each device's, then every IMEX channel's (also declared in
    ``Device.cdi_devices``, so the host marks the devices Unhealthy while it cannot write the spec)."""
    return [f"{CDI_KIND}={i}" for i in name_ids] + [f"{imex.CDI_KIND}={c}" for c in channels]


def allocation(request: AllocationRequest, inventory: Inventory, settings: Settings,
               control_nodes: Sequence[str], channels: Sequence[str] = ()) -> ContainerAllocation:
    """NVIDIA's answer for the request; ``channels``: the IMEX channels found at start (:mod:`.imex`)."""
    refused = refusal(request, settings)
    if refused:
        raise AllocationRefused(refused)
    gone = [i for i in request.device_ids if i not in inventory.by_id]
    if gone:  # the GPUs were rediscovered between the host's check and this call
        raise RuntimeError(f"device {gone[0]} is no longer served (GPUs were rediscovered); retry")
    devices: list[Served] = [inventory.by_id[i] for i in request.device_ids]
    ids = list(dict.fromkeys(d.name_id for d in devices))
    answer = ContainerAllocation()
    strategies = settings.list_strategies
    if "envvar" in strategies:
        answer.envs[VISIBLE] = ",".join(ids)
        if channels:
            answer.envs[imex.ENV] = ",".join(channels)
    shared = next((d for d in devices if d.mps), None)
    if shared is not None:
        envs, answer.mounts = mps.answer_parts(shared.resource, settings.mps_root)
        answer.envs.update(envs)
    if "volume-mounts" in strategies:
        answer.envs[VISIBLE] = MOUNT_ROOT
        answer.mounts += [Mount(f"{MOUNT_ROOT}/{i}", "/dev/null") for i in ids]
        answer.mounts += [Mount(f"{MOUNT_ROOT}/imex/{c}", "/dev/null") for c in channels]
    if settings.uses_cdi:
        answer.cdi_devices = cdi_names(ids, channels)
        answer.cdi_field = "cdi-cri" in strategies
        if "cdi-annotations" in strategies:
            key = f"{ANNOTATION_PLUGIN}_{uuid.uuid4()}"
            if settings.cdi_annotation_prefix == DEFAULT_PREFIX:
                answer.cdi_annotation_key = key  # the host writes cdi.k8s.io/<key>
            else:  # a custom prefix (flags.plugin.cdiAnnotationPrefix): written here
                answer.annotations[settings.cdi_annotation_prefix + key] = ",".join(answer.cdi_devices)
    if settings.pass_device_specs:
        paths = [*control_nodes, *(p for d in devices for p in d.nodes)]
        answer.device_nodes = [host_node(settings, p) for p in dict.fromkeys(paths)]
        answer.device_nodes += [imex.node(c, settings.dev_root) for c in channels]
    if settings.gdrcopy:
        answer.envs["NVIDIA_GDRCOPY"] = "enabled"
    if settings.gds:
        answer.envs["NVIDIA_GDS"] = "enabled"
    if settings.mofed:
        answer.envs["NVIDIA_MOFED"] = "enabled"
    return answer


class CDISpecError(RuntimeError):
    """The CDI spec cannot be built; only CDI allocations fail."""


class LibraryFinder:
    """Finds ``<lib>.<version>`` under the driver root: in the fixed folders, then where ld.so.cache says.

    The cache lists the soname links (``libcuda.so.1``); the versioned file sits beside them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache_problem = ""
        try:
            self.cached = libraries(root / LD_CACHE)
        except LdCacheError as exc:  # the fixed folders may still do; the message says why if not
            self.cached, self.cache_problem = [], str(exc)

    def find(self, lib: str, version: str) -> str | None:
        name = f"{lib}.{version}"
        cached_dirs = (posixpath.dirname(path).lstrip("/") for soname, path in self.cached
                       if (soname == lib or soname.startswith(f"{lib}.")) and _plain_absolute(path))
        for directory in dict.fromkeys((*LIB_DIRS, *cached_dirs)):
            if (self.root / directory / name).exists():
                return f"/{directory}/{name}"
        return None

    def where_looked(self) -> str:
        cache = self.cache_problem or f"the folders {self.root / LD_CACHE} names ({len(self.cached)} libraries)"
        return f"{', '.join(LIB_DIRS)}, then {cache}"


def _plain_absolute(path: str) -> bool:
    """No ``.``/``..`` parts: a cached path becomes a host mount path and must stay under the driver root."""
    return path.startswith("/") and posixpath.normpath(path) == path


def driver_mounts(settings: Settings, version: str) -> list[Mount]:
    """The driver's libraries and tools, found under the container's view of the driver root."""
    root = Path(settings.container_driver_root)
    finder = LibraryFinder(root)
    mounts: list[Mount] = []
    for lib in (*REQUIRED_LIBS, *OPTIONAL_LIBS):
        found = finder.find(lib, version)
        if found is None:
            if lib in REQUIRED_LIBS:
                raise CDISpecError(
                    f"cannot build the CDI spec: {lib}.{version} is not under {root} (looked in "
                    f"{finder.where_looked()}); set flags.plugin.containerDriverRoot to where the host's "
                    "driver root is mounted")
            continue
        host = posixpath.join(settings.driver_root, found.lstrip("/"))
        mounts.append(Mount(found, host, read_only=True))
        # and at its soname, so that it loads even without the update-ldcache hook (.1 if the file has none;
        # a soname outside the library's own family, or with a "/", is not trusted as a container path)
        name = elf.soname(root / found.lstrip("/")) or ""
        if not name.startswith(f"{lib}.") or "/" in name:
            name = f"{lib}.1"
        if name != posixpath.basename(found):
            mounts.append(Mount(posixpath.join(posixpath.dirname(found), name), host, read_only=True))
    for tool in BINARIES:
        directory = next((d for d in TOOL_DIRS if _is_executable(root / d / tool)), None)
        if directory is not None:
            mounts.append(Mount(f"/{directory}/{tool}", posixpath.join(settings.driver_root, directory, tool), True))
    return mounts


def _is_executable(path: Path) -> bool:
    """A regular file with an execute bit (what NVIDIA's toolkit asks of a tool it mounts)."""
    try:
        return path.is_file() and bool(path.stat().st_mode & 0o111)
    except OSError:
        return False


def cdi_spec(inventory: Inventory, settings: Settings, control_nodes: Sequence[str], version: str) -> CDISpec:
    """One spec, kind ``k8s.device-plugin.nvidia.com/gpu``, a device per served ID (UUID or index).

    The spec-wide edits carry NVIDIA's createContainer hooks (``cdi_hooks``) unless the hook path is empty.
    """
    devices = []
    for served in inventory.by_id.values():
        devices.append(CDIDeviceSpec(served.name_id, [host_node(settings, p) for p in served.nodes]))
    mounts = driver_mounts(settings, version)
    hooks = cdi_hooks(settings.cdi_hook_path, mounts, version, Path(settings.container_driver_root),
                      settings.cdi_disabled_hooks)
    return CDISpec(CDI_KIND, devices, common_device_nodes=[host_node(settings, p) for p in control_nodes],
                   common_env={VISIBLE: "void"}, common_mounts=mounts, common_hooks=hooks)
