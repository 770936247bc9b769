"""The multidp hooks of the RDMA driver (entry point ``rdma`` in the group ``multidp``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multidp
from multidp import Driver, DriverContext, Simulation

from multidp_rdma.config import RdmaConfig, resolve_pools

MULTIDP_DRIVER_API = "1.0"  # the multidp driver API this plugin is written for


@multidp.hookimpl
def multidp_config_type() -> Any:
    return RdmaConfig


@multidp.hookimpl
def multidp_simulate(workdir: Path) -> Simulation | None:
    from multidp_rdma.faketree import RdmaSimulation

    return RdmaSimulation(workdir)


@multidp.hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    from multidp_rdma.driver import RdmaDriver

    config = context.config if isinstance(context.config, RdmaConfig) else RdmaConfig()
    pools = resolve_pools(config)
    if not pools:
        source = (config.config_file if config.config_file is not None
                  else f"drivers.{context.name}.{'configList' if config.config_list is not None else 'pools'}")
        context.log.warning("%s gives no pool this driver serves: the RDMA driver serves no resource", source)
    return RdmaDriver(config, pools, context.sysfs_root, context.dev_root, context.log)
