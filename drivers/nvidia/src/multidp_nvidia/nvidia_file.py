"""NVIDIA's config file, read the way NVIDIA's plugin (v0.20.0) reads it.

NVIDIA parses the file with sigs.k8s.io/yaml, that is Go's JSON decoder: keys of its
structs match in any case (an exact spelling first), a key given in two spellings
keeps the last value, and unknown keys are ignored. Its own ``UnmarshalJSON`` methods
(``sharing.timeSlicing`` / ``sharing.mps``, their ``resources[]``, ``resources.gpus[]`` /
``resources.mig[]``) look keys up in a map instead, so there the spelling must be exact.

:func:`canonical` brings a parsed file to the spelling of :mod:`multidp_nvidia.config`
under those rules and returns one warning per key it drops: a drop-in must run where
NVIDIA runs, and ``multidp config check`` prints the warnings. Values are checked after
that, strictly, by the structs and by :mod:`multidp_nvidia.replicas`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from multidp import ConfigError, parse_yaml, read_small_file, split_validation_error

from multidp_nvidia.config import NvidiaFileConfig


@dataclass(frozen=True)
class Shape:
    """The keys NVIDIA knows at one level; a ``None`` child is a value taken as it is."""

    keys: Mapping[str, Shape | None] = field(default_factory=dict)
    exact: bool = False  # NVIDIA's own UnmarshalJSON: a map lookup, so case-sensitive
    items: bool = False  # a list of such mappings


def _leaves(*names: str) -> dict[str, Shape | None]:
    return dict.fromkeys(names)


# From api/config/v1 (config.go, flags.go, resources.go, replicas.go, sharing.go, imex.go) at v0.20.0.
_RESOURCE = Shape(_leaves("pattern", "name"), exact=True, items=True)
_REPLICATED = Shape({**_leaves("renameByDefault", "failRequestsGreaterThanOne"),
                     "resources": Shape(_leaves("name", "devices", "replicas", "rename"), exact=True, items=True)},
                    exact=True)
_PLUGIN = Shape(_leaves("passDeviceSpecs", "deviceListStrategy", "deviceIDStrategy", "cdiAnnotationPrefix",
                        "nvidiaCTKPath", "containerDriverRoot", "sharedDevicesAllocationPolicy"))
_GFD = Shape(_leaves("oneshot", "noTimestamp", "sleepInterval", "outputFile", "machineTypeFile"))
_FLAGS = Shape({**_leaves("migStrategy", "failOnInitError", "mpsRoot", "nvidiaDriverRoot", "nvidiaDevRoot",
                          "gdrcopyEnabled", "gdsEnabled", "mofedEnabled", "useNodeFeatureAPI",
                          "deviceDiscoveryStrategy"),
                "plugin": _PLUGIN, "gfd": _GFD})
FILE_SHAPE = Shape({
    "version": None,
    "flags": _FLAGS,
    "resources": Shape({"gpus": _RESOURCE, "mig": _RESOURCE}),
    "sharing": Shape({"timeSlicing": _REPLICATED, "mps": _REPLICATED}),
    "imex": Shape(_leaves("channelIDs", "required")),
    "health": None,  # multidp's own section: checked strictly by its struct
})


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def canonical(value: Any, shape: Shape | None, where: str = "") -> tuple[Any, list[str]]:
    """``value`` with NVIDIA's keys in their canonical spelling and unknown keys dropped; the warnings."""
    if shape is None:
        return value, []
    if shape.items:
        if not isinstance(value, list):
            return value, []  # the struct refuses it, naming the key
        warnings: list[str] = []
        items = []
        for i, item in enumerate(value):
            fixed, more = canonical(item, Shape(shape.keys, shape.exact), f"{where}[{i}]")
            items.append(fixed)
            warnings += more
        return items, warnings
    if not isinstance(value, dict):
        return value, []
    result: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    warnings = []
    folded = {k.lower(): k for k in shape.keys}
    for key, item in value.items():
        name = str(key)
        known = name if name in shape.keys else (None if shape.exact else folded.get(name.lower()))
        if known is None:
            hint = folded.get(name.lower())
            why = (f"NVIDIA matches the keys of {where or 'this section'} case-sensitively (did you mean {hint}?)"
                   if hint else "NVIDIA's plugin does not know it either")
            warnings.append(f"unknown key {_join(where, name)} ignored: {why}")
            continue
        if known in spelled:
            warnings.append(f"{_join(where, spelled[known])} and {_join(where, name)} are one key to NVIDIA; "
                            f"the later one, {name}, is used")
        spelled[known] = name
        result[known], more = canonical(item, shape.keys[known], _join(where, known))
        warnings += more
    return result, warnings


def source_of(path: str, local: Path) -> str:
    """How messages name the file: its path in the config, and where it was read when that differs."""
    return path if str(local) == path else f"{path} (read at {local})"


def read_nvidia_file(path: str, local: Path, key: str) -> tuple[NvidiaFileConfig, list[str]]:
    """NVIDIA's config file named ``path`` (at ``key``), read at ``local``; errors name the file and key.

    Returns the file and one warning per key NVIDIA's plugin would ignore.
    """
    source = source_of(path, local)
    try:
        # The host's bounded reader and strict YAML: a FIFO, /dev/zero, deep nesting or a key given
        # twice is a one-line error, never a hang, a traceback or a gigabyte read.
        raw = parse_yaml(read_small_file(local, source), source=source)
    except ConfigError as exc:
        raise ConfigError(key, f"NVIDIA config file: {exc.message}", source) from exc
    if raw is None:
        raw = {}  # an empty file is NVIDIA's defaults
    if not isinstance(raw, dict):
        raise ConfigError(key, f"an NVIDIA config file holds a mapping, not a {type(raw).__name__}", source)
    fixed, warnings = canonical(raw, FILE_SHAPE)
    try:
        config = msgspec.convert(fixed, NvidiaFileConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        at, message = split_validation_error(exc)
        raise ConfigError(at, message, source) from exc
    if config.version not in (None, "", "v1"):  # NVIDIA: no version is v1
        raise ConfigError("version", f"unknown version {config.version!r} (NVIDIA's plugin reads only v1)", source)
    return config, [f"{source}: {w}" for w in warnings]
