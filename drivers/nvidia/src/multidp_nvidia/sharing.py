"""Resolving NVIDIA's ``sharing`` section: time-slicing or MPS replicas, and the MPS roots.

Both flavours share one schema (``renameByDefault``, ``failRequestsGreaterThanOne``,
``resources[{name, replicas, rename, devices}]``) and become the same
:class:`ReplicaRule` list that :func:`multidp_nvidia.inventory.apply_replicas` applies.
What differs follows NVIDIA's plugin and its MPS control daemon:

- time-slicing honours ``devices`` and ``rename`` (multidp's per-GPU sharing);
- MPS ignores them with a warning, as NVIDIA's plugin and daemon both do: the daemon
  (which reads the same file) shares every GPU of the resource under its default name,
  puts them in EXCLUSIVE_PROCESS mode and creates ``<mpsRoot>/<resource>/pipe``, so
  serving another set or name would hand out GPUs the daemon does not serve;
- MPS refuses requests for more than one replica unless ``failRequestsGreaterThanOne``
  is explicitly false (NVIDIA forced it up to v0.20; its main branch defaults it to true);
- MPS needs 2..48 replicas (48 is the MPS server's client limit on Volta and newer) and
  is refused with ``migStrategy: mixed`` (NVIDIA refuses it too);
- both at once are refused: NVIDIA documents them as mutually exclusive and would
  silently drop ``timeSlicing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from multidp import ConfigError

from multidp_nvidia.config import ReplicatedResource
from multidp_nvidia.layering import KEY, checked_name, pick, plain_root
from multidp_nvidia.replicas import checked_devices

DEFAULT_MPS_ROOT = "/run/nvidia/mps"  # the chart value NVIDIA's DaemonSets pass as MPS_ROOT
MPS_MAX_CLIENTS = 48  # nvidia-cuda-mps-server's limit on Volta and newer (16 before)


class ReplicaRule(msgspec.Struct, frozen=True):
    """A resolved sharing entry: which devices of ``resource`` get ``replicas``, served as ``serve_as``."""

    resource: str
    replicas: int
    serve_as: str
    devices: str | int | tuple[str, ...]  # "all", a count, or indexes / UUIDs
    where: str  # the key it came from, for messages
    mps: bool = False  # shared through NVIDIA's MPS control daemon


class SharingSettings(msgspec.Struct, frozen=True):
    rules: tuple[ReplicaRule, ...] = ()
    fail_requests_greater_than_one: bool = False
    mps_root: str = DEFAULT_MPS_ROOT  # host path: what Allocate answers mount
    mps_container_root: str = DEFAULT_MPS_ROOT  # where this container sees it: readiness checks
    warnings: tuple[str, ...] = ()


def _devices(entry: ReplicatedResource, where: str, warnings: list[str]) -> str | int | tuple[str, ...]:
    devices = checked_devices(entry.devices, f"{where}.devices", None)
    if devices == ():  # NVIDIA takes an empty list; here it selects nothing, which deserves a word
        warnings.append(f"{where}.devices is an empty list: no device of {entry.name} is shared")
    return devices


def _rules(entries: Sequence[ReplicatedResource], section: str, rename_by_default: bool,
           warnings: list[str]) -> list[ReplicaRule]:
    mps = section == "mps"
    rules = []
    for i, entry in enumerate(entries):
        where = f"{KEY}.sharing.{section}.resources[{i}]"
        # At least 2 as NVIDIA (replicas.go); MPS also at most the MPS server's client limit.
        if entry.replicas < 2 or (mps and entry.replicas > MPS_MAX_CLIENTS):
            bound = f"between 2 and {MPS_MAX_CLIENTS} (MPS clients per GPU)" if mps else "at least 2"
            raise ConfigError(f"{where}.replicas", f"must be {bound}, not {entry.replicas}")
        resource = checked_name(entry.name, f"{where}.name")
        devices = _devices(entry, where, warnings)
        rename = entry.rename
        if mps and (rename or devices != "all"):
            ignored = " and ".join(k for k, v in (("rename", rename), ("devices", devices != "all")) if v)
            warnings.append(f"{where}: {ignored} ignored, as NVIDIA's plugin and MPS control daemon ignore them; "
                            "the daemon shares every GPU of the resource under its default name")
            rename, devices = None, "all"
        if rename:
            serve_as = checked_name(rename, f"{where}.rename")
        elif rename_by_default:
            serve_as = checked_name(resource + ".shared", f"{where}.name")
        else:
            serve_as = resource
        rules.append(ReplicaRule(resource, entry.replicas, serve_as, devices, where, mps))
    return rules


def resolve_sharing(layers: Sequence[Any], mig_strategy: str, mps_container_root: str | None) -> SharingSettings:
    """The replica rules and MPS settings from ``layers`` (see :mod:`multidp_nvidia.settings`)."""
    sliced = pick(layers, "sharing", "time_slicing", "resources") or []
    shared = pick(layers, "sharing", "mps", "resources") or []
    if sliced and shared:
        raise ConfigError(f"{KEY}.sharing", "timeSlicing and mps are mutually exclusive (NVIDIA's plugin would "
                                            "silently ignore timeSlicing); keep one of them")
    mps_root = pick(layers, "flags", "mps_root") or DEFAULT_MPS_ROOT
    container_root = mps_container_root or mps_root
    warnings: list[str] = []
    if not shared:  # the roots are unused: NVIDIA's chart sets MPS_ROOT on every node, MPS or not
        rename_by_default = bool(pick(layers, "sharing", "time_slicing", "rename_by_default"))
        fail = bool(pick(layers, "sharing", "time_slicing", "fail_requests_greater_than_one"))
        return SharingSettings(tuple(_rules(sliced, "timeSlicing", rename_by_default, warnings)), fail,
                               mps_root, container_root, tuple(warnings))
    # The host root becomes mount sources in GPU containers: only a plain absolute path is taken.
    mps_root = plain_root(mps_root, "flags.mpsRoot")
    container_root = plain_root(container_root, "mpsContainerRoot")
    if mig_strategy == "mixed":
        raise ConfigError(f"{KEY}.flags.migStrategy", "mixed is not supported with sharing.mps (NVIDIA's plugin "
                                                     "refuses it too); MPS shares whole GPUs only")
    rename_by_default = bool(pick(layers, "sharing", "mps", "rename_by_default"))
    fail = pick(layers, "sharing", "mps", "fail_requests_greater_than_one")
    if fail is False:
        warnings.append(f"{KEY}.sharing.mps.failRequestsGreaterThanOne is false: a container may get several "
                        "MPS replicas, but MPS limits its memory and threads per client, not per replica")
    rules = _rules(shared, "mps", rename_by_default, warnings)
    return SharingSettings(tuple(rules), fail is not False, mps_root, container_root, tuple(warnings))
