"""Resource names, compatible with the incumbents' so existing pod specs keep working."""

from __future__ import annotations

import base64

INTEL_PREFIX = "fpga.intel.com"
AMD_PREFIX = "amd.com"
XILINX_PREFIX = "xilinx.com"

#: Intel's annotation telling its CRI hook that the container may program the region.
REGION_MODE_ANNOTATION = "com.intel.fpga.mode"
REGION_MODE_VALUE = f"{INTEL_PREFIX}/region"
#: Intel's CDI kind for region mode (pkg/deviceplugin CDIVendor + "/" + fpga_plugin.go CDIClass).
INTEL_CDI_KIND = "intel.cdi.k8s.io/fpga"


def intel_af_resource(interface_id: str, afu_id: str) -> str:
    """``fpga.intel.com/af-<if[:3]>.<afu[:3]>.<base64url(ifid ‖ afuid)>`` as Intel's plugin names it.

    Both ids are 32 hex digits. The 32 raw bytes encode to 43 base64 characters
    without padding, so the part after the '/' is always 54 characters: inside
    the kubelet's 63-character limit, whatever the ids.
    """
    raw = bytes.fromhex(interface_id + afu_id)
    encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return f"{INTEL_PREFIX}/af-{interface_id[:3]}.{afu_id[:3]}.{encoded}"


def intel_region_resource(interface_id: str) -> str:
    """``fpga.intel.com/region-<interface id>`` (Intel's region mode)."""
    return f"{INTEL_PREFIX}/region-{interface_id}"


def amd_resource(shell: str, timestamp: str, legacy: bool = False) -> str:
    """``amd.com/<VBNV>-<timestamp>``, or the older ``xilinx.com/fpga-<VBNV>-<timestamp>``."""
    if legacy:
        return f"{XILINX_PREFIX}/fpga-{shell}-{timestamp}"
    return f"{AMD_PREFIX}/{shell}-{timestamp}"
