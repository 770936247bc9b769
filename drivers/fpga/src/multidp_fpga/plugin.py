"""The multidp plugin hooks of the fpga driver (entry point ``fpga`` in the group ``multidp``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from multidp import Driver, DriverContext, Simulation, hookimpl

from multidp_fpga.config import FpgaConfig, validate

# The multidp driver API this plugin is written for (Device.cdi_devices; 1.3: frontend, DRA mode;
# 1.4: each device's attributes).
MULTIDP_DRIVER_API = "1.4"


@hookimpl
def multidp_config_type() -> type:
    return FpgaConfig


@hookimpl
def multidp_simulate(workdir: Path) -> Simulation:
    # Imported here: a node that never simulates does not pay for the tree builder.
    from multidp_fpga.simulate import FpgaSimulation

    return FpgaSimulation(workdir)


@hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    from multidp_fpga.amdsettings import resolve
    from multidp_fpga.driver import FpgaDriver

    config = validate(context.config if isinstance(context.config, FpgaConfig) else FpgaConfig())
    simulated_modes = getattr(context.simulation, "card_modes", None)
    if simulated_modes and not config.card_modes:
        config = msgspec.structs.replace(config, card_modes=dict(simulated_modes))
    # AMD's variables and NameCustomize.json are read (and refused or warned about) even when checking.
    amd = resolve(config, context.environ, context.log, context.local_path) if config.amd else None
    # Creating the driver reads no sysfs (scans do), so a checking host can create and close it.
    # In DRA mode answers carry no annotation (driver.py): DRA cannot pass one on.
    return FpgaDriver(config, context.sysfs_root, context.dev_root, context.log, amd, dra=context.frontend == "dra")
