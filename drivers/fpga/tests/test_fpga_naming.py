"""Resource names: Intel's af and region names, AMD's shell names, kubelet validity."""

from __future__ import annotations

import random

from multidp import resource_name_problem

from fpga_helpers import AF_IFACE2_AFU2, AF_IFACE_AFU, AFU, AFU2, IFACE, IFACE2
from multidp_fpga.naming import amd_resource, intel_af_resource, intel_region_resource


def test_af_names_match_intels_plugin():
    # Expected values are the ones Intel's plugin produces for these ids (its devtypes tests).
    assert intel_af_resource(IFACE, AFU) == AF_IFACE_AFU
    assert intel_af_resource(IFACE2, AFU2) == AF_IFACE2_AFU2


def test_af_names_are_always_54_characters_and_valid():
    rng = random.Random(7)
    for _ in range(200):
        interface_id = f"{rng.getrandbits(128):032x}"
        afu_id = f"{rng.getrandbits(128):032x}"
        name = intel_af_resource(interface_id, afu_id)
        assert len(name.partition("/")[2]) == 54
        assert resource_name_problem(name) is None, name


def test_region_name_carries_the_whole_interface_id():
    assert intel_region_resource(IFACE) == f"fpga.intel.com/region-{IFACE}"
    assert resource_name_problem(intel_region_resource(IFACE)) is None


def test_amd_names_current_and_legacy():
    assert amd_resource("xilinx_u200_xdma_201830_2", "1561465320") == "amd.com/xilinx_u200_xdma_201830_2-1561465320"
    legacy = amd_resource("xilinx_u200_xdma_201830_2", "1561465320", legacy=True)
    assert legacy == "xilinx.com/fpga-xilinx_u200_xdma_201830_2-1561465320"
    assert resource_name_problem(legacy) is None
