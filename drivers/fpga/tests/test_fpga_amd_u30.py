"""AMD's U30 naming, U30AllocUnit and VirtualDev / VirtualNum, built from AMD's own source.

AMD's plugin has no tests; the reference is its source (Xilinx/FPGA_as_a_Service, k8s-device-plugin
at cac8e91): main.go (how the variables are read), fpga.go GetAlveoDevices (U30 shell renamed to
ama_u30, IDs <userBDF>-<i>), server.go NewFPGADevicePlugin (names), sendDevices and Allocate (one ID
per serial number under Card, the rest of the card added at Allocate).
"""

from __future__ import annotations

import logging

import pytest
from multidp import MAX_REPLICAS, ConfigError, Health
from multidp.testing import create_driver

import multidp_fpga.plugin
from fpga_helpers import U200, allocate, by_id, ids, nodes_of
from multidp_fpga.fakesys import U30_SHELL, U30_TIMESTAMP

U30_COMMON = "amd.com/ama_u30"
U30_EXACT = f"amd.com/{U30_SHELL}-{U30_TIMESTAMP}"
SLOTS = ("0000:17:00", "0000:18:00")
FIRST, SECOND = "0000:17:00.1", "0000:18:00.1"


def make(node, environ=None, **section):
    return create_driver(multidp_fpga.plugin, {"intel": False, **section}, name="fpga", sysfs_root=node.sys,
                         dev_root=node.dev, environ=environ or {})


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# (environment, config section, resource, IDs): one U30 card, two devices, one serial number.
CASES = [
    ({}, {}, U30_COMMON, [FIRST]),  # AMD's defaults: CommonName, Card
    ({"U30NameConvention": "ExactName"}, {}, U30_EXACT, [FIRST]),
    ({"U30NameConvention": "exactname"}, {}, U30_EXACT, [FIRST]),  # strings.EqualFold
    ({"U30AllocUnit": "Device"}, {}, U30_COMMON, [FIRST, SECOND]),
    ({}, {"amdU30Names": "exact", "amdU30AllocUnit": "device"}, U30_EXACT, [FIRST, SECOND]),
    ({"VirtualDev": "True", "VirtualNum": "3", "U30AllocUnit": "Device"}, {}, U30_COMMON,
     [f"{a}-{i}" for a in (FIRST, SECOND) for i in range(3)]),  # 2N IDs: one set per user function
    ({"VirtualDev": "true", "VirtualNum": "3"}, {}, U30_COMMON, [f"{FIRST}-{i}" for i in range(3)]),  # N per card
    ({}, {"amdVirtualDev": True, "amdVirtualNum": 2, "amdU30AllocUnit": "device"}, U30_COMMON,
     [f"{FIRST}-0", f"{FIRST}-1", f"{SECOND}-0", f"{SECOND}-1"]),
]


@pytest.mark.parametrize(("environ", "section", "resource", "expected"), CASES)
def test_u30_names_units_and_shares(node, environ, section, resource, expected):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    assert ids(make(node, environ, **section).scan()) == {resource: expected}


def test_a_card_allocation_gives_every_node_of_the_card(node):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    driver = make(node)
    driver.scan()
    assert nodes_of(allocate(driver, U30_COMMON, FIRST)) == [
        ("/dev/dri/renderD128", "rwm"), ("/dev/xclmgmt5888", "rwm"),
        ("/dev/dri/renderD129", "rwm"), ("/dev/xclmgmt6144", "rwm")]


def test_a_device_allocation_gives_one_device(node):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    driver = make(node, {"U30AllocUnit": "Device"})
    driver.scan()
    assert nodes_of(allocate(driver, U30_COMMON, SECOND)) == [("/dev/dri/renderD129", "rwm"),
                                                              ("/dev/xclmgmt6144", "rwm")]


def test_a_shared_id_gives_only_its_own_card_not_every_card_of_the_node(node):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    node.alveo_card("0000:65:00", *U200)
    driver = make(node, {"VirtualDev": "True", "VirtualNum": "2"})
    inventory = driver.scan()
    assert ids(inventory)["amd.com/xilinx_u200_xdma_201830_2-1561465320"] == ["0000:65:00.1-0", "0000:65:00.1-1"]
    answer = allocate(driver, "amd.com/xilinx_u200_xdma_201830_2-1561465320", "0000:65:00.1-1")
    assert [n for n, _ in nodes_of(answer)] == ["/dev/dri/renderD130", "/dev/xclmgmt25856"]


def test_two_cards_stay_apart_and_a_missing_node_makes_the_card_unhealthy(node):
    node.u30_card(SLOTS, serial="CARD-A")
    node.u30_card(("0000:3d:00", "0000:3e:00"), serial="CARD-B")
    (node.dev / "dri/renderD129").unlink()
    inventory = make(node).scan()
    assert sorted(ids(inventory)[U30_COMMON]) == [FIRST, "0000:3d:00.1"] and len(inventory) == 1
    card_a = by_id(inventory)[FIRST][1]
    assert card_a.health is Health.UNHEALTHY and "renderD129" in card_a.reason
    assert by_id(inventory)["0000:3d:00.1"][1].health is Health.HEALTHY


def test_a_u30_without_serial_number_is_served_per_device_with_a_warning(node, caplog):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    for serial in node.sys.rglob("serial_num"):
        serial.unlink()
    with caplog.at_level(logging.WARNING):
        assert ids(make(node).scan()) == {U30_COMMON: [FIRST, SECOND]}
    assert any("without a serial number" in w for w in warnings(caplog))


@pytest.mark.parametrize(("variable", "value", "fallback"), [
    ("U30NameConvention", "Exact", "CommonName"),
    ("U30AllocUnit", "cards", "Card"),
    ("DeviceNameCustomize", "yes", "False"),
    ("VirtualDev", "on", "False"),
])
def test_an_unknown_value_gets_amds_default_and_a_warning_naming_the_variable(node, caplog, variable, value,
                                                                               fallback):
    with caplog.at_level(logging.WARNING):
        make(node, {variable: value})
    assert any(variable in w and repr(value) in w and fallback in w for w in warnings(caplog)), warnings(caplog)


@pytest.mark.parametrize("value", ["0", "-2", "many", ""])
def test_virtual_num_below_one_becomes_one_with_a_warning(node, caplog, value):
    node.alveo_card("0000:65:00", *U200)
    with caplog.at_level(logging.WARNING):
        driver = make(node, {"VirtualDev": "True", "VirtualNum": value})
    assert ids(driver.scan()) == {"amd.com/xilinx_u200_xdma_201830_2-1561465320": ["0000:65:00.1-0"]}
    assert any("VirtualNum" in w and "using 1" in w for w in warnings(caplog))


def test_virtual_num_over_the_limit_is_refused_naming_it(node):
    with pytest.raises(ConfigError, match="VirtualNum.*over multidp's limit"):
        make(node, {"VirtualDev": "True", "VirtualNum": str(MAX_REPLICAS + 1)})


# main.go reads VirtualNum whatever VirtualDev says, but fpga.go (GetAlveoDevices) uses it only when
# VirtualDev is True: a value over multidp's limit fails the driver only when it is the one in force.
@pytest.mark.parametrize(("environ", "section", "device_ids"), [
    ({"VirtualNum": str(MAX_REPLICAS + 1)}, {}, ["0000:65:00.1"]),  # VirtualDev off: AMD ignores it
    ({"VirtualNum": str(MAX_REPLICAS + 1), "VirtualDev": "True"}, {"amdVirtualNum": 2},
     ["0000:65:00.1-0", "0000:65:00.1-1"]),  # multidp's key is the value in force
])
def test_virtual_num_over_the_limit_is_refused_only_when_in_force(node, environ, section, device_ids):
    node.alveo_card("0000:65:00", *U200)
    driver = make(node, environ, **section)
    assert ids(driver.scan()) == {"amd.com/xilinx_u200_xdma_201830_2-1561465320": device_ids}


def test_virtual_num_without_virtual_dev_warns(node, caplog):
    with caplog.at_level(logging.WARNING):
        make(node, {"VirtualNum": "4"})
    assert any("VirtualDev is off" in w for w in warnings(caplog))


def test_multidp_keys_beat_amds_variables_and_say_so(node, caplog):
    node.u30_card(SLOTS, serial="XFL1ABCD0001")
    with caplog.at_level(logging.WARNING):
        driver = make(node, {"U30NameConvention": "ExactName"}, amdU30Names="common")
    assert ids(driver.scan()) == {U30_COMMON: [FIRST]}
    assert any("amdU30Names" in w and "U30NameConvention" in w for w in warnings(caplog))
