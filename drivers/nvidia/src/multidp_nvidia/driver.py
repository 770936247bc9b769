"""The nvidia driver: NVML discovery, health, Allocate answers and preferred allocation.

NVML is initialised at the first scan (or in create when ``failOnInitError`` is
set, so only this driver fails; never when the driver is created only to check its
config, ``checking``, which also leaves the IMEX channels unlooked-at). Without NVML or GPUs the driver logs why, once,
serves nothing, and tries again every poll. Discovery, the link graph included,
runs once per NVML session; later scans only re-evaluate health (events,
recovery, device nodes that vanished, whether NVIDIA's MPS control daemon is ready).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from multidp import (
    AllocationRequest,
    CDISpec,
    ContainerAllocation,
    Device,
    Driver,
    Health,
    Notify,
    PreferenceRequest,
    base_id,
    pack_replicas,
    spread_replicas,
)

from multidp_nvidia import answers, imex
from multidp_nvidia.discovery import Machine, discover
from multidp_nvidia.health import HealthMonitor, probe_gpu
from multidp_nvidia.imex import present_channels
from multidp_nvidia.inventory import Inventory, Served, build
from multidp_nvidia.mps import MpsReadiness
from multidp_nvidia.nvml import error_name
from multidp_nvidia.settings import DEFAULT_RECOVER_AFTER_S, Settings
from multidp_nvidia.topology import best_set


class NvmlUnavailable(RuntimeError):
    """NVML cannot be loaded or initialised on this node."""


class NvidiaDriver(Driver):
    def __init__(self, settings: Settings, nvml_source: Callable[[], Any], sysfs_root: Path, dev_root: Path,
                 proc_root: Path, log: logging.Logger, recover_after: float | None = None,
                 checking: bool = False) -> None:
        self.settings = settings
        self.poll_interval = settings.poll_interval
        self._nvml_source = nvml_source
        self._sysfs_root, self._dev_root, self._proc_root = sysfs_root, dev_root, proc_root
        self.log = log
        configured = settings.recover_after
        self.recover_after = configured if configured is not None else (recover_after or DEFAULT_RECOVER_AFTER_S)
        self._nvml: Any = None
        self._lock = threading.Lock()
        self._machine: Machine | None = None
        self._inventory = Inventory({}, {}, {})
        self._mps_resources: frozenset[str] = frozenset()  # of the inventory: set at each discovery
        self._control_nodes: tuple[str, ...] = ()
        self._monitor: HealthMonitor | None = None
        self._notify: Notify = lambda: None
        self._said = ""  # the last "nothing to serve" reason logged
        self._missing: set[str] = set()
        self._mps = MpsReadiness(settings.mps_container_root, log,
                                 {r.resource: r.replicas for r in settings.replica_rules if r.mps})
        self._channels: tuple[str, ...] = ()
        if checking:
            return  # `multidp config check`: the settings are what is checked; no hardware is touched
        if settings.fail_on_init_error:
            self._init_nvml()  # raises: NVIDIA's failOnInitError fails this driver at once
        # Looked at once, at start, as NVIDIA's plugin does (it restarts to look again).
        self._channels = present_channels(settings.imex_channels, settings.imex_required, dev_root, log)

    # NVML session -----------------------------------------------------------------------

    def _init_nvml(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        try:
            nvml = self._nvml_source()
        except ImportError as exc:
            raise NvmlUnavailable(f"cannot import nvidia-ml-py (pynvml): {exc}") from exc
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML cannot be initialised: {error_name(exc)}") from exc
        except OSError as exc:
            raise NvmlUnavailable(f"NVML cannot be loaded: {exc}") from exc
        self._nvml = nvml
        return nvml

    def _say_once(self, reason: str) -> None:
        if reason != self._said:
            self._said = reason
            if reason:
                self.log.warning("%s; serving no NVIDIA GPUs, trying again every %g s", reason, self.poll_interval)

    def start(self, notify: Notify) -> None:
        self._notify = notify

    def _wake(self) -> None:
        self._notify()

    # Scanning ---------------------------------------------------------------------------

    def scan(self) -> Mapping[str, Sequence[Device]]:
        try:
            nvml = self._init_nvml()
        except NvmlUnavailable as exc:
            self._say_once(str(exc))
            return {}
        if self._machine is None or nvml.nvmlDeviceGetCount() != len(self._machine.gpus):
            self._rediscover(nvml)
        machine = self._machine
        assert machine is not None
        if not machine.gpus:
            self._say_once("NVML reports no GPUs")
            return {}
        self._say_once("")
        if self._monitor is not None:
            self._monitor.try_recover(lambda uuid: probe_gpu(nvml, uuid))
        self._control_nodes = answers.existing_control_nodes(self._dev_root)
        self._mps.refresh(self._mps_resources)
        return {resource: [self._device(s) for s in items] for resource, items in self._inventory.resources.items()}

    def _rediscover(self, nvml: Any) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        machine = discover(nvml, self._sysfs_root, self._proc_root, self.log)
        inventory = build(machine, self.settings, self.log)
        with self._lock:
            self._machine, self._inventory = machine, inventory
            self._mps_resources = frozenset(s.resource for s in inventory.by_id.values() if s.mps)
        summary = ", ".join(f"{r}: {len(d)}" for r, d in inventory.resources.items()) or "nothing to serve"
        self.log.info("found %d GPU(s), driver %s; serving %s", len(machine.gpus), machine.driver_version, summary)
        if not self.settings.health_enabled:
            self.log.info("GPU health checks are off (health.enabled / DP_DISABLE_HEALTHCHECKS)")
            return
        served = {s.gpu_uuid for s in inventory.by_id.values()}
        handles = [(g.uuid, nvml.nvmlDeviceGetHandleByIndex(g.index)) for g in machine.gpus if g.uuid in served]
        self._monitor = HealthMonitor(nvml, self.settings, self.recover_after, self._wake, self.log)
        self._monitor.start(handles)

    def _device(self, served: Served) -> Device:
        problem = served.problem or self._node_problem(served)
        if not problem and served.mps:
            problem = self._mps.problem(served.resource)
        if not problem and self._monitor is not None:
            problem = self._monitor.problem(served.gpu_uuid, served.gi, served.ci)
        numa = (served.numa,) if served.numa is not None else ()
        cdi = tuple(answers.cdi_names((served.name_id,), self._channels)) if self.settings.uses_cdi else ()
        return Device(served.id, Health.UNHEALTHY if problem else Health.HEALTHY, numa, served.replicas,
                      problem, served.info, cdi, served.attributes, served.capacity)

    def _node_problem(self, served: Served) -> str:
        for path in served.nodes:
            if not (self._dev_root / path.removeprefix("/dev/")).exists():
                if path not in self._missing:
                    self._missing.add(path)
                    self.log.error("device node %s of %s is missing under %s; it is unhealthy until it is back",
                                   path, served.id, self._dev_root)
                return f"device node {path} is missing"
        for path in served.nodes:
            if path in self._missing:
                self._missing.discard(path)
                self.log.info("device node %s is back", path)
        return ""

    # Kubelet calls ----------------------------------------------------------------------

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        return answers.allocation(request, self._inventory, self.settings, self._control_nodes, self._channels)

    def preferred_allocation(self, request: PreferenceRequest) -> Sequence[str] | None:
        if any(base_id(i) != i for i in request.available):
            pick = pack_replicas if self.settings.replica_policy == "pack" else spread_replicas
            return pick(request)
        inventory, machine = self._inventory, self._machine
        devices = [inventory.by_id.get(i) for i in request.available]
        if machine is None or any(d is None or d.is_mig for d in devices):
            return None  # MIG devices: the host packs them by NUMA node
        index_of = {d.id: d.gpu_index for d in devices if d is not None}
        id_of = {v: k for k, v in index_of.items()}
        chosen = best_set(machine.links, [index_of[i] for i in request.available],
                          [index_of[i] for i in request.must_include if i in index_of], request.size)
        return [id_of[g] for g in chosen]

    def cdi_specs(self) -> Sequence[CDISpec]:
        if not self.settings.uses_cdi or self._machine is None:
            return ()
        spec = answers.cdi_spec(self._inventory, self.settings, self._control_nodes, self._machine.driver_version)
        return [spec, imex.cdi_spec(self._channels, self.settings.dev_root)] if self._channels else [spec]

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        shutdown = None if nvml is None else (lambda: self._shutdown(nvml))
        if self._monitor is not None:
            # Its thread may be inside an NVML event wait, which nothing can end early: NVML is
            # shut down once that wait returned and the event set is freed, not under it.
            self._monitor.stop(then=shutdown)
            self._monitor = None
        elif shutdown is not None:
            shutdown()

    def _shutdown(self, nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            self.log.info("NVML shutdown: %s", error_name(exc))
