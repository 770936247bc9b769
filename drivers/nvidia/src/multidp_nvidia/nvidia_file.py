"""NVIDIA's config file, read the way NVIDIA's plugin (v0.20.0) reads it.

NVIDIA parses the file with sigs.k8s.io/yaml (``vendor/sigs.k8s.io/yaml/yaml.go``): YAML to a Go map,
``json.Marshal`` (keys sorted in byte order), then Go's JSON decoder. So keys of its structs match in
any case (an exact spelling first), unknown keys are ignored, and a key given in two spellings is
decoded twice in byte order of its spellings: for a value the spelling that sorts last wins (``Flags``
< ``flags``), for a struct the two are decoded into the same struct, so their fields merge. Its own
``UnmarshalJSON`` methods (``sharing.timeSlicing`` / ``sharing.mps``, their ``resources[]``,
``resources.gpus[]`` / ``resources.mig[]``) look keys up in a map instead, so there the spelling must
be exact; a second decode of such a section replaces it (only ``failRequestsGreaterThanOne`` stays
when the later one lacks it), yet the first is still checked. A key given twice in one spelling keeps
the last (:mod:`multidp_nvidia.nvidia_yaml`).

:func:`canonical` brings a parsed file to the spelling of :mod:`multidp_nvidia.config`
under those rules and returns one warning per key it drops: a drop-in must run where
NVIDIA runs, and ``multidp config check`` prints the warnings. Values are checked after
that, strictly, by the structs and by :mod:`multidp_nvidia.replicas`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from multidp import ConfigError, read_small_file, split_validation_error

from multidp_nvidia.config import NvidiaFileConfig, ReplicatedResources
from multidp_nvidia.replicas import check_section


class Shape(msgspec.Struct, frozen=True):
    """The keys NVIDIA knows at one level; a ``None`` child is a value taken as it is."""

    keys: Mapping[str, Shape | None] = msgspec.field(default_factory=dict)
    exact: bool = False  # NVIDIA's own UnmarshalJSON: a map lookup, so case-sensitive
    items: bool = False  # a list of such mappings
    pointer: bool = False  # a Go pointer: a later null clears it (a struct value ignores null)
    keep: tuple[str, ...] = ()  # exact sections: keys a second decode keeps when it lacks them


def _leaves(*names: str) -> dict[str, Shape | None]:
    return dict.fromkeys(names)


# From api/config/v1 (config.go, flags.go, resources.go, replicas.go, sharing.go, imex.go) at v0.20.0.
_RESOURCE = Shape(_leaves("pattern", "name"), exact=True, items=True)
# replicas.go ReplicatedResources.UnmarshalJSON sets renameByDefault and resources on every decode,
# failRequestsGreaterThanOne only when given.
_REPLICATED = Shape({**_leaves("renameByDefault", "failRequestsGreaterThanOne"),
                     "resources": Shape(_leaves("name", "devices", "replicas", "rename"), exact=True, items=True)},
                    exact=True, keep=("failRequestsGreaterThanOne",))
_PLUGIN = Shape(_leaves("passDeviceSpecs", "deviceListStrategy", "deviceIDStrategy", "cdiAnnotationPrefix",
                        "nvidiaCTKPath", "containerDriverRoot", "sharedDevicesAllocationPolicy"), pointer=True)
_GFD = Shape(_leaves("oneshot", "noTimestamp", "sleepInterval", "outputFile", "machineTypeFile"), pointer=True)
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


def _go_key(key: object) -> str:
    """The key as sigs.k8s.io/yaml writes it into JSON (its convertToJSONableObject)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class _Reader:
    """One file's canonical form; collects the warnings and the sections a second spelling replaced."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.replaced: list[tuple[str, Any]] = []  # (key, value): NVIDIA decodes (and checks) them too

    def canonical(self, value: Any, shape: Shape | None, where: str = "") -> Any:
        if shape is None:
            return value
        if shape.items:
            if not isinstance(value, list):
                return value  # the struct refuses it, naming the key
            return [self.canonical(item, Shape(shape.keys, shape.exact), f"{where}[{i}]")
                    for i, item in enumerate(value)]
        if not isinstance(value, dict):
            return value
        result: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        folded = {k.lower(): k for k in shape.keys}
        # json.Marshal sorts the map's keys by bytes (UTF-8 sorts as code points), and the decoder
        # applies them in that order.
        items = {_go_key(k): v for k, v in value.items()}
        for name in sorted(items):
            item = items[name]
            known = name if name in shape.keys else (None if shape.exact else folded.get(name.lower()))
            if known is None:
                hint = folded.get(name.lower())
                why = (f"NVIDIA matches the keys of {where or 'this section'} case-sensitively (did you mean "
                       f"{hint}?)" if hint else "NVIDIA's plugin does not know it either")
                self.warnings.append(f"unknown key {_join(where, name)} ignored: {why}")
                continue
            child = shape.keys[known]
            fixed = self.canonical(item, child, _join(where, known))
            if known in spelled:
                merged = child is not None and not child.exact and not child.items
                how = ("both are read into it, the later one's keys winning" if merged
                       else f"the later one, {name}, is used")
                self.warnings.append(f"{_join(where, spelled[known])} and {_join(where, name)} are one key to "
                                     f"NVIDIA, which reads them in byte order ({spelled[known]} first): {how}")
                fixed = self._merge(result[known], fixed, child, _join(where, known))
            spelled[known] = name
            result[known] = fixed
        return result

    def _merge(self, earlier: Any, later: Any, shape: Shape | None, where: str) -> Any:
        """A second decode of one key into the value the first left (Go's encoding/json)."""
        if shape is None or shape.items:
            return later  # a value or a slice: replaced
        if shape.exact:
            self.replaced.append((where, earlier))
            if isinstance(earlier, dict) and isinstance(later, dict):
                return {**{k: earlier[k] for k in shape.keep if k in earlier}, **later}
            return later
        if later is None:
            return None if shape.pointer else earlier  # null clears a pointer; a struct value ignores it
        if not (isinstance(earlier, dict) and isinstance(later, dict)):
            return later
        merged = dict(earlier)
        for key, item in later.items():
            merged[key] = self._merge(merged[key], item, shape.keys.get(key), _join(where, key)) \
                if key in merged else item
        return merged


def source_of(path: str, local: Path) -> str:
    """How messages name the file: its path in the config, and where it was read when that differs."""
    return path if str(local) == path else f"{path} (read at {local})"


def read_nvidia_file(path: str, local: Path, key: str) -> tuple[NvidiaFileConfig, list[str]]:
    """NVIDIA's config file named ``path`` (at ``key``), read at ``local``; errors name the file and key.

    Returns the file and one warning per key NVIDIA's plugin would ignore or that is given twice.
    """
    from multidp_nvidia.nvidia_yaml import load_nvidia_yaml  # PyYAML, only on a node with NVIDIA's file

    source = source_of(path, local)
    try:
        # The host's bounded reader and its YAML limits: a FIFO, /dev/zero or deep nesting is a
        # one-line error, never a hang, a traceback or a gigabyte read.
        raw, warnings = load_nvidia_yaml(read_small_file(local, source), source)
    except ConfigError as exc:
        raise ConfigError(key, f"NVIDIA config file: {exc.message}", source) from exc
    if raw is None:
        raw = {}  # an empty file is NVIDIA's defaults
    if not isinstance(raw, dict):
        raise ConfigError(key, f"an NVIDIA config file holds a mapping, not a {type(raw).__name__}", source)
    reader = _Reader()
    fixed = reader.canonical(raw, FILE_SHAPE)
    try:
        config = msgspec.convert(fixed, NvidiaFileConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        at, message = split_validation_error(exc)
        raise ConfigError(at, message, source) from exc
    for where, section in reader.replaced:
        _check_replaced(where, section, source)
    if config.version not in (None, "", "v1"):  # NVIDIA: no version is v1
        raise ConfigError("version", f"unknown version {config.version!r} (NVIDIA's plugin reads only v1)", source)
    return config, [f"{source}: {w}" for w in [*warnings, *reader.warnings]]


def _check_replaced(where: str, value: Any, source: str) -> None:
    """A sharing section another spelling replaced: NVIDIA decoded it first, so its errors still count."""
    try:
        section = msgspec.convert(value, ReplicatedResources | None, str_keys=True)
    except msgspec.ValidationError as exc:
        at, message = split_validation_error(exc, where)
        raise ConfigError(at, message, source) from exc
    check_section(section, where, source, null_refused=where.endswith("timeSlicing"))
