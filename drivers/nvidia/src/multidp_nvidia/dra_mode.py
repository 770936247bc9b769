"""The nvidia driver in DRA mode (``frontend: dra``): the config that cannot work there is refused.

Through DRA every answer must be complete as CDI (driver API 1.3): pods do not run under NVIDIA's
container runtime, so nothing acts on ``NVIDIA_VISIBLE_DEVICES`` or the volume-mounts list, and the
kubelet takes CDI device IDs from the claim's answer, never annotations. The driver therefore answers
with its own CDI devices (the ``cdi-cri`` strategy, its DRA default) and refuses, naming where the
value came from (multidp's section, NVIDIA's variable or NVIDIA's file), every key whose value would
otherwise be dropped without a word:

- ``deviceListStrategy`` other than ``cdi-cri``; ``passDeviceSpecs: true``; ``cdiAnnotationPrefix``;
- ``gdsEnabled`` / ``mofedEnabled`` / ``gdrcopyEnabled`` (NVIDIA's runtime acts on their variables);
- ``sharing.timeSlicing`` / ``sharing.mps`` resources, ``sharedDevicesAllocationPolicy`` and
  ``replicaPolicy``: replicas and preferred allocation are Device Plugin API notions; through DRA the
  host offers each GPU once, the scheduler picks the devices, and pods share a GPU by sharing a claim
  (NVIDIA's own DRA driver, too, takes sharing from the claim's parameters, not from node config).

Everything else (MIG strategies, resource names, IMEX channels, health, the roots and the CDI hook
path) works as in device-plugin mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from multidp import ConfigError

from multidp_nvidia.layering import KEY, pick

DRA = "dra"
DRA_STRATEGIES = ("cdi-cri",)  # what a DRA answer is: the driver's CDI device names, nothing else
_LEAVE = "leave it unset with frontend: dra"
_NO_RUNTIME = "needs NVIDIA's container runtime, which DRA pods do not run under"
_STRATEGY_PROBLEMS = {
    "envvar": f"{_NO_RUNTIME}; use cdi-cri or {_LEAVE}",
    "volume-mounts": f"{_NO_RUNTIME}; use cdi-cri or {_LEAVE}",
    "cdi-annotations": "answers with an annotation, which DRA cannot pass on (the claim's answer carries CDI "
                       f"device IDs); use cdi-cri or {_LEAVE}",
}


def _strategy_problem(value: Any) -> str:
    """Why a ``deviceListStrategy`` value cannot work in DRA mode ('' if it can; unknown names are
    left to the device-plugin checks, which name them)."""
    items = value if isinstance(value, list) else str(value).strip("[]").split(",")
    for name in (str(s).strip() for s in items):
        if name in _STRATEGY_PROBLEMS:
            return f"{name} {_STRATEGY_PROBLEMS[name]}"
    return ""


def _true(why: str) -> Callable[[Any], str]:
    return lambda value: why if value is True else ""


def _set(why: str) -> Callable[[Any], str]:
    return lambda value: why


def _entries(why: str) -> Callable[[Any], str]:
    return lambda value: why if value else ""  # an empty list shares nothing


class Rule(msgspec.Struct, frozen=True):
    """One key that DRA mode refuses for some values.

    ``key`` is NVIDIA's spelling (also the key under ``drivers.nvidia``), ``path`` the attribute path
    in the config file's shape; ``variable`` / ``shortcut`` name NVIDIA's variable and multidp's
    top-level key for it, where there is one. ``problem`` says why a value cannot work ('' if it can).
    """

    key: str
    path: tuple[str, ...]
    problem: Callable[[Any], str]
    variable: str | None = None
    shortcut: str | None = None


_REPLICAS = ("through DRA the host offers each GPU once and pods share a GPU by sharing a ResourceClaim; "
             "remove it with frontend: dra")
_EXTRA = ("makes NVIDIA's container runtime add its devices, and DRA pods do not run under it (multidp builds "
          f"no CDI device for them); {_LEAVE} or false")
RULES: tuple[Rule, ...] = (
    Rule("flags.plugin.deviceListStrategy", ("flags", "plugin", "device_list_strategy"), _strategy_problem,
         "DEVICE_LIST_STRATEGY", "deviceListStrategy"),
    Rule("flags.plugin.passDeviceSpecs", ("flags", "plugin", "pass_device_specs"),
         _true("true only tells the Device Plugin API the device nodes; in DRA mode the driver's CDI spec "
               f"carries them; {_LEAVE} or false"), "PASS_DEVICE_SPECS", "passDeviceSpecs"),
    Rule("flags.plugin.cdiAnnotationPrefix", ("flags", "plugin", "cdi_annotation_prefix"),
         _set(f"names the annotation of the cdi-annotations strategy, which DRA cannot pass on; {_LEAVE}"),
         "CDI_ANNOTATION_PREFIX"),
    Rule("flags.gdsEnabled", ("flags", "gds_enabled"), _true(f"NVIDIA_GDS=enabled {_EXTRA}"), "GDS_ENABLED"),
    Rule("flags.mofedEnabled", ("flags", "mofed_enabled"), _true(f"NVIDIA_MOFED=enabled {_EXTRA}"),
         "MOFED_ENABLED"),
    Rule("flags.gdrcopyEnabled", ("flags", "gdrcopy_enabled"), _true(f"NVIDIA_GDRCOPY=enabled {_EXTRA}"),
         "GDRCOPY_ENABLED"),
    Rule("sharing.timeSlicing.resources", ("sharing", "time_slicing", "resources"),
         _entries(f"time-slicing replicas are a Device Plugin API device list; {_REPLICAS}")),
    Rule("sharing.mps.resources", ("sharing", "mps", "resources"),
         _entries(f"MPS replicas are a Device Plugin API device list; {_REPLICAS}")),
    Rule("flags.plugin.sharedDevicesAllocationPolicy", ("flags", "plugin", "shared_devices_allocation_policy"),
         _set("picks replicas for GetPreferredAllocation, which DRA does not call (the scheduler picks the "
              f"devices); {_LEAVE}"), "SHARED_DEVICES_ALLOCATION_POLICY"),
    Rule("replicaPolicy", ("replica_policy",),
         _set(f"picks replicas for GetPreferredAllocation, which DRA does not call; {_LEAVE}")),
)

SHORTCUTS, SECTION, VARIABLES, FILE = "shortcuts", "section", "variables", "file"


def check_dra_config(layers: Sequence[tuple[str, Any]], source: str | None = None) -> None:
    """Refuse what cannot work in DRA mode: a ConfigError naming the key where its value in force was set.

    ``layers`` are ``(kind, layer)`` pairs, highest precedence first, as :func:`multidp_nvidia.settings.resolve`
    builds them: multidp's shortcut keys, multidp's section, NVIDIA's variables, NVIDIA's file (``source``).
    """
    for rule in RULES:
        found = next(((kind, value) for kind, layer in layers
                      if (value := pick([layer], *rule.path)) is not None), None)
        if found is None:
            continue
        kind, value = found
        why = rule.problem(value)
        if why:
            raise _error(rule, kind, why, source)


def _error(rule: Rule, kind: str, why: str, source: str | None) -> ConfigError:
    if kind == SHORTCUTS and rule.shortcut:
        return ConfigError(f"{KEY}.{rule.shortcut}", why)
    if kind == VARIABLES and rule.variable:
        return ConfigError(rule.variable, why)
    if kind == FILE:
        return ConfigError(rule.key, why, source)
    return ConfigError(f"{KEY}.{rule.key}", why)
