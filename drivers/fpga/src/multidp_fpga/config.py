"""The ``drivers.fpga`` config section.

Top-level keys only, so each one can also be set as ``MULTIDP_FPGA_<KEY>``
(``MULTIDP_FPGA_MODE=region``, ``MULTIDP_FPGA_AMD=false``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from multidp import MAX_REPLICAS, ConfigError, resource_name_problem

from multidp_fpga.sysfs import PCI_ADDRESS

PCI_ADDRESS_HINT = "domain:bus:device.function in lowercase hex, 0000:5e:00.0"

SECTION = "drivers.fpga"
Mode = Literal["af", "region", "regiondevel"]
#: Where Intel's init container installs its CRI hook (Intel's fpga_plugin.go, HookPath).
INTEL_HOOK = "/opt/intel/fpga-sw/intel-fpga-crihook"
#: Where AMD's plugin reads its name table (AMD's server.go, NewFPGADevicePlugin).
AMD_NAME_FILE = "/opt/xilinx/device-plugin-configmap/NameCustomize.json"


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
    card_modes: Annotated[dict[str, Mode], _doc(
        "Intel only: the mode of one card, by the PCI address of its FME's function (0000:5e:00.0), "
        "over mode")] = msgspec.field(default_factory=dict)
    intel_hook: Annotated[str, _doc(
        "region mode: the CRI hook the CDI device runs at createRuntime (installed by Intel's init "
        "container)")] = INTEL_HOOK
    amd_u30_names: Annotated[Literal["common", "exact"] | None, _doc(
        "AMD's U30NameConvention: common serves U30 cards as amd.com/ama_u30, exact as amd.com/<shell>-<timestamp>; "
        "unset: the U30NameConvention variable, else common")] = None
    amd_u30_alloc_unit: Annotated[Literal["card", "device"] | None, _doc(
        "AMD's U30AllocUnit: card advertises one ID per U30 card (both devices), device one per device; "
        "unset: the U30AllocUnit variable, else card")] = None
    amd_name_customize: Annotated[bool | None, _doc(
        "AMD's DeviceNameCustomize: name resources after amdNameCustomizeFile; unset: the "
        "DeviceNameCustomize variable, else false")] = None
    amd_name_customize_file: Annotated[str, _doc(
        "AMD's NameCustomize.json")] = AMD_NAME_FILE
    amd_virtual_dev: Annotated[bool | None, _doc(
        "AMD's VirtualDev: advertise amdVirtualNum IDs <PCI address>-<i> per device; unset: the VirtualDev "
        "variable, else false")] = None
    amd_virtual_num: Annotated[int | None, _doc(
        "AMD's VirtualNum: IDs per device when amdVirtualDev is on; unset: the VirtualNum variable, "
        "else 1")] = None
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
    for address in config.card_modes:
        if not PCI_ADDRESS.match(address):
            raise ConfigError(f"{SECTION}.cardModes[{address!r}]", f"is not a PCI address ({PCI_ADDRESS_HINT})")
    if not config.intel_hook.startswith("/"):
        raise ConfigError(f"{SECTION}.intelHook", f"must be an absolute path on the host, not {config.intel_hook!r}")
    if config.amd_virtual_num is not None and not 1 <= config.amd_virtual_num <= MAX_REPLICAS:
        raise ConfigError(f"{SECTION}.amdVirtualNum", f"must be between 1 and {MAX_REPLICAS}, "
                                                       f"not {config.amd_virtual_num}")
    if not config.intel and not config.amd:
        raise ConfigError(SECTION, "both intel and amd are off: disable the driver with 'enabled: false' instead")
    return config
