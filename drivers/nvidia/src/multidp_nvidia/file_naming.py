"""What NVIDIA v0.20.0 discards from its config file: resource naming and device selection.

NVIDIA's plugin calls ``DisableResourceNamingInConfig`` (``api/config/v1/config.go``, from
``cmd/nvidia-device-plugin/main.go``) on the config it read: it drops ``resources.gpus`` /
``resources.mig``, and in ``sharing.*.resources[]`` drops ``devices`` (all devices are shared)
and ``rename`` (``<name>.shared`` when ``renameByDefault`` is on, else the name itself;
``replicas.go`` ``disableResoureRenaming``). It does so after decoding, so a name it cannot
parse still fails the file.

multidp honours these keys only in its own ``drivers.nvidia`` section. In NVIDIA's file it does
what NVIDIA does, so one file serves the same resources under both plugins, and warns once per
key, naming the key, the file and where to write it to have multidp honour it.
"""

from __future__ import annotations

import msgspec
from multidp import DNS1123_SUBDOMAIN, ConfigError

from multidp_nvidia.config import NvidiaFileConfig, ReplicatedResource, ReplicatedResources, Sharing

_PREFIX = "nvidia.com"  # api/config/v1/consts.go ResourceNamePrefix
_MAX_NAME = 63  # consts.go MaxResourceNameLength
_IGNORED = "ignored: NVIDIA's plugin v0.20.0 discards it (DisableResourceNamingInConfig), and so does multidp"


def _qualified(name: str) -> str:
    return name if name.startswith(f"{_PREFIX}/") else f"{_PREFIX}/{name}"


def nvidia_name(name: str, key: str, source: str) -> str:
    """``name`` as NVIDIA's NewResourceName (resources.go) qualifies it, or the error NVIDIA fails with."""
    full = _qualified(name)
    short = full.split("/", 1)[1]
    if len(full) > _MAX_NAME:
        raise ConfigError(key, f"fully-qualified resource name must be {_MAX_NAME} characters or less: {full} "
                               "(NVIDIA refuses the file before it discards this key)", source)
    if len(short) > 253 or not DNS1123_SUBDOMAIN.fullmatch(short):
        raise ConfigError(key, f"incorrect format for resource name {full!r}: not a DNS subdomain (NVIDIA refuses "
                               "the file before it discards this key)", source)
    return full


def _entries(section: ReplicatedResources, where: str, source: str, warnings: list[str]) -> ReplicatedResources:
    mps = where.endswith(".mps")
    instead = ("multidp ignores it under sharing.mps wherever it is written, as NVIDIA's MPS daemon does"
               if mps else f"to have multidp honour it, move {where} to drivers.nvidia.{where} in multidp's config")
    entries: list[ReplicatedResource] = []
    for i, entry in enumerate(section.resources or []):
        key = f"{where}.resources[{i}]"
        rename = entry.rename or None
        if rename is not None:
            forced = f"{_qualified(entry.name)}.shared"
            if nvidia_name(rename, f"{key}.rename", source) != forced or not section.rename_by_default:
                served = f"; NVIDIA serves {forced} (renameByDefault)" if section.rename_by_default else ""
                warnings.append(f"{source}: {key}.rename is {_IGNORED} in NVIDIA's file{served}; {instead}")
        if entry.devices != "all":
            warnings.append(f"{source}: {key}.devices is {_IGNORED} in NVIDIA's file (every device of "
                            f"{entry.name} is shared); {instead}")
        entries.append(msgspec.structs.replace(entry, rename=None, devices="all"))
    return msgspec.structs.replace(section, resources=entries) if section.resources is not None else section


def discard_naming(file: NvidiaFileConfig, source: str) -> tuple[NvidiaFileConfig, list[str]]:
    """``file`` as NVIDIA uses it after DisableResourceNamingInConfig, and one warning per discarded key."""
    warnings: list[str] = []
    resources = file.resources
    if resources is not None:
        for kind, patterns in (("gpus", resources.gpus), ("mig", resources.mig)):
            for i, pattern in enumerate(patterns):
                nvidia_name(pattern.name, f"resources.{kind}[{i}].name", source)
            if patterns:
                warnings.append(f"{source}: resources.{kind} is {_IGNORED} in NVIDIA's file (NVIDIA's default "
                                f"names are served); to have multidp honour it, write it as "
                                f"drivers.nvidia.resources.{kind} in multidp's config")
        resources = None
    sharing = file.sharing
    if sharing is not None:
        sliced, shared = sharing.time_slicing, sharing.mps
        if isinstance(sliced, ReplicatedResources):
            sliced = _entries(sliced, "sharing.timeSlicing", source, warnings)
        if shared is not None:
            shared = _entries(shared, "sharing.mps", source, warnings)
        sharing = Sharing(time_slicing=sliced, mps=shared)
    return msgspec.structs.replace(file, resources=resources, sharing=sharing), warnings
