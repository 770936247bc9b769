"""The incumbents' config files, read as they are, turned into this driver's pools.

- Mellanox's k8s-rdma-shared-dev-plugin: ``{"periodicUpdateInterval": 300, "configList": [...]}``
  (``mellanox.py``): every entry a shared pool, Mellanox's rules and IDs.
- The SR-IOV network device plugin: ``{"resourceList": [...]}`` (``sriov.py``): every entry that asks
  for RDMA an exclusive pool, that plugin's rules; the others stay with it.

Both incumbents decode with Go's encoding/json (``gojson.py``): keys in any case, unknown keys
ignored. Here an unknown key is read the same way and reported once, naming the file and key.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
from multidp import ConfigError, read_small_file

from multidp_rdma.mellanox import mellanox_pools, read_top
from multidp_rdma.poolconfig import Claim, PoolConfig, Rules
from multidp_rdma.sriov import RULES as SRIOV_RULES
from multidp_rdma.sriov import sriov_pools

__all__ = ["MELLANOX_RULES", "SRIOV_RULES", "Incumbent", "load_file"]
MELLANOX_RULES = Rules(origin="mellanox", overlap=True, first_netdev=True, index_ids=True, devinfo=False)


class Incumbent(msgspec.Struct):
    """What a file gives: pools, the rules they follow, Mellanox's periodicUpdateInterval, lines to log once,
    and (an SR-IOV file) every selector object in file order, whose devices it takes (``pools.assign``)."""

    pools: list[PoolConfig]
    rules: Rules
    periodic_update_interval: int | None = None
    notes: list[str] = msgspec.field(default_factory=list)
    claims: list[Claim] = msgspec.field(default_factory=list)


def load_file(path: str, local: Path | None = None, sriov_prefix: str = "intel.com") -> Incumbent:
    """Read an incumbent's config file (at ``local`` when given); ValueError says what is wrong."""
    try:
        # The host's bounded reader: a FIFO, /dev/zero or a huge file is refused, never read.
        text = read_small_file(local or path).decode("utf-8")
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply to read") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the top level must be a JSON object, not {type(raw).__name__}")
    # Which format: the key each incumbent's decoder would fill, in any case.
    mellanox = any(str(key).casefold() == "configlist" for key in raw)
    sriov = any(str(key).casefold() == "resourcelist" for key in raw)
    if mellanox and sriov:
        raise ValueError("has both configList (Mellanox's plugin) and resourceList (the SR-IOV plugin); "
                         "give one file per format")
    notes: list[str] = []
    if sriov:
        claims: list[Claim] = []
        pools = sriov_pools(raw, path, notes, sriov_prefix, claims)
        return Incumbent(pools, SRIOV_RULES, None, notes, claims)
    if mellanox:
        entries, periodic = read_top(raw, "the top level", notes)
        pools = mellanox_pools(entries, "configList", notes)
        return Incumbent(pools, MELLANOX_RULES, periodic, [f"{path}: {note}" for note in notes])
    raise ValueError("has neither configList (Mellanox's k8s-rdma-shared-dev-plugin) nor resourceList "
                     f"(the SR-IOV network device plugin); keys found: {', '.join(map(str, raw)) or 'none'}")
