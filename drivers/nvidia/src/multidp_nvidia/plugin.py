"""The nvidia driver's pluggy hooks (entry point ``nvidia`` in the group ``multidp``).

The module-level hooks use the real NVML (nvidia-ml-py, imported only when the
driver first scans) or, under ``--simulate``, the fake one.
:class:`NvidiaPlugin` is the same plugin with an NVML of the caller's choice,
for tests and the device check: ``multidp_host({"nvidia": NvidiaPlugin(fake)})``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from multidp import DriverContext, Simulation, hookimpl

from multidp_nvidia.config import NvidiaConfig
from multidp_nvidia.driver import NvidiaDriver, NvmlUnavailable
from multidp_nvidia.imex import ImexChannelMissing
from multidp_nvidia.nvml import load_pynvml
from multidp_nvidia.settings import resolve

# The multidp driver API this plugin is written for (checking, local_path, cdi_devices; 1.3: frontend, DRA mode;
# 1.4: each device's attributes and capacity).
MULTIDP_DRIVER_API = "1.4"


def create(context: DriverContext, nvml_source: Callable[[], Any] | None = None,
           recover_after: float | None = None) -> NvidiaDriver:
    """The driver for ``context``; ``nvml_source`` overrides where NVML comes from, and
    ``recover_after`` the default recovery time (the config's ``health.recoverAfter`` wins)."""
    config = context.config if isinstance(context.config, NvidiaConfig) else NvidiaConfig()
    # Every file the config names is read where context.local_path says (config check --file POD=LOCAL).
    # In DRA mode (context.frontend) what cannot work is refused and every answer is CDI (dra_mode).
    settings = resolve(config, context.environ, context.local_path, context.frontend)
    for warning in settings.warnings:
        context.log.warning("%s", warning)
    simulation = context.simulation
    proc_root = Path(settings.proc_root)
    if nvml_source is None and simulation is not None:
        from multidp_nvidia.simulation import NvidiaSimulation  # only under --simulate: it imports pynvml

        if not isinstance(simulation, NvidiaSimulation):
            raise TypeError(f"the nvidia driver cannot use a {type(simulation).__name__} simulation")
        fake = simulation.nvml_for(settings.simulated_machine)
        nvml_source = lambda: fake  # noqa: E731 - a constant source
        proc_root, recover_after = simulation.proc_root, simulation.recover_after
        if settings.uses_cdi and settings.container_driver_root == "/":
            settings = msgspec.structs.replace(settings, container_driver_root=str(simulation.driver_root))
    try:
        return NvidiaDriver(settings, nvml_source or load_pynvml, context.sysfs_root, context.dev_root, proc_root,
                            context.log, recover_after, checking=context.checking)
    except NvmlUnavailable as exc:
        raise RuntimeError(f"{exc} (failOnInitError is true)") from exc
    except ImexChannelMissing as exc:
        raise RuntimeError(str(exc)) from exc


class NvidiaPlugin:
    """The plugin with a chosen NVML (a :class:`~multidp_nvidia.fake_nvml.FakeNvml`, or pynvml)."""

    MULTIDP_DRIVER_API = MULTIDP_DRIVER_API  # the same plugin, so the same driver API (config check creates it)

    def __init__(self, nvml: Any = None, recover_after: float | None = None) -> None:
        self.nvml = nvml
        self.recover_after = recover_after
        self.drivers: list[NvidiaDriver] = []

    @hookimpl
    def multidp_config_type(self) -> type:
        return NvidiaConfig

    @hookimpl
    def multidp_create_driver(self, context: DriverContext) -> NvidiaDriver:
        driver = create(context, (lambda: self.nvml) if self.nvml is not None else None, self.recover_after)
        self.drivers.append(driver)
        return driver


@hookimpl
def multidp_config_type() -> type:
    return NvidiaConfig


@hookimpl
def multidp_simulate(workdir: Path) -> Simulation:
    from multidp_nvidia.simulation import NvidiaSimulation

    return NvidiaSimulation(workdir)


@hookimpl
def multidp_create_driver(context: DriverContext) -> NvidiaDriver:
    return create(context)


__all__ = ["NvidiaPlugin", "create", "multidp_config_type", "multidp_create_driver",
           "multidp_simulate"]
