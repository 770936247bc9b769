"""A fake NVML: the pynvml calls this driver makes, answered from a described machine.

It raises the real ``pynvml.NVMLError`` subclasses with the real return codes
(``Not Supported`` for NVLink on the recorded VM, ``Timeout`` from an idle event
wait, ``GPU is lost`` from a GPU that fell off the bus), so the driver's error
handling is exercised exactly as on hardware. Events are delivered through the
event sets the driver creates: :meth:`FakeNvml.raise_xid` and
:meth:`FakeNvml.raise_ecc` queue one, and a machine may schedule an XID for
some seconds after registration (a GPU that fails mid-run).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, TypeVar

import msgspec
import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships neither stubs nor py.typed

from multidp_nvidia.fake_hardware import CI_SLICES, H100_GI_PROFILES, FakeGpu, FakeMachine, FakeMig

__all__ = ["FakeGpu", "FakeMachine", "FakeMig", "FakeNvml", "WHOLE"]

WHOLE = 0xFFFFFFFF
_E = pynvml.NVMLError
_T = TypeVar("_T")


class _Handle(msgspec.Struct, frozen=True):
    gpu: int
    mig: int | None = None


class _EventSet:
    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.masks: dict[int, int] = {}
        self.freed = False


class FakeNvml:
    """Stands in for the ``pynvml`` module; constants and error classes come from pynvml itself."""

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self._sets: list[_EventSet] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML_", "NVMLError", "nvmlEventType")):
            return getattr(pynvml, name)
        raise AttributeError(f"FakeNvml does not implement {name}")

    # Helpers -------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, _Handle) or not 0 <= handle.gpu < len(self.machine.gpus):
            raise _E(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not self.initialised:
            raise _E(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu = self.machine.gpus[handle.gpu]
        if gpu.lost:
            raise _E(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _mig(self, handle: Any) -> FakeMig:
        gpu = self._gpu(handle)
        if handle.mig is None:
            raise _E(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        mig: FakeMig = gpu.migs[handle.mig]
        return mig

    # Library -------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.machine.init_error is not None:
            raise _E(self.machine.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        self.initialised = max(0, self.initialised - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.machine.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._count("nvmlSystemGetCudaDriverVersion")
        if self.machine.cuda_driver_version is None:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.machine.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._count("nvmlDeviceGetCount")
        if not self.initialised:
            raise _E(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self.machine.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._gpu(_Handle(index))
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        for i, gpu in enumerate(self.machine.gpus):
            if gpu.uuid == uuid:
                self._gpu(_Handle(i))
                return _Handle(i)
            for j, mig in enumerate(gpu.migs):
                if mig.uuid == uuid:
                    return _Handle(i, j)
        raise _E(pynvml.NVML_ERROR_NOT_FOUND)

    # Identity ------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._mig(handle).uuid if handle.mig is not None else self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._gpu(handle).minor

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        bus = self._gpu(handle).bus_id
        return SimpleNamespace(busId=bus, busIdLegacy=bus[4:])

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(total=gpu.memory_total, free=gpu.memory_total, used=0)

    # Descriptive facts, counted: discovery reads them, a poll never should.
    def nvmlDeviceGetBrand(self, handle: Any) -> int:
        return self._fact("nvmlDeviceGetBrand", self._gpu(handle).brand)

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return self._fact("nvmlDeviceGetArchitecture", self._gpu(handle).architecture)

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._fact("nvmlDeviceGetCudaComputeCapability", self._gpu(handle).compute_capability)

    def _fact(self, call: str, value: _T | None) -> _T:
        self._count(call)
        if value is None:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        rows = self._gpu(handle).remapped_rows
        if rows is None:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return rows

    # MIG -----------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        mode = self._gpu(handle).mig_mode
        if mode is None:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return list(mode)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        return gpu.max_migs if gpu.mig_mode else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> _Handle:
        gpu = self._gpu(handle)
        if index >= gpu.max_migs:
            raise _E(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(gpu.migs):
            raise _E(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.gpu, index)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> _Handle:
        self._mig(handle)
        return _Handle(handle.gpu)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._mig(handle).gi

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._mig(handle).ci

    def nvmlDeviceGetAttributes(self, handle: Any) -> Any:
        mig = self._mig(handle)
        _, slices, memory = H100_GI_PROFILES[mig.gi_profile]
        return SimpleNamespace(memorySizeMB=memory, gpuInstanceSliceCount=slices,
                               computeInstanceSliceCount=CI_SLICES[mig.ci_profile])

    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gi: int) -> Any:
        gpu = self._gpu(handle)
        for mig in gpu.migs:
            if mig.gi == gi:
                return SimpleNamespace(gpu=handle.gpu, gi=gi, profile=mig.gi_profile)
        raise _E(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gi: Any) -> Any:
        return SimpleNamespace(id=gi.gi, profileId=H100_GI_PROFILES[gi.profile][0])

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int) -> Any:
        self._gpu(handle)
        if profile not in H100_GI_PROFILES:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        pid, slices, memory = H100_GI_PROFILES[profile]
        return SimpleNamespace(id=pid, sliceCount=slices, memorySizeMB=memory)

    def nvmlGpuInstanceGetComputeInstanceById(self, gi: Any, ci: int) -> Any:
        for mig in self.machine.gpus[gi.gpu].migs:
            if mig.gi == gi.gi and mig.ci == ci:
                return SimpleNamespace(id=ci, profileId=mig.ci_profile)
        raise _E(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlComputeInstanceGetInfo(self, ci: Any) -> Any:
        return SimpleNamespace(id=ci.id, profileId=ci.profileId)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi: Any, profile: int, eng: int) -> Any:
        if profile not in CI_SLICES or CI_SLICES[profile] > H100_GI_PROFILES[gi.profile][1]:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(id=profile, sliceCount=CI_SLICES[profile])

    # Topology ------------------------------------------------------------------------

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        self._count("nvmlDeviceGetNvLinkState")
        links = self._gpu(handle).nvlinks
        if links is None:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= len(links):
            raise _E(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return 1 if links[link] else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: Any, link: int) -> Any:
        links = self._gpu(handle).nvlinks or []
        if link >= len(links) or not links[link]:
            raise _E(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return SimpleNamespace(busId=links[link])

    def nvmlDeviceGetTopologyCommonAncestor(self, a: Any, b: Any) -> int:
        self._gpu(a), self._gpu(b)
        key = (min(a.gpu, b.gpu), max(a.gpu, b.gpu))
        if key not in self.machine.topology:
            raise _E(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.machine.topology[key]

    # Events --------------------------------------------------------------------------

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return self._gpu(handle).supported_events

    def nvmlEventSetCreate(self) -> _EventSet:
        event_set = _EventSet()
        with self._lock:
            self._sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: Any, mask: int, event_set: _EventSet) -> None:
        gpu = self._gpu(handle)
        if gpu.register_error is not None:
            raise _E(gpu.register_error)
        event_set.masks[handle.gpu] = mask
        scheduled = self.machine.scheduled_xid
        if scheduled and scheduled[1] == handle.gpu:
            timer = threading.Timer(scheduled[0], self.raise_xid, args=(scheduled[1], scheduled[2]))
            timer.daemon = True
            timer.start()

    def nvmlEventSetWait(self, event_set: _EventSet, timeout_ms: int) -> Any:
        try:
            return event_set.queue.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise _E(pynvml.NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetFree(self, event_set: _EventSet) -> None:
        event_set.freed = True
        with self._lock:
            if event_set in self._sets:
                self._sets.remove(event_set)

    def _deliver(self, gpu: int, event_type: int, data: int, gi: int, ci: int) -> int:
        delivered = 0
        with self._lock:
            sets = list(self._sets)
        for event_set in sets:
            if event_set.masks.get(gpu, 0) & event_type:
                event_set.queue.put(SimpleNamespace(device=_Handle(gpu), eventType=event_type, eventData=data,
                                                    gpuInstanceId=gi, computeInstanceId=ci, at=time.monotonic()))
                delivered += 1
        return delivered

    def raise_xid(self, gpu: int, xid: int, gi: int = WHOLE, ci: int = WHOLE, lost: bool = False) -> int:
        """Deliver a critical XID event; ``lost`` also makes the GPU stop answering. Returns sets reached."""
        if lost:
            self.machine.gpus[gpu].lost = True
        return self._deliver(gpu, pynvml.nvmlEventTypeXidCriticalError, xid, gi, ci)

    def raise_ecc(self, gpu: int, double_bit: bool = True) -> int:
        kind = pynvml.nvmlEventTypeDoubleBitEccError if double_bit else pynvml.nvmlEventTypeSingleBitEccError
        return self._deliver(gpu, kind, 0, WHOLE, WHOLE)

    def wait_registered(self, timeout: float = 5.0) -> bool:
        """Tests: wait until some event set has every GPU registered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(len(s.masks) == len(self.machine.gpus) for s in self._sets):
                    return True
            time.sleep(0.01)
        return False
