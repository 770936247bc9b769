"""The multidp plugin hooks of the fpga driver (entry point ``fpga`` in the group ``multidp``)."""

from __future__ import annotations

from pathlib import Path

from multidp import Driver, DriverContext, Simulation, hookimpl

from multidp_fpga.config import FpgaConfig, validate

MULTIDP_DRIVER_API = "1.0"  # the multidp driver API this plugin is written for


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
    from multidp_fpga.driver import FpgaDriver

    config = context.config if isinstance(context.config, FpgaConfig) else FpgaConfig()
    return FpgaDriver(validate(config), context.sysfs_root, context.dev_root, context.log)
