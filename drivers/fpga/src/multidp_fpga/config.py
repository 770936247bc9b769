"""The ``drivers.fpga`` config section.

Top-level keys only, so each one can also be set as ``MULTIDP_FPGA_<KEY>``
(``MULTIDP_FPGA_MODE=region``, ``MULTIDP_FPGA_AMD=false``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from multidp import ConfigError, resource_name_problem

SECTION = "drivers.fpga"
Mode = Literal["af", "region", "regiondevel"]


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class FpgaConfig(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Settings of the fpga driver (see README.md for each key)."""

    mode: Annotated[Mode, _doc(
        "Intel only. af: one resource per (interface id, AFU id), one device per port; region: one resource "
        "per interface id, one device per FME with all its ports; regiondevel: as region, plus the FME node "
        "and without the programming annotation")] = "af"
    intel: Annotated[bool, _doc("serve Intel FPGAs (DFL or OPAE kernel driver)")] = True
    amd: Annotated[bool, _doc("serve AMD/Xilinx Alveo cards (XRT drivers xocl/xclmgmt)")] = True
    amd_legacy_names: Annotated[bool, _doc(
        "name Alveo resources xilinx.com/fpga-<shell>-<timestamp>, as older plugins did")] = False
    amd_mount_nodes: Annotated[bool, _doc(
        "also bind-mount each Alveo device node, as AMD's plugin does")] = False
    names: Annotated[dict[str, str], _doc(
        "serve a resource under another name: computed resource name -> name to use")] = msgspec.field(
        default_factory=dict)
    poll_interval: Annotated[float, _doc(
        "seconds between two scans; id files are sysfs attributes and raise no file events")] = 0.5


def validate(config: FpgaConfig) -> FpgaConfig:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    if not 0.05 <= config.poll_interval <= 60:
        raise ConfigError(f"{SECTION}.pollInterval", f"must be between 0.05 and 60 seconds, not {config.poll_interval}")
    for computed, wanted in config.names.items():
        key = f"{SECTION}.names[{computed!r}]"
        if not computed.strip():
            raise ConfigError(f"{SECTION}.names", "has an empty resource name as a key")
        problem = resource_name_problem(wanted)
        if problem:
            raise ConfigError(key, f"{wanted!r} is not a valid extended resource name: {problem}")
    if not config.intel and not config.amd:
        raise ConfigError(SECTION, "both intel and amd are off: disable the driver with 'enabled: false' instead")
    return config
