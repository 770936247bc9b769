"""Which resource each GPU and MIG device is served as, NVIDIA's way, and with what replicas.

MIG strategies as NVIDIA's plugin: ``none`` serves whole GPUs; ``single`` serves
the MIG devices of uniformly split GPUs as ``nvidia.com/gpu``; ``mixed`` serves
one ``nvidia.com/mig-<profile>`` resource per profile (``+`` becomes ``.``) and
whole GPUs without MIG as ``nvidia.com/gpu``. Sharing entries (time-slicing or
MPS) then give the devices they select replicas and, optionally, another resource name.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping

import msgspec

from multidp_nvidia.describe import Attribute, gpu_attributes, gpu_capacity, mig_attributes, mig_capacity
from multidp_nvidia.discovery import GpuInfo, Machine, MigInfo
from multidp_nvidia.settings import Settings
from multidp_nvidia.sharing import ReplicaRule

WHOLE = 0xFFFFFFFF


class MigConfigurationError(RuntimeError):
    """The GPUs' MIG setup does not fit the MIG strategy or the sharing (NVIDIA refuses to start on it)."""


class Served(msgspec.Struct, frozen=True):
    """One device as served: its advertised ID and everything an Allocate answer needs."""

    id: str  # GPU or MIG UUID (replicas are made by the host from it)
    resource: str
    name_id: str  # what the Allocate answer names: UUID, or index with deviceIDStrategy=index
    gpu_uuid: str
    gpu_index: int
    gi: int = WHOLE
    ci: int = WHOLE
    nodes: tuple[str, ...] = ()  # /dev/nvidia<minor>, then the MIG capability nodes
    numa: int | None = None
    replicas: int | None = None
    problem: str = ""
    info: dict[str, str] = msgspec.field(default_factory=dict)
    mps: bool = False  # its replicas go through NVIDIA's MPS control daemon
    attributes: Mapping[str, Attribute] = msgspec.field(default_factory=dict)  # for DRA, made at discovery
    capacity: Mapping[str, str | int] = msgspec.field(default_factory=dict)

    @property
    def is_mig(self) -> bool:
        return self.gi != WHOLE


class Inventory(msgspec.Struct, frozen=True):
    resources: dict[str, tuple[Served, ...]]
    by_id: dict[str, Served]
    gpu_of_uuid: dict[str, GpuInfo]


def _gpu_served(gpu: GpuInfo, resource: str, settings: Settings, machine: Machine) -> Served:
    return Served(gpu.uuid, resource, gpu.uuid if settings.id_strategy == "uuid" else str(gpu.index), gpu.uuid,
                  gpu.index, nodes=(gpu.node,), numa=gpu.numa, problem=gpu.problem,
                  info={"index": str(gpu.index), "model": gpu.name, "bus": gpu.bus_id},
                  attributes=gpu_attributes(gpu, machine), capacity=gpu_capacity(gpu))


def _mig_served(gpu: GpuInfo, mig: MigInfo, resource: str, settings: Settings, machine: Machine) -> Served:
    # Capability nodes matter only when we hand out device nodes ourselves.
    needs_caps = settings.pass_device_specs or settings.uses_cdi
    return Served(mig.uuid, resource, mig.uuid if settings.id_strategy == "uuid" else mig.index, gpu.uuid,
                  gpu.index, mig.gi, mig.ci, (gpu.node, *mig.cap_nodes), gpu.numa,
                  problem=mig.problem if needs_caps else "",
                  info={"index": mig.index, "profile": mig.profile, "gpu": gpu.uuid},
                  attributes=mig_attributes(gpu, mig, machine), capacity=mig_capacity(mig))


@functools.lru_cache(maxsize=64)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """NVIDIA's rule (resources.go, v0.20.0): ``*`` is any text, everything else literal, and the
    pattern must match the whole name: ``1g.24gb`` does not match ``1g.24gb+me``, and ``A100``
    does not match ``NVIDIA A100-SXM4-40GB`` (``*A100*`` does)."""
    return re.compile(".*".join(re.escape(literal) for literal in pattern.split("*")))


def matches(pattern: str, value: str) -> bool:
    return _wildcard(pattern).fullmatch(value) is not None


def _match(patterns: tuple[tuple[str, str], ...], value: str) -> str | None:
    return next((name for pattern, name in patterns if matches(pattern, value)), None)


def _mig_resource(mig: MigInfo, settings: Settings, log: logging.Logger) -> str | None:
    """The operator's resources.mig patterns first, then NVIDIA's defaults (rm.go AddDefaultResourcesToConfig):
    ``*`` → ``nvidia.com/gpu`` under single; under mixed ``mig-<profile>`` (``+`` → ``.``) for each profile
    of a full GPU instance, so that a compute-instance slice only an operator's pattern serves."""
    if mig.profile == "unknown":
        log.warning("MIG device %s: %s; not served", mig.uuid, mig.problem)
        return None
    name = _match(settings.mig_resources, mig.profile)
    if name is not None:
        return name
    if settings.mig_strategy == "single":
        return "nvidia.com/gpu"
    if not mig.full_instance:
        log.warning("MIG device %s is a compute-instance slice (%s); NVIDIA's mixed strategy serves only "
                    "full GPU instances, so it is not served unless a resources.mig pattern names it",
                    mig.uuid, mig.profile)
        return None
    return "nvidia.com/mig-" + mig.profile.replace("+", ".")


def _check_single(machine: Machine) -> None:
    enabled = [g for g in machine.gpus if g.mig_enabled]
    if enabled and len(enabled) != len(machine.gpus):
        raise MigConfigurationError("MIG strategy single: all GPUs on the node must have the same MIG mode "
                                    f"({len(enabled)} of {len(machine.gpus)} have MIG enabled)")
    profiles = {m.profile for g in enabled for m in g.migs}
    if len(profiles) > 1:
        raise MigConfigurationError(f"MIG strategy single: more than one MIG profile on the node "
                                    f"({', '.join(sorted(profiles))}); use mixed")


def build(machine: Machine, settings: Settings, log: logging.Logger) -> Inventory:
    """Every served device by resource, in GPU index order, replicas applied."""
    if settings.mig_strategy == "single":
        _check_single(machine)
    served: list[Served] = []
    for gpu in machine.gpus:
        if gpu.mig_enabled and settings.mig_strategy != "none":
            if not gpu.migs:
                message = f"GPU {gpu.index} ({gpu.uuid}) has MIG enabled but no MIG devices"
                if settings.mig_strategy == "single":
                    raise MigConfigurationError(message)
                log.warning("%s; nothing of it is served", message)
            for mig in gpu.migs:
                resource = _mig_resource(mig, settings, log)
                if resource:
                    served.append(_mig_served(gpu, mig, resource, settings, machine))
            continue
        resource = _match(settings.gpu_resources, gpu.name) or "nvidia.com/gpu"  # "*" ends the list anyway
        served.append(_gpu_served(gpu, resource, settings, machine))
    served = apply_replicas(served, settings.replica_rules, log)
    resources: dict[str, tuple[Served, ...]] = {}
    for item in served:
        resources[item.resource] = (*resources.get(item.resource, ()), item)
    return Inventory(resources, {s.id: s for s in served}, {g.uuid: g for g in machine.gpus})


def _selected(rule: ReplicaRule, candidates: list[Served], log: logging.Logger) -> list[Served]:
    if rule.devices == "all":
        return candidates
    if isinstance(rule.devices, int):
        if rule.devices > len(candidates):
            log.warning("%s.devices asks for %d devices of %s, only %d are there; replicating those",
                        rule.where, rule.devices, rule.resource, len(candidates))
        return candidates[: rule.devices]
    picked = []
    for ref in rule.devices:
        match = next((s for s in candidates if ref in (s.id, s.info.get("index"))), None)
        if match is None:
            log.warning("%s.devices: no %s device %r here; skipped", rule.where, rule.resource, ref)
        elif match not in picked:
            picked.append(match)
    return picked


def apply_replicas(served: list[Served], rules: tuple[ReplicaRule, ...], log: logging.Logger) -> list[Served]:
    """Give the devices each rule selects its replicas and name; the first rule to select a device wins."""
    claimed: set[str] = set()
    result = {s.id: s for s in served}
    for rule in rules:
        candidates = [s for s in served if s.resource == rule.resource and s.id not in claimed]
        for item in _selected(rule, candidates, log):
            if rule.mps and item.is_mig:  # as NVIDIA: the MPS daemon serves whole GPUs only
                raise MigConfigurationError(f"{rule.where}: MPS sharing is not supported for MIG devices "
                                            f"({item.id}); use migStrategy none or sharing.timeSlicing")
            claimed.add(item.id)
            info = {**item.info, "sharing": "mps"} if rule.mps else item.info
            result[item.id] = msgspec.structs.replace(item, resource=rule.serve_as, replicas=rule.replicas,
                                                      mps=rule.mps, info=info)
    return [result[s.id] for s in served]
