"""multidp.names: resource names the kubelet accepts, and the helpers that shorten what messages quote."""

from __future__ import annotations

import pytest

from multidp.names import list_some, resource_name_problem, shorten


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "fpga.intel.com/af-695.d84.aVKNtusxV3qMNmj5-qCB9thCTcSko8QT-J5D",
                                  "rdma/hca_shared_devices_a", "amd.com/xilinx_u200_xdma_201830_2-1561465320"])
def test_valid_resource_names(name):
    assert resource_name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("gpu", "exactly one '/'"),
    ("a/b/c", "exactly one '/'"),
    ("kubernetes.io/gpu", "kubernetes.io/"),
    ("requests.nvidia.com/gpu", "requests."),
    ("Nvidia.com/gpu", "not a lowercase DNS-1123 subdomain"),
    ("nvidia.com/", "empty"),
    ("nvidia.com/" + "g" * 64, "64 characters long (at most 63)"),
    ("nvidia.com/-gpu", "must start and end with a letter or digit"),
    ("nvidia.com\n/gpu", "not a lowercase DNS-1123 subdomain"),  # "$" alone would let a final newline through
    ("nvidia.com/gpu\n", "must start and end with a letter or digit"),
])
def test_invalid_resource_names(name, problem):
    assert problem in (resource_name_problem(name) or "")


def test_shorten_and_list_some():
    assert shorten("x" * 100, 10) == "xxxxxxxxxx… (100 characters)"
    assert list_some(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
