"""The ``drivers.rdma`` config section: pools, health policy, polling, and the incumbents' configs.

Key names follow the incumbents (camelCase): ``resourceName``,
``resourcePrefix``, ``rdmaHcaMax`` and the selector keys of the Mellanox shared
device plugin, ``pfNames`` and ``pciAddresses`` in the SR-IOV plugin's manner.
Pools come from ``pools``, from Mellanox's ``configList`` pasted in, or from
``configFile`` (an incumbent's JSON file, which the plugin reads at
``context.local_path``, so at driver start and by ``multidp config check``;
see ``incumbents.py``). msgspec checks types and unknown keys; the structs'
``__post_init__`` checks the rest (resource names, IDs, addresses, ranges)
and raises ValueError starting with the key, which msgspec reports with its
path (``drivers.rdma.pools[0].selectors: vendors[0]: 'mellanox' is not …``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from multidp_rdma.gomatch import exact_of
from multidp_rdma.incumbents import MELLANOX_RULES
from multidp_rdma.mellanox import mellanox_pools
from multidp_rdma.poolconfig import (
    DEFAULT_HCA_MAX,
    DEFAULT_PREFIX,
    DEFAULT_RESOURCE,
    PfName,
    Pool,
    PoolConfig,
    Rules,
    Selection,
    Selectors,
)

__all__ = ["DEFAULT_HCA_MAX", "DEFAULT_PREFIX", "DEFAULT_RESOURCE", "PfName", "Pool", "PoolConfig", "RdmaConfig",
           "Rules", "Selection", "Selectors", "resolve_pools"]

DEFAULT_RESCAN_S = 30.0
MIN_RESCAN_S, MAX_RESCAN_S = 1, 3600
# Where the driver's own lines go (the host names a driver's logger multidp.driver.<name>).
log = logging.getLogger("multidp.driver.rdma")


class RdmaConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pools: list[PoolConfig] | None = None
    config_file: str | None = None  # Mellanox's or the SR-IOV plugin's config.json, as it is (read by the plugin)
    config_list: list[dict[str, Any]] | None = None  # Mellanox's configList pasted in: shared pools
    periodic_update_interval: int | None = None  # Mellanox's name for rescanInterval (0: theirs is off)
    port_health: Literal["any", "all"] = "any"
    poll_interval: float = 0.25
    # Unset: periodicUpdateInterval (inline, else the file's) decides, else 30 s. Read rescan_seconds.
    rescan_interval: float | msgspec.UnsetType = msgspec.UNSET
    # YAML 1.1 reads an unquoted off as false (and on as true), in the file and in MULTIDP_RDMA_*: both are taken.
    verbs: Literal["auto", "off"] | bool = "auto"
    udev: Literal["auto", "off"] | bool = "auto"
    # Shared pools' IDs: "index" is Mellanox's 0..N-1, "replicas" the host's <pool>::n; auto: index for
    # Mellanox's configs (configFile or configList), replicas for pools.
    shared_ids: Literal["auto", "index", "replicas"] = "auto"
    sriov_resource_prefix: str = "intel.com"  # the SR-IOV plugin's --resource-prefix, for its file
    use_cdi: bool = False  # the incumbents' --use-cdi: answer with CDI annotations instead of device nodes
    # Where the Network Plumbing WG device-info files go (<dir>/dp/...); auto: the standard folder on a node
    # whose /sys is read, off on a fake tree. An unquoted off arrives as false (and on as true), as above.
    device_info_dir: str | bool = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.verbs, bool):
            self.verbs = "auto" if self.verbs else "off"
        if isinstance(self.udev, bool):
            self.udev = "auto" if self.udev else "off"
        if not 0.05 <= self.poll_interval <= 60:
            raise ValueError(f"pollInterval: must be between 0.05 and 60 seconds, not {self.poll_interval}")
        given = [key for key, value in (("pools", self.pools), ("configFile", self.config_file),
                                        ("configList", self.config_list)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give only one of them (each is a whole list of pools)")
        if isinstance(self.device_info_dir, bool):
            self.device_info_dir = "auto" if self.device_info_dir else "off"
        if self.device_info_dir not in ("auto", "off") and not self.device_info_dir.startswith("/"):
            raise ValueError(f"deviceInfoDir: {self.device_info_dir!r} is not auto, off or an absolute folder")
        notes: list[str] = []
        if self.config_list is not None:
            self.pools = mellanox_pools(self.config_list, "configList", notes, strict=True)
        if self.config_file is None:
            self.settle(self.periodic_update_interval, "", notes)

    def settle(self, periodic: int | None, where: str, notes: list[str], logger: logging.Logger = log) -> None:
        """Fix rescanInterval from periodicUpdateInterval, check the pools' names, log ``notes``."""
        if periodic is not None and periodic < 0:
            raise ValueError(f"{where}periodicUpdateInterval: must be 0 (no periodic update) or more seconds, "
                             f"not {periodic}")
        if isinstance(self.rescan_interval, msgspec.UnsetType):
            self.rescan_interval = DEFAULT_RESCAN_S if periodic is None else _from_periodic(periodic, where, notes)
        elif periodic is not None:
            notes.append(f"rescanInterval {self.rescan_interval:g} s is set, so periodicUpdateInterval {periodic} "
                         "is not used")
        if not MIN_RESCAN_S <= self.rescan_interval <= MAX_RESCAN_S:
            raise ValueError(f"rescanInterval: must be between {MIN_RESCAN_S} and {MAX_RESCAN_S} seconds, "
                             f"not {self.rescan_interval}")
        seen: dict[str, int] = {}
        for index, pool in enumerate(self.pools or ()):
            if pool.resource in seen:
                raise ValueError(f"pools[{index}].resourceName: {pool.resource!r} is already the resource of "
                                 f"pools[{seen[pool.resource]}]")
            seen[pool.resource] = index
        for note in notes:  # after every check: a refused config says only why it is refused
            logger.warning("%s", note)

    @property
    def device_info_folder(self) -> str:
        """deviceInfoDir: auto, off or a folder (a YAML boolean read as auto or off)."""
        if isinstance(self.device_info_dir, bool):
            return "auto" if self.device_info_dir else "off"
        return self.device_info_dir

    @property
    def rescan_seconds(self) -> float:
        """Seconds between full rescans (``settle`` has replaced UNSET by then)."""
        return DEFAULT_RESCAN_S if isinstance(self.rescan_interval, msgspec.UnsetType) else self.rescan_interval


def _from_periodic(seconds: int, where: str, notes: list[str]) -> float:
    """Mellanox's periodicUpdateInterval as a rescanInterval.

    Out of range, it is clamped rather than refused: the file was valid for
    Mellanox's plugin, and the rescan is only a safety net here (device changes
    arrive as events or are noticed at every poll), so a different period changes no answer.
    """
    if seconds < 0:
        raise ValueError(f"{where}periodicUpdateInterval: must be 0 (no periodic update) or more seconds, "
                         f"not {seconds}")
    if seconds == 0:
        notes.append(f"periodicUpdateInterval 0 (no periodic update in Mellanox's plugin): a full rescan runs "
                     f"every {MAX_RESCAN_S} s, the longest rescanInterval; device changes are still seen as events "
                     "or at every poll")
        return float(MAX_RESCAN_S)
    if seconds > MAX_RESCAN_S:
        notes.append(f"periodicUpdateInterval {seconds} s is above {MAX_RESCAN_S} s, the longest rescanInterval: "
                     f"using {MAX_RESCAN_S} s")
        return float(MAX_RESCAN_S)
    return float(seconds)


def resolve_pools(config: RdmaConfig, rules: Rules | None = None) -> list[Pool]:
    """The configured pools, or the default one (the config was checked when it was built).

    ``rules``: those of the file the pools came from (configFile); else Mellanox's for a pasted
    configList and multidp's own for ``pools``. ``sharedIds`` decides the shared pools' IDs.
    """
    if rules is None:
        rules = MELLANOX_RULES if config.config_list is not None else Rules()
    if config.shared_ids != "auto":
        rules = msgspec.structs.replace(rules, index_ids=config.shared_ids == "index")
    if config.pools is None:
        return [Pool(resource=DEFAULT_RESOURCE, prefix=DEFAULT_PREFIX, short_name="hca", shared=False, replicas=1,
                     include_issm=False, selections=(Selection(),), default=True, rules=rules)]
    pools: list[Pool] = []
    for pool in config.pools:
        shared = pool.mode == "shared"
        replicas = pool.rdma_hca_max if pool.rdma_hca_max is not None else DEFAULT_HCA_MAX
        prefix, _, short = pool.resource.partition("/")
        # An incumbent's pools match as it does (exact strings, gomatch.py); multidp's own normalise.
        objects = pool.selectors if isinstance(pool.selectors, list) else [pool.selectors]
        selections = pool.selections() if rules.origin == "pools" else tuple(exact_of(s) for s in objects)
        pools.append(Pool(resource=pool.resource, prefix=prefix, short_name=short, shared=shared,
                          replicas=replicas if shared else 1, include_issm=pool.include_issm,
                          selections=selections, rules=rules))
    return pools
