"""The multidp hooks of the RDMA driver (entry point ``rdma`` in the group ``multidp``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multidp
from multidp import ConfigError, Driver, DriverContext, Simulation

from multidp_rdma.config import Pool, RdmaConfig, Rules, resolve_pools
from multidp_rdma.poolconfig import Claim

# The multidp driver API this plugin is written for (checking, local_path, cdi_devices; 1.3: frontend, DRA mode;
# 1.4: each device's attributes).
MULTIDP_DRIVER_API = "1.4"
DRA = "dra"


@multidp.hookimpl
def multidp_config_type() -> Any:
    return RdmaConfig


@multidp.hookimpl
def multidp_simulate(workdir: Path) -> Simulation | None:
    from multidp_rdma.faketree import RdmaSimulation

    return RdmaSimulation(workdir)


def _load_file(config: RdmaConfig, context: DriverContext) -> tuple[Rules | None, list[Claim]]:
    """Pools from the incumbent's file ``configFile`` names, read where ``context`` says; its rules and
    (an SR-IOV file) the claims of all its selector objects."""
    from multidp_rdma.incumbents import load_file

    path = config.config_file
    if path is None:
        return None, []
    key = f"drivers.{context.name}.configFile"
    try:
        loaded = load_file(path, context.local_path(path), config.sriov_resource_prefix)
        config.pools = loaded.pools
        periodic = loaded.periodic_update_interval
        inline = config.periodic_update_interval
        if inline is not None and periodic is not None:
            context.log.info("drivers.%s.periodicUpdateInterval %d is set, so the file's periodicUpdateInterval "
                             "%d is not used", context.name, inline, periodic)
        # The operator's own config wins over the file it names, as rescanInterval wins over both.
        config.settle(inline if inline is not None else periodic, "", loaded.notes, context.log)
    except ValueError as exc:
        raise ConfigError(key, str(exc), path) from None
    return loaded.rules, loaded.claims


@multidp.hookimpl
def multidp_create_driver(context: DriverContext) -> Driver:
    from multidp_rdma.driver import RdmaDriver

    config = context.config if isinstance(context.config, RdmaConfig) else RdmaConfig()
    rules, claims = _load_file(config, context)
    pools = resolve_pools(config, rules)
    if not pools:
        source = (config.config_file if config.config_file is not None
                  else f"drivers.{context.name}.{'configList' if config.config_list is not None else 'pools'}")
        context.log.warning("%s gives no pool this driver serves: the RDMA driver serves no resource", source)
    for pool in pools:
        if pool.shared and pool.replicas == 0:
            context.log.warning("%s: rdmaHcaMax 0: the pool advertises no devices (a placeholder, as in "
                                "Mellanox's plugin)", pool.resource)
    dra = context.frontend == DRA
    if dra:
        _warn_dra_replicas(pools, context)
    if context.checking:  # config check: everything is validated; touch no hardware
        return Driver()
    return RdmaDriver(config, pools, context.sysfs_root, context.dev_root, context.log, claims,
                      simulation=context.simulation, dra=dra)


def _warn_dra_replicas(pools: list[Pool], context: DriverContext) -> None:
    """Through DRA the host offers a device with replicas once: such a shared pool serves one claim at a time."""
    for pool in pools:
        if pool.shared and pool.replicas and not pool.rules.index_ids:
            context.log.warning("%s: a shared pool with replicas (<pool>::n) is offered once through DRA, so one "
                                "claim at a time holds it; set drivers.%s.sharedIds: index to offer rdmaHcaMax "
                                "devices (0 ... N-1) that each give the whole pool", pool.resource, context.name)
