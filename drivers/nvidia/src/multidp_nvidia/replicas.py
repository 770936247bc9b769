"""What NVIDIA's plugin (v0.20.0, ``api/config/v1/replicas.go``) refuses in a sharing section.

``timeSlicing`` / ``mps`` need a non-empty ``resources`` list; each entry needs at least 2
replicas; ``devices`` is ``all`` (no other string), a count above 0, or a list of GPU
indexes (``0``), MIG indexes (``0:1``) and well-formed GPU / MIG UUIDs. Each refusal is a
ConfigError naming the key. A well-formed UUID that matches no device is accepted here
and warned about when devices are picked (:mod:`multidp_nvidia.inventory`).
"""

from __future__ import annotations

import re

import msgspec
from multidp import ConfigError

from multidp_nvidia.config import NvidiaFileConfig, ReplicatedResources

_HEX36 = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# google/uuid's Parse: the 36-character form, {braced}, urn:uuid: (any case), or 32 bare hex digits.
_UUID = re.compile(rf"(?:{_HEX36}|\{{{_HEX36}\}}|(?i:urn:uuid:){_HEX36}|[0-9a-fA-F]{{32}})")
_UINT = re.compile(r"[0-9]+")  # Go's strconv.ParseUint: digits only, no sign


def is_gpu_uuid(ref: str) -> bool:
    return ref.startswith("GPU-") and _UUID.fullmatch(ref[4:]) is not None


def is_mig_uuid(ref: str) -> bool:
    """``MIG-<uuid>`` or ``MIG-GPU-<uuid>/<gi>/<ci>``."""
    if not ref.startswith("MIG-"):
        return False
    rest = ref[4:]
    if _UUID.fullmatch(rest):
        return True
    parts = rest.split("/", 2)
    return len(parts) == 3 and is_gpu_uuid(parts[0]) and all(_UINT.fullmatch(p) for p in parts[1:])


def device_ref_kind(ref: str) -> str | None:
    """``gpuIndex``, ``migIndex``, ``uuid`` or None (not a device reference NVIDIA takes)."""
    if _UINT.fullmatch(ref):
        return "gpuIndex"
    parts = ref.split(":", 1)
    if len(parts) == 2 and all(_UINT.fullmatch(p) for p in parts):
        return "migIndex"
    if is_gpu_uuid(ref) or is_mig_uuid(ref):
        return "uuid"
    return None


def checked_devices(devices: object, key: str, source: str | None) -> str | int | tuple[str, ...]:
    """``devices`` as NVIDIA's ReplicatedDevices.UnmarshalJSON takes it, else a ConfigError at ``key``."""
    if isinstance(devices, str):
        if devices != "all":
            raise ConfigError(key, f"{devices!r}: the only string NVIDIA takes here is 'all'", source)
        return devices
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices <= 0:
            raise ConfigError(key, f"a count of devices must be above 0, not {devices}", source)
        return devices
    if not isinstance(devices, list):
        raise ConfigError(key, f"must be 'all', a count or a list, not {devices!r}", source)
    refs = []
    for i, item in enumerate(devices):
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            refs.append(str(item))
        elif isinstance(item, str) and device_ref_kind(item):
            refs.append(item)
        else:
            raise ConfigError(f"{key}[{i}]", f"{item!r} is not a GPU index (0), a MIG index (0:1) or a GPU-/MIG- "
                                             "UUID", source)
    return tuple(refs)


def check_section(section: ReplicatedResources | None | msgspec.UnsetType, key: str, source: str | None,
                  null_refused: bool = False) -> None:
    """NVIDIA's refusals for one ``sharing.timeSlicing`` / ``sharing.mps`` section.

    ``null_refused``: ``timeSlicing`` is a struct value in NVIDIA's Sharing, so a null there reaches
    its UnmarshalJSON, which finds no resources; ``mps`` is a pointer, and null just leaves it unset.
    """
    if section is None and null_refused:
        raise ConfigError(key, "no resources specified (NVIDIA refuses a null sharing section: give it "
                               "resources, or leave the key out)", source)
    if section is None or section is msgspec.UNSET:
        return
    if not section.resources:
        raise ConfigError(f"{key}.resources", "no resources specified (NVIDIA refuses a sharing section without "
                                              "resources)", source)
    for i, entry in enumerate(section.resources):
        where = f"{key}.resources[{i}]"
        if entry.replicas < 2:
            raise ConfigError(f"{where}.replicas", f"must be at least 2, not {entry.replicas} (NVIDIA: number of "
                                                   "replicas must be >= 2)", source)
        checked_devices(entry.devices, f"{where}.devices", source)


def check_layer(layer: NvidiaFileConfig, prefix: str, source: str | None) -> None:
    """NVIDIA's refusals for the sharing sections of one source (the section, or a file)."""
    if layer.sharing is None:
        return
    check_section(layer.sharing.time_slicing, f"{prefix}sharing.timeSlicing", source, null_refused=True)
    check_section(layer.sharing.mps, f"{prefix}sharing.mps", source)
