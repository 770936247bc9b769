"""Intel's published test tables, ported: the same inputs give the same names, IDs, nodes and CDI devices.

Source: intel/intel-device-plugins-for-kubernetes at 94a91bc. Intel's tests inject ports through a
``newPort`` stub; here the same facts (addresses, ids, ports per FME) are built as fake sysfs trees
and read by the real scanner. Where multidp differs on purpose, the test says so.
"""

from __future__ import annotations

import logging

import pytest
from multidp import CDIHook, ConfigError
from multidp.testing import driver_config

import multidp_fpga.plugin
from fpga_helpers import AFU, AFU2, ALL_F, IFACE, IFACE2, allocate, by_id, ids, nodes_of
from multidp_fpga.config import FpgaConfig, validate
from multidp_fpga.driver import FpgaDriver
from multidp_fpga.naming import intel_af_resource

IF_6952 = "69528db6eb31577a8c3668f9faa081f6"  # the interface id of Intel's scan tests
AF_6952_D84 = "fpga.intel.com/af-695.d84.aVKNtusxV3qMNmj5-qCB9thCTcSko8QT-J5DNoP5BAs"
AF_6952_F7D = "fpga.intel.com/af-695.f7d.aVKNtusxV3qMNmj5-qCB9vffQFy9es9yIvFEsLk6zRg"
REGION_6952 = f"fpga.intel.com/region-{IF_6952}"
HOOK = "/opt/intel/fpga-sw/intel-fpga-crihook"


# pkg/fpga/devtypes_test.go, TestGetAfuDevType ---------------------------------------------------

@pytest.mark.parametrize(("interface_id", "afu_id", "expected"), [
    ("ce48969398f05f33946d560708be108a", "d8424dc4a4a3c413f89e433683f9040b",
     "af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs"),  # "Everything is correct 1"
    ("bfac4d851ee856fe8c95865ce1bbaa2d", "f7df405cbd7acf7222f144b0b93acd18",
     "af-bfa.f7d.v6xNhR7oVv6MlYZc4buqLfffQFy9es9yIvFEsLk6zRg"),  # "Everything is correct 2"
    ("unparsable", "", None),  # "unparsable interfaceID": an error
])
def test_devtypes_table(interface_id, afu_id, expected):
    if expected is None:
        with pytest.raises(ValueError):
            intel_af_resource(interface_id, afu_id)
    else:
        assert intel_af_resource(interface_id, afu_id) == f"fpga.intel.com/{expected}"


# cmd/fpga_plugin/dfl_test.go TestScanFPGAsDFL and opae_test.go TestScanFPGAsOPAE -----------------

def add_vf_port(node, pf_address: str, layout: str, number: int, afu_id: str) -> None:
    """A VF (function .1) of ``pf_address`` carrying one port, as in Intel's "(SR-IOV)" cases."""
    card = node.cards[pf_address]
    pf = next((node.sys / "devices").rglob(pf_address))
    vf = pf.parent / (pf_address[:-1] + "1")
    node.write(vf / "numa_node", "0")
    node.link(vf / "physfn", pf, card)
    if layout == "dfl":
        device, port, class_dir = vf / "fpga_region" / f"region{10 + number}", f"dfl-port.{number}", "fpga_region"
    else:
        device, port, class_dir = vf / "fpga" / f"intel-fpga-dev.{number}", f"intel-fpga-port.{number}", "fpga"
    node.link(node.sys / "class" / class_dir / device.name, device, card)
    node.write(device / port / "afu_id", afu_id)
    node.node(port)


def scan_table(node, layout, mode, sriov):
    maker = node.dfl_card if layout == "dfl" else node.opae_card
    maker("0000:81:00.0", IF_6952, [AFU])
    if sriov:  # the second FME's port is on its VF (Intel: 0000:42:00.1)
        maker("0000:42:00.0", IF_6952, [])
        add_vf_port(node, "0000:42:00.0", layout, 2, AFU2)
    else:
        maker("0000:42:00.0", IF_6952, [AFU2])
    driver = FpgaDriver(validate(FpgaConfig(mode=mode)), node.sys, node.dev, logging.getLogger("t"))
    return driver.scan()


P = {"dfl": "dfl-port", "opae": "intel-fpga-port"}
F = {"dfl": "dfl-fme", "opae": "intel-fpga-fme"}


@pytest.mark.parametrize(("layout", "mode", "sriov", "expected"), [
    # "Valid DFL scan in af mode", "Valid OPAE scan in af mode"
    ("dfl", "af", False, {AF_6952_D84: ["dfl-port.0"], AF_6952_F7D: ["dfl-port.1"]}),
    ("opae", "af", False, {AF_6952_D84: ["intel-fpga-port.0"], AF_6952_F7D: ["intel-fpga-port.1"]}),
    # "Valid OPAE scan in af mode (SR-IOV)"
    ("opae", "af", True, {AF_6952_D84: ["intel-fpga-port.0"], AF_6952_F7D: ["intel-fpga-port.2"]}),
    # "Valid DFL scan in region mode", "Valid OPAE scan in region mode (SR-IOV)"
    ("dfl", "region", False, {REGION_6952: ["dfl-fme.0", "dfl-fme.1"]}),
    ("opae", "region", True, {REGION_6952: ["intel-fpga-fme.0", "intel-fpga-fme.1"]}),
])
def test_scan_tables(node, layout, mode, sriov, expected):
    assert ids(scan_table(node, layout, mode, sriov)) == expected


def test_no_sysfs_device_entries(node, make_driver):
    # opae_test.go "No sysfs device entries": an empty class directory gives an empty tree.
    (node.sys / "class/fpga").mkdir(parents=True)
    assert make_driver().scan() == {}


# getDevicesDFL / getDevicesOPAE with TestGetRegionTree*, TestGetRegionDevelTree*, TestGetAfuTree* ---

def intel_devices(node, layout):
    """Intel's three regions: one port; two ports; all-f interface and AFU ids with two ports."""
    maker = node.dfl_card if layout == "dfl" else node.opae_card
    maker("0000:5e:00.0", IFACE, [AFU])
    maker("0000:6e:00.0", IFACE, [AFU, AFU])
    maker("0000:7e:00.0", ALL_F, [ALL_F, ALL_F])


@pytest.mark.parametrize("layout", ["dfl", "opae"])
def test_region_tree(node, make_driver, layout):
    intel_devices(node, layout)
    driver = make_driver(mode="region")
    inventory = driver.scan()
    region = f"fpga.intel.com/region-{IFACE}"
    # Intel also serves region-ffff... with the third FME Unhealthy; multidp never makes a resource from
    # an all-f id (docs/drop-in/fpga.md, "Deliberate differences").
    assert ids(inventory) == {region: [f"{F[layout]}.0", f"{F[layout]}.1"]}
    answer = allocate(driver, region, f"{F[layout]}.1")
    assert nodes_of(answer) == [(f"/dev/{P[layout]}.1", "rw"), (f"/dev/{P[layout]}.2", "rw")]
    assert answer.cdi_devices == [f"intel.cdi.k8s.io/fpga={F[layout]}.1"]
    assert [d.cdi_devices for d in inventory[region]] == [(f"intel.cdi.k8s.io/fpga={F[layout]}.{i}",) for i in (0, 1)]
    assert answer.annotations == {"com.intel.fpga.mode": "fpga.intel.com/region"}  # TestPostAllocate
    (spec,) = driver.cdi_specs()
    assert spec.kind == "intel.cdi.k8s.io/fpga"
    assert [d.name for d in spec.devices] == [f"{F[layout]}.0", f"{F[layout]}.1"]
    assert all(list(d.hooks) == [CDIHook("createRuntime", HOOK)] and not d.device_nodes for d in spec.devices)


@pytest.mark.parametrize("layout", ["dfl", "opae"])
def test_region_devel_tree(node, make_driver, layout):
    intel_devices(node, layout)
    driver = make_driver(mode="regiondevel")
    region = f"fpga.intel.com/region-{IFACE}"
    inventory = driver.scan()
    assert ids(inventory) == {region: [f"{F[layout]}.0", f"{F[layout]}.1"]}
    answer = allocate(driver, region, f"{F[layout]}.0")
    assert nodes_of(answer) == [(f"/dev/{P[layout]}.0", "rw"), (f"/dev/{F[layout]}.0", "rw")]
    assert answer.cdi_devices == [] and answer.annotations == {}
    assert all(d.cdi_devices == () for d in inventory[region])
    assert driver.cdi_specs() == ()


@pytest.mark.parametrize("layout", ["dfl", "opae"])
def test_afu_tree(node, make_driver, layout):
    intel_devices(node, layout)
    driver = make_driver()
    # Intel also serves af-fff.fff.____8 with the all-f ports Unhealthy; multidp leaves them out.
    af = "fpga.intel.com/af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs"
    assert ids(driver.scan()) == {af: [f"{P[layout]}.0", f"{P[layout]}.1", f"{P[layout]}.2"]}
    assert nodes_of(allocate(driver, af, f"{P[layout]}.2")) == [(f"/dev/{P[layout]}.2", "rw")]
    assert driver.cdi_specs() == ()


# TestNewDevicePluginDFL / TestNewDevicePluginOPAE / TestNewDevicePlugin ---------------------------

@pytest.mark.parametrize("mode", ["af", "region", "regiondevel", "unparsable"])
def test_modes(mode):
    if mode == "unparsable":  # Intel: "Wrong mode"
        with pytest.raises(ConfigError, match="mode"):
            driver_config(multidp_fpga.plugin, {"mode": mode}, name="fpga")
    else:
        assert driver_config(multidp_fpga.plugin, {"mode": mode}, name="fpga").mode == mode


@pytest.mark.parametrize("mode", ["af", "region", "regiondevel"])
def test_no_kernel_driver_is_not_an_error(node, make_driver, mode):
    # Intel's newDevicePlugin fails ("kernel driver is not loaded") and the plugin exits; multidp keeps
    # serving the node's other devices and picks the FPGAs up when the driver loads.
    driver = make_driver(mode=mode)
    assert driver.scan() == {}
    node.dfl_card("0000:5e:00.0", IFACE2, [AFU2])
    assert len(driver.scan()) == 1


def test_card_modes_put_one_card_in_region_mode(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    node.dfl_card("0000:af:00.0", IFACE2, [AFU2])
    inventory = make_driver(card_modes={"0000:af:00.0": "region"}).scan()
    assert ids(inventory) == {"fpga.intel.com/af-ce4.d84.zkiWk5jwXzOUbVYHCL4QithCTcSko8QT-J5DNoP5BAs": ["dfl-port.0"],
                              f"fpga.intel.com/region-{IFACE2}": ["dfl-fme.1"]}
    assert by_id(inventory)["dfl-fme.1"][1].info["pci"] == "0000:af:00.0"


def test_a_card_mode_naming_no_card_is_warned_about_once(node, make_driver, caplog):
    # Intel's plugin has no per-card mode (mode.go: one mode per node); multidp's cardModes must not
    # drop an address silently: a VF's or port's address is not the FME's PCI function.
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver(card_modes={"0000:5e:00.1": "region", "0000:5e:00.0": "af"})
    with caplog.at_level(logging.WARNING):
        driver.scan()
        driver.scan()
    lines = [r.getMessage() for r in caplog.records if "cardModes" in r.getMessage()]
    assert len(lines) == 1 and "'0000:5e:00.1'" in lines[0] and "0000:5e:00.0" in lines[0], lines


@pytest.mark.parametrize(("section", "key"), [
    ({"cardModes": {"5e:00.0": "region"}}, "drivers.fpga.cardModes['5e:00.0']"),
    ({"cardModes": {"0000:5e:00.0": "orchestrated"}}, "drivers.fpga.cardModes"),
    ({"intelHook": "intel-fpga-crihook"}, "drivers.fpga.intelHook"),
])
def test_bad_intel_keys_are_refused(section, key):
    with pytest.raises(ConfigError) as caught:
        validate(driver_config(multidp_fpga.plugin, section, name="fpga"))
    assert caught.value.key.startswith(key), caught.value


def test_the_start_up_line_says_how_the_mode_annotation_is_read(node, make_driver, caplog):
    # mode.go reads the node annotation; in multidp the host reads it for configByLabel.annotation.
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    with caplog.at_level(logging.INFO):
        make_driver().scan()
    assert any("fpga.intel.com/device-plugin-mode picks the mode when configByLabel names it" in r.getMessage()
               for r in caplog.records)
