"""Machines for the fake NVML: the recorded H100, and synthetic ones.

Each builder returns a :class:`FakeMachine`; :func:`write_host_files` lays out
what the node would show beside NVML (``numa_node`` in sysfs, ``/dev/nvidia*``,
the MIG capability minors in ``/proc``, driver libraries for CDI) under a
temporary root, as plain files.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships neither stubs nor py.typed

from multidp_nvidia.fake_nvml import FakeGpu, FakeMachine, FakeMig

CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
LIB_DIR = "usr/lib/x86_64-linux-gnu"
T = pynvml  # NVML_TOPOLOGY_* constants


def load_snapshot() -> dict[str, Any]:
    """The recorded H100 NVML snapshot shipped with this package."""
    data = resources.files("multidp_nvidia").joinpath("data/h100_nvml_snapshot.json").read_text()
    snapshot: dict[str, Any] = json.loads(data)
    return snapshot


def recorded_h100(uuid: str | None = None) -> FakeMachine:
    """The recorded H100 (data/h100_nvml_snapshot.json) as NVML reported it (optionally with another UUID)."""
    snap = load_snapshot()
    dev = snap["devices"][0]
    gpu = FakeGpu(
        uuid=uuid or dev["uuid"],
        name=dev["name"],
        minor=dev["minor_number"],
        bus_id=dev["pci"]["busId"],
        memory_total=dev["memory_total"],
        mig_mode=(dev["mig_mode"][0], dev["mig_mode"][1]),
        max_migs=dev["max_mig"],
        nvlinks=None,  # "Not Supported" on that VM
        supported_events=dev["supported_events"],
        brand=dev["brand"],
        architecture=dev["arch"],
        compute_capability=(dev["cuda_cc"][0], dev["cuda_cc"][1]),
        pcie_root=Path(dev["sysfs_path"]).parts[3],  # /sys/devices/pci0000:00/0000:00:06.0
    )
    return FakeMachine([gpu], driver_version=snap["driver_version"], cuda_driver_version=snap["cuda_driver_version"],
                       numa={0: int(dev["sysfs_numa_node"])})


def _uuid(n: int, prefix: str = "GPU") -> str:
    return f"{prefix}-{n:08x}-1111-2222-3333-{n:012x}"


def nvlink8() -> FakeMachine:
    """8 H100s over two NUMA nodes: two NVLink quads (4 links per pair inside a quad),
    2 links between GPU i and i+4 across the quads; GPU pairs (0,1), (2,3), … share a PCIe switch;
    each quad hangs off its own PCIe root complex (``pci0000:00``, ``pci0000:80``)."""
    bus = [f"00000000:{b:02X}:00.0" for b in (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)]
    gpus = []
    for i in range(8):
        quad = range(0, 4) if i < 4 else range(4, 8)
        links = [bus[j] for j in quad if j != i for _ in range(4)] + [bus[(i + 4) % 8]] * 2
        gpus.append(FakeGpu(uuid=_uuid(i + 1), minor=i, bus_id=bus[i], nvlinks=links + [""] * (18 - len(links)),
                            pcie_root="pci0000:00" if i < 4 else "pci0000:80"))
    topology = {}
    for i in range(8):
        for j in range(i + 1, 8):
            same_numa = (i < 4) == (j < 4)
            level = T.NVML_TOPOLOGY_SINGLE if i // 2 == j // 2 else T.NVML_TOPOLOGY_NODE
            topology[(i, j)] = level if same_numa else T.NVML_TOPOLOGY_SYSTEM
    return FakeMachine(gpus, topology=topology, numa={i: 0 if i < 4 else 1 for i in range(8)})


def _mig(gpu: int, slot: int, gi: int, ci: int, gi_profile: int, ci_profile: int) -> FakeMig:
    return FakeMig(_uuid(gpu * 16 + slot + 100, "MIG"), gi, ci, gi_profile, ci_profile)


def mig_mixed() -> FakeMachine:
    """Three H100s: GPU 0 MIG as 3g.40gb + 2g.20gb + 2×1g.10gb; GPU 1 MIG as 4g.40gb +
    1g.10gb+me + 1c.2g.20gb; GPU 2 without MIG."""
    g0 = FakeGpu(uuid=_uuid(0x10), minor=0, bus_id="00000000:18:00.0", mig_mode=(1, 1), migs=[
        _mig(0, 0, 2, 0, 2, 2), _mig(0, 1, 3, 0, 1, 1), _mig(0, 2, 9, 0, 0, 0), _mig(0, 3, 10, 0, 0, 0)])
    g1 = FakeGpu(uuid=_uuid(0x11), minor=1, bus_id="00000000:2A:00.0", mig_mode=(1, 1), migs=[
        _mig(1, 0, 1, 0, 3, 3), _mig(1, 1, 7, 0, 7, 0), _mig(1, 2, 5, 0, 1, 0)])
    g2 = FakeGpu(uuid=_uuid(0x12), minor=2, bus_id="00000000:3A:00.0", mig_mode=(0, 0))
    return FakeMachine([g0, g1, g2], numa={0: 0, 1: 0, 2: 1})


def mig_uniform(gpus: int = 2, per_gpu: int = 7) -> FakeMachine:
    """GPUs all split into 1g.10gb instances (what MIG strategy ``single`` expects)."""
    found = []
    for g in range(gpus):
        migs = [_mig(g, j, 7 + j, 0, 0, 0) for j in range(per_gpu)]
        found.append(FakeGpu(uuid=_uuid(0x20 + g), minor=g, bus_id=f"00000000:{0x18 + g:02X}:00.0",
                             mig_mode=(1, 1), migs=migs))
    return FakeMachine(found, numa={g: 0 for g in range(gpus)})


def with_scheduled_xid(machine: FakeMachine, after_s: float = 3.0, gpu: int = 1, xid: int = 79) -> FakeMachine:
    """The same machine, with one GPU raising ``xid`` some seconds into the run."""
    machine.scheduled_xid = (after_s, min(gpu, len(machine.gpus) - 1), xid)
    return machine


def without_nvml() -> FakeMachine:
    """A node where the NVIDIA driver is not loaded: nvmlInit fails."""
    return FakeMachine([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)


def _touch(path: Path, content: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def _pci_device(sys_root: Path, bus: str, pcie_root: str | None) -> None:
    """A GPU's sysfs folder: as the kernel lays it out, ``bus/pci/devices/<bus>`` a link into
    ``devices/<root complex>/<bus>``; without a known root, a plain folder."""
    listed = sys_root / "bus/pci/devices" / bus
    if pcie_root is None or listed.exists() or listed.is_symlink():  # laid out already
        return
    real = sys_root / "devices" / pcie_root / bus
    real.mkdir(parents=True, exist_ok=True)
    listed.parent.mkdir(parents=True, exist_ok=True)
    listed.symlink_to(Path("../../..") / "devices" / pcie_root / bus)


def mig_minor_table(machine: FakeMachine) -> dict[str, int]:
    """The kernel's capability minors: config 1, monitor 2, then one per GPU / compute instance."""
    table, minor = {"config": 1, "monitor": 2}, 3
    for gpu in machine.gpus:
        for mig in gpu.migs:
            for key in (f"gpu{gpu.minor}/gi{mig.gi}/access", f"gpu{gpu.minor}/gi{mig.gi}/ci{mig.ci}/access"):
                if key not in table:
                    table[key], minor = minor, minor + 1
    return table


def write_host_files(machine: FakeMachine, root: Path, driver_files: bool = True) -> dict[str, Path]:
    """sysfs, /dev, /proc and a driver root for ``machine`` under ``root``; returns the roots."""
    roots = {name: root / name for name in ("sys", "dev", "proc", "driver")}
    for path in roots.values():
        path.mkdir(parents=True, exist_ok=True)
    for i, gpu in enumerate(machine.gpus):
        bus = gpu.bus_id.lower()[4:]
        _pci_device(roots["sys"], bus, gpu.pcie_root)
        _touch(roots["sys"] / "bus/pci/devices" / bus / "numa_node", f"{machine.numa.get(i, -1)}\n")
        _touch(roots["dev"] / f"nvidia{gpu.minor}")
    for name in CONTROL_NODES:
        _touch(roots["dev"] / name)
    table = mig_minor_table(machine)
    (roots["dev"] / "nvidia-caps").mkdir(exist_ok=True)
    for minor in table.values():
        _touch(roots["dev"] / "nvidia-caps" / f"nvidia-cap{minor}")
    lines = "".join(f"{key} {minor}\n" for key, minor in table.items())
    _touch(roots["proc"] / "driver/nvidia-caps/mig-minors", lines)
    if driver_files:
        version = machine.driver_version
        for lib in ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"):
            _touch(roots["driver"] / LIB_DIR / f"{lib}.{version}")
        _touch(roots["driver"] / "usr/bin/nvidia-smi")
        (roots["driver"] / "usr/bin/nvidia-smi").chmod(0o755)
    return roots
