"""AMD's settings: multidp's own keys first, then AMD's environment variables, then AMD's defaults.

AMD's plugin (Xilinx FPGA_as_a_Service ``k8s-device-plugin/main.go``) reads five variables and
compares them case-insensitively, taking anything it does not recognise as its default without a
word. Here an unrecognised value gets the same default and a warning naming the variable, so a typo
is never silently ignored; a value that cannot work (a ``VirtualNum`` over multidp's limit) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
from multidp import MAX_REPLICAS, ConfigError

from multidp_fpga.amdnames import NameTable, load_name_table
from multidp_fpga.config import SECTION, FpgaConfig


class AmdSettings(msgspec.Struct, frozen=True):
    """How the AMD part of the driver names, groups and shares devices."""

    u30_common_names: bool = True  # U30NameConvention=CommonName
    u30_card_unit: bool = True  # U30AllocUnit=Card
    names: NameTable | None = None  # DeviceNameCustomize=True: the NameCustomize.json table
    virtual_num: int | None = None  # VirtualDev=True: IDs per device
    legacy_names: bool = False
    mount_nodes: bool = False


def _choice(environ: Mapping[str, str], variable: str, choices: Mapping[str, bool], default: bool,
            log: logging.Logger) -> bool | None:
    """AMD's reading of ``variable`` (None when unset); an unknown value warns and takes AMD's default."""
    raw = environ.get(variable)
    if raw is None:
        return None
    for word, value in choices.items():
        if raw.casefold() == word.casefold():
            return value
    fallback = next(word for word, value in choices.items() if value == default)
    log.warning("AMD's variable %s=%r is none of %s: using %s, as AMD's plugin does", variable, raw,
                " / ".join(choices), fallback)
    return default


def _pick(key: str, own: object, variable: str, from_env: object, log: logging.Logger) -> object:
    """multidp's key beats AMD's variable; say so when they disagree."""
    if own is not None:
        if from_env is not None and from_env != own:
            log.warning("drivers.fpga.%s=%r wins over AMD's variable %s", key, own, variable)
        return own
    return from_env


def _virtual_num(environ: Mapping[str, str], log: logging.Logger) -> int | None:
    """AMD's reading of VirtualNum (strconv.Atoi, below 1 is 1); its limit is checked once it is in force."""
    raw = environ.get("VirtualNum")
    if raw is None:
        return None
    try:
        number = int(raw.strip())
    except ValueError:
        number = 0
    if number < 1:
        log.warning("AMD's variable VirtualNum=%r is not a number of at least 1: using 1, as AMD's plugin does", raw)
        return 1
    return number


def resolve(config: FpgaConfig, environ: Mapping[str, str], log: logging.Logger,
            local_path: Callable[[str], Path] = Path) -> AmdSettings:
    """The AMD settings of this node; raises ConfigError for what cannot work."""
    common = _pick("amdU30Names", None if config.amd_u30_names is None else config.amd_u30_names == "common",
                   "U30NameConvention",
                   _choice(environ, "U30NameConvention", {"CommonName": True, "ExactName": False}, True, log), log)
    card = _pick("amdU30AllocUnit", None if config.amd_u30_alloc_unit is None else config.amd_u30_alloc_unit == "card",
                 "U30AllocUnit", _choice(environ, "U30AllocUnit", {"Card": True, "Device": False}, True, log), log)
    customize = _pick("amdNameCustomize", config.amd_name_customize, "DeviceNameCustomize",
                      _choice(environ, "DeviceNameCustomize", {"True": True, "False": False}, False, log), log)
    virtual = _pick("amdVirtualDev", config.amd_virtual_dev, "VirtualDev",
                    _choice(environ, "VirtualDev", {"True": True, "False": False}, False, log), log)
    number = _pick("amdVirtualNum", config.amd_virtual_num, "VirtualNum", _virtual_num(environ, log), log)
    if virtual:
        # Only the value in force counts: AMD reads VirtualNum only with VirtualDev on, and
        # amdVirtualNum (checked by validate) overrides it.
        if config.amd_virtual_num is None and isinstance(number, int) and number > MAX_REPLICAS:
            raise ConfigError("VirtualNum", f"AMD's variable VirtualNum={environ.get('VirtualNum')!r} is over "
                                            f"multidp's limit of {MAX_REPLICAS} IDs per device")
        if number is None:
            log.warning("AMD's VirtualDev is on without VirtualNum (drivers.fpga.amdVirtualNum): using 1, "
                        "as AMD's plugin does")
            number = 1
        log.warning("AMD's VirtualDev: %s IDs <PCI address>-<i> per device; unlike AMD's plugin, a container "
                    "gets the devices it was allocated, not every AMD device of the node", number)
    elif number is not None:
        log.warning("AMD's VirtualNum (drivers.fpga.amdVirtualNum) is set but VirtualDev is off: no sharing, "
                    "as in AMD's plugin")
    table = None
    if customize:
        path = config.amd_name_customize_file
        table = load_name_table(local_path(path), path, f"{SECTION}.amdNameCustomizeFile")
    return AmdSettings(
        u30_common_names=bool(common if common is not None else True),
        u30_card_unit=bool(card if card is not None else True),
        names=table,
        virtual_num=int(number) if virtual and isinstance(number, int) else None,
        legacy_names=config.amd_legacy_names,
        mount_nodes=config.amd_mount_nodes,
    )
