"""A small driver for tests and the demo: "widgets" kept in memory.

It is no installed entry point; tests and ``multidp demo`` register it by
name (``PluginRegistry(extra={"sample": SamplePlugin()})``). Its hardware is a
:class:`SampleHardware` that tests change directly (health, devices appearing
and vanishing), and it can misbehave on purpose (raise or hang in any call) so
the host's isolation can be tested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import msgspec

from multidp import DRIVER_API_VERSION
from multidp.driver import Driver, DriverContext, Notify, Simulation
from multidp.errors import AllocationRefused
from multidp.hookspecs import hookimpl
from multidp.model import (
    AllocationRequest,
    CDIDeviceSpec,
    CDISpec,
    ContainerAllocation,
    Device,
    DeviceNode,
    Health,
    Mount,
)

CDI_KIND = "example.com/widget"


class SampleResource(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    count: int = 4
    numa_nodes: int = 1
    replicas: int | None = None
    max_request: int | None = None


def _default_resources() -> dict[str, SampleResource]:
    return {
        "example.com/widget": SampleResource(count=4, numa_nodes=2),
        "example.com/widget-shared": SampleResource(count=1, replicas=4, max_request=1),
    }


class SampleConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """``drivers.sample``: the resources and their widgets, the poll interval, pre-start and CDI on or off."""

    resources: dict[str, SampleResource] = msgspec.field(default_factory=_default_resources)
    poll_interval: float = 1.0
    pre_start: bool = False
    cdi: bool = True


class SampleHardware:
    """The widgets "installed": resource → device ID → Device. Thread-safe."""

    def __init__(self, config: SampleConfig) -> None:
        self.lock = threading.Lock()
        self.resources: dict[str, dict[str, Device]] = {}
        for name, res in config.resources.items():
            short = name.rpartition("/")[2]
            self.resources[name] = {
                f"{short}-{i}": Device(f"{short}-{i}", numa_nodes=(i * res.numa_nodes // max(res.count, 1),),
                                       info={"slot": str(i)})
                for i in range(res.count)
            }
        self.notify: Notify = lambda: None

    def set_health(self, resource: str, device_id: str, healthy: bool, reason: str = "") -> None:
        """Make one device Healthy or Unhealthy (with ``reason``) and tell the driver, as a health event would."""
        with self.lock:
            device = self.resources[resource][device_id]
            health = Health.HEALTHY if healthy else Health.UNHEALTHY
            self.resources[resource][device_id] = replace(device, health=health, reason=reason)
        self.notify()

    def add(self, resource: str, device: Device) -> None:
        """Plug in a device: the driver is told, and the kubelet sees it after the next scan."""
        with self.lock:
            self.resources.setdefault(resource, {})[device.id] = device
        self.notify()

    def remove(self, resource: str, device_id: str | None = None) -> None:
        """Remove one device, or the whole resource when ``device_id`` is None."""
        with self.lock:
            if device_id is None:
                self.resources.pop(resource, None)
            else:
                self.resources[resource].pop(device_id, None)
        self.notify()

    def snapshot(self) -> dict[str, list[Device]]:
        """Every resource's devices as they are now."""
        with self.lock:
            return {name: list(devices.values()) for name, devices in self.resources.items()}


class SampleDriver(Driver):
    """Serves the widgets of a :class:`SampleHardware`; ``faults`` make it misbehave.

    ``faults`` maps a call name (``scan``, ``allocate``, ``preferred``,
    ``pre_start``, ``cdi``) to ``"raise"`` (a RuntimeError), ``"exit"``
    (SystemExit, as ``sys.exit()`` in driver code), ``"interrupt"``
    (KeyboardInterrupt) or a number of seconds to hang.
    """

    def __init__(self, config: SampleConfig, hardware: SampleHardware) -> None:
        self.config = config
        self.hardware = hardware
        self.poll_interval = config.poll_interval
        self.faults: dict[str, str | float] = {}
        self.calls: list[tuple[str, object]] = []
        self.closed = False

    def _misbehave(self, call: str) -> None:
        fault = self.faults.get(call)
        if fault == "raise":
            raise RuntimeError(f"sample driver told to fail in {call}")
        if fault == "exit":
            raise SystemExit(f"sample driver told to exit in {call}")
        if fault == "interrupt":
            raise KeyboardInterrupt(f"sample driver told to interrupt {call}")
        if isinstance(fault, (int, float)):
            time.sleep(fault)

    def start(self, notify: Notify) -> None:
        self.hardware.notify = notify

    def scan(self) -> Mapping[str, Sequence[Device]]:
        self._misbehave("scan")
        inventory = self.hardware.snapshot()
        for name, devices in inventory.items():
            # Sharing is policy (config), not hardware: a reload can change it.
            res = self.config.resources.get(name)
            if res is not None and res.replicas is not None:
                inventory[name] = [d if d.replicas else replace(d, replicas=res.replicas) for d in devices]
        widgets = inventory.get("example.com/widget")
        if self.config.cdi and widgets:  # the CDI device each widget's answer names (driver API 1.2)
            inventory["example.com/widget"] = [replace(d, cdi_devices=(f"{CDI_KIND}={d.id}",)) for d in widgets]
        return inventory

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        self._misbehave("allocate")
        self.calls.append(("allocate", request))
        res = self.config.resources.get(request.resource)
        limit = res.max_request if res else None
        if limit is not None and len(request.requested_ids) > limit:
            raise AllocationRefused(f"maximum request size is {limit}; found {len(request.requested_ids)}")
        short = request.resource.rpartition("/")[2]
        alloc = ContainerAllocation(
            envs={f"{short.upper().replace('-', '_')}_DEVICES": ",".join(request.device_ids)},
            device_nodes=[DeviceNode(f"/dev/{i}", "/dev/null", "rw") for i in request.device_ids],
            mounts=[Mount("/etc/widget", "/dev/null", read_only=True)],
        )
        if self.config.cdi and request.resource == "example.com/widget":
            alloc.cdi_devices = [f"{CDI_KIND}={i}" for i in request.device_ids]
        return alloc

    def pre_start(self, resource: str, device_ids: Sequence[str]) -> None:
        self._misbehave("pre_start")
        self.calls.append(("pre_start", (resource, tuple(device_ids))))

    @property
    def has_pre_start(self) -> bool:
        return self.config.pre_start

    def cdi_specs(self) -> Sequence[CDISpec]:
        self._misbehave("cdi")
        if not self.config.cdi:
            return ()
        devices = self.hardware.snapshot().get("example.com/widget", [])
        return [CDISpec(CDI_KIND, [CDIDeviceSpec(d.id, [DeviceNode(f"/dev/{d.id}", "/dev/null")]) for d in devices])]

    def close(self) -> None:
        self.closed = True


class SampleSimulation(Simulation):
    def __init__(self, plugin: SamplePlugin) -> None:
        self.plugin = plugin
        self._broken: tuple[str, str] | None = None

    def inject_fault(self) -> str:
        hardware = self.plugin.hardware
        if hardware is None:
            return "no sample hardware yet"
        resource = sorted(hardware.resources)[0]
        device = sorted(hardware.resources[resource])[0]
        hardware.set_health(resource, device, False, "simulated fault")
        self._broken = (resource, device)
        return f"{resource} device {device} reports a fault"

    def clear_fault(self) -> str:
        if self._broken is None or self.plugin.hardware is None:
            return "nothing to repair"
        resource, device = self._broken
        self.plugin.hardware.set_health(resource, device, True)
        return f"{resource} device {device} is healthy again"


class SamplePlugin:
    """The plugin object: pluggy hooks that create a :class:`SampleDriver` (or ``driver_class``)."""

    MULTIDP_DRIVER_API = DRIVER_API_VERSION  # shipped with the host: always the host's own version

    def __init__(self, driver_class: type[SampleDriver] = SampleDriver) -> None:
        self.driver_class = driver_class
        self.hardware: SampleHardware | None = None
        self.driver: SampleDriver | None = None
        self.drivers: list[SampleDriver] = []

    @hookimpl
    def multidp_config_type(self) -> type:
        """The hook: :class:`SampleConfig`."""
        return SampleConfig

    @hookimpl
    def multidp_simulate(self, workdir: Path) -> Simulation:
        """The hook: widgets in memory need no files; a simulation that can inject faults."""
        return SampleSimulation(self)

    @hookimpl
    def multidp_create_driver(self, context: DriverContext) -> Driver:
        """The hook: a :class:`SampleDriver` over the plugin's :class:`SampleHardware`."""
        config: SampleConfig = context.config
        if self.hardware is None:
            self.hardware = SampleHardware(config)
        self.driver = self.driver_class(config, self.hardware)
        self.drivers.append(self.driver)
        return self.driver
