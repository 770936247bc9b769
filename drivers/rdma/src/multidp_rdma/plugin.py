"""The multidp hooks of the RDMA driver (entry point ``rdma`` in the group ``multidp``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multidp
from multidp.driver import Driver, DriverContext, Simulation

from multidp_rdma.config import RdmaConfig, check_intervals, resolve_pools


@multidp.hookimpl
def multidp_config_type() -> Any:
    return RdmaConfig


@multidp.hookimpl
def multidp_simulate(workdir: Path) -> Simulation | None:
    from multidp_rdma.simulation import RdmaSimulation

    return RdmaSimulation(workdir)


@multidp.hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    from multidp_rdma.driver import RdmaDriver

    config = context.config if isinstance(context.config, RdmaConfig) else RdmaConfig()
    section = f"drivers.{context.name}"
    check_intervals(config, section)
    pools = resolve_pools(config, section)
    if not pools:
        context.log.warning("%s.pools is an empty list: the RDMA driver serves no resource", section)
    return RdmaDriver(config, pools, context.sysfs_root, context.dev_root, context.log)
