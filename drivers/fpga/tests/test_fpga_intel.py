"""Intel FPGAs on fake nodes: DFL and OPAE layouts, af and region modes, health, hot-plug."""

from __future__ import annotations

import logging
import os

import pytest
from multidp import AllocationRefused, Health

from fpga_helpers import (
    AF_IFACE2_AFU2,
    AF_IFACE_AFU,
    AF_IFACE_AFU2,
    AFU,
    AFU2,
    ALL_F,
    IFACE,
    IFACE2,
    REGION_IFACE,
    REGION_IFACE2,
    allocate,
    by_id,
    ids,
    nodes_of,
)
from multidp_fpga.naming import REGION_MODE_ANNOTATION


@pytest.fixture(params=["dfl", "opae"])
def layout(request):
    return request.param


def add_card(node, layout, address, interface_id, afu_ids, numa=0):
    maker = node.dfl_card if layout == "dfl" else node.opae_card
    return maker(address, interface_id, afu_ids, numa=numa)


def port(layout, n):
    return f"dfl-port.{n}" if layout == "dfl" else f"intel-fpga-port.{n}"


def fme(layout, n):
    return f"dfl-fme.{n}" if layout == "dfl" else f"intel-fpga-fme.{n}"


def test_af_mode_one_resource_per_id_pair_one_device_per_port(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU, AFU2], numa=0)
    add_card(node, layout, "0000:af:00.0", IFACE2, [AFU2], numa=1)
    inventory = make_driver().scan()
    assert ids(inventory) == {
        AF_IFACE_AFU: [port(layout, 0)],
        AF_IFACE_AFU2: [port(layout, 1)],
        AF_IFACE2_AFU2: [port(layout, 2)],
    }
    devices = by_id(inventory)
    assert devices[port(layout, 0)][1].numa_nodes == (0,)
    assert devices[port(layout, 2)][1].numa_nodes == (1,)
    assert all(d.health is Health.HEALTHY for _, d in devices.values())
    assert devices[port(layout, 1)][1].info["afu"] == AFU2


def test_af_mode_allocates_the_port_node_read_write(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU, AFU])
    driver = make_driver()
    driver.scan()
    answer = allocate(driver, AF_IFACE_AFU, port(layout, 0), port(layout, 1))
    assert nodes_of(answer) == [(f"/dev/{port(layout, 0)}", "rw"), (f"/dev/{port(layout, 1)}", "rw")]
    assert answer.annotations == {}


def test_region_mode_one_device_per_fme_with_all_its_ports(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU, AFU2], numa=0)
    add_card(node, layout, "0000:af:00.0", IFACE2, [AFU], numa=1)
    driver = make_driver(mode="region")
    inventory = driver.scan()
    assert ids(inventory) == {REGION_IFACE: [fme(layout, 0)], REGION_IFACE2: [fme(layout, 1)]}
    assert by_id(inventory)[fme(layout, 1)][1].numa_nodes == (1,)
    answer = allocate(driver, REGION_IFACE, fme(layout, 0))
    assert nodes_of(answer) == [(f"/dev/{port(layout, 0)}", "rw"), (f"/dev/{port(layout, 1)}", "rw")]
    assert answer.annotations == {REGION_MODE_ANNOTATION: "fpga.intel.com/region"}


def test_regiondevel_mode_adds_the_fme_node_and_no_annotation(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU])
    driver = make_driver(mode="regiondevel")
    assert ids(driver.scan()) == {REGION_IFACE: [fme(layout, 0)]}
    answer = allocate(driver, REGION_IFACE, fme(layout, 0))
    assert nodes_of(answer) == [(f"/dev/{port(layout, 0)}", "rw"), (f"/dev/{fme(layout, 0)}", "rw")]
    assert answer.annotations == {}


def test_opae_is_picked_when_both_class_directories_exist(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    node.opae_card("0000:af:00.0", IFACE2, [AFU2])
    driver = make_driver()
    assert ids(driver.scan()) == {AF_IFACE2_AFU2: ["intel-fpga-port.1"]}
    assert driver.intel.layout.name == "OPAE"


def test_ids_are_lowercased_and_dashes_stripped(node, make_driver):
    card = node.dfl_card("0000:5e:00.0", "CE489693-98F0-5F33-946D-560708BE108A", [AFU])
    node.set_afu_id(card.ports[0], "D8424DC4-A4A3-C413-F89E-433683F9040B")
    assert ids(make_driver().scan()) == {AF_IFACE_AFU: ["dfl-port.0"]}


def test_all_f_afu_stays_in_its_resource_unhealthy_and_recovers(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU, AFU])
    driver = make_driver()
    driver.scan()
    node.set_afu_id(port(layout, 0), ALL_F)
    inventory = driver.scan()
    assert ids(inventory) == {AF_IFACE_AFU: [port(layout, 0), port(layout, 1)]}  # no all-f resource
    resource, device = by_id(inventory)[port(layout, 0)]
    assert device.health is Health.UNHEALTHY
    assert "afu_id is all f" in device.reason
    assert by_id(inventory)[port(layout, 1)][1].health is Health.HEALTHY
    node.set_afu_id(port(layout, 0), AFU)
    assert by_id(driver.scan())[port(layout, 0)][1].health is Health.HEALTHY


def test_a_different_valid_afu_moves_the_port(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU])
    driver = make_driver()
    driver.scan()
    node.set_afu_id("dfl-port.0", ALL_F)
    driver.scan()
    node.set_afu_id("dfl-port.0", AFU2)
    inventory = driver.scan()
    assert ids(inventory) == {AF_IFACE_AFU: ["dfl-port.1"], AF_IFACE_AFU2: ["dfl-port.0"]}
    assert by_id(inventory)["dfl-port.0"][1].health is Health.HEALTHY


def test_a_port_all_f_from_the_start_is_left_out_with_a_log_line(node, make_driver, caplog):
    node.dfl_card("0000:5e:00.0", IFACE, [ALL_F, AFU])
    driver = make_driver()
    with caplog.at_level(logging.WARNING):
        inventory = driver.scan()
        driver.scan()
    assert ids(inventory) == {AF_IFACE_AFU: ["dfl-port.1"]}
    lines = [r.getMessage() for r in caplog.records if "dfl-port.0" in r.getMessage()]
    assert len(lines) == 1, lines  # logged once, not at every scan
    assert "not served" in lines[0] and "afu_id is all f" in lines[0]


def test_all_f_interface_id_in_region_mode(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver(mode="region")
    driver.scan()
    node.set_interface_id("0000:5e:00.0", ALL_F)
    inventory = driver.scan()
    assert ids(inventory) == {REGION_IFACE: ["dfl-fme.0"]}
    device = by_id(inventory)["dfl-fme.0"][1]
    assert device.health is Health.UNHEALTHY and "compat_id is all f" in device.reason
    node.set_interface_id("0000:5e:00.0", IFACE2)
    assert ids(driver.scan()) == {REGION_IFACE2: ["dfl-fme.0"]}


def test_all_f_interface_id_in_af_mode_makes_ports_unhealthy(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    node.set_interface_id("0000:5e:00.0", ALL_F)
    device = by_id(driver.scan())["dfl-port.0"][1]
    assert device.health is Health.UNHEALTHY and "compat_id" in device.reason


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not-an-id", "not a 128-bit id"),
        ("d8424dc4a4a3c413f89e433683f9040b00", "not a 128-bit id"),
        ("", "not a 128-bit id"),
        ("x" * 5000, "longer than"),
        ("d8424dc4a4a3c413f89e4336\u00e9", "not ASCII"),
    ],
)
def test_malformed_afu_id_names_the_file_and_keeps_the_port_unhealthy(node, make_driver, content, words):
    card = node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    card.afu_files["dfl-port.0"].write_text(content)
    device = by_id(driver.scan())["dfl-port.0"][1]
    assert device.health is Health.UNHEALTHY
    assert words in device.reason and str(card.afu_files["dfl-port.0"]) in device.reason


def test_afu_id_that_is_a_directory_or_missing(node, make_driver):
    card = node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    afu_file = card.afu_files["dfl-port.0"]
    afu_file.unlink()
    assert "is missing" in by_id(driver.scan())["dfl-port.0"][1].reason
    afu_file.mkdir()
    assert "is a directory" in by_id(driver.scan())["dfl-port.0"][1].reason


def test_missing_port_node_is_unhealthy_until_it_returns(node, make_driver, layout):
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    (node.dev / port(layout, 0)).unlink()
    device = by_id(driver.scan())[port(layout, 0)][1]
    assert device.health is Health.UNHEALTHY and f"{node.dev / port(layout, 0)} is missing" in device.reason
    node.node(port(layout, 0))
    assert by_id(driver.scan())[port(layout, 0)][1].health is Health.HEALTHY


def test_region_mode_missing_fme_or_port_node_is_unhealthy(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU])
    driver = make_driver(mode="region")
    driver.scan()
    (node.dev / "dfl-fme.0").unlink()
    assert "dfl-fme.0 is missing" in by_id(driver.scan())["dfl-fme.0"][1].reason
    node.node("dfl-fme.0")
    (node.dev / "dfl-port.1").unlink()
    assert "dfl-port.1 is missing" in by_id(driver.scan())["dfl-fme.0"][1].reason
    node.node("dfl-port.1")
    assert by_id(driver.scan())["dfl-fme.0"][1].health is Health.HEALTHY


def test_cards_appearing_and_vanishing_without_a_restart(node, make_driver, layout):
    driver = make_driver()
    assert driver.scan() == {}
    add_card(node, layout, "0000:5e:00.0", IFACE, [AFU])
    assert ids(driver.scan()) == {AF_IFACE_AFU: [port(layout, 0)]}
    add_card(node, layout, "0000:af:00.0", IFACE2, [AFU2])
    assert set(driver.scan()) == {AF_IFACE_AFU, AF_IFACE2_AFU2}
    node.remove_card("0000:5e:00.0")
    assert ids(driver.scan()) == {AF_IFACE2_AFU2: [port(layout, 1)]}
    with pytest.raises(AllocationRefused, match="no longer on this node"):
        allocate(driver, AF_IFACE_AFU, port(layout, 0))


def test_a_vanished_port_is_forgotten(node, make_driver):
    """A port that comes back all f after being unplugged has no resource to return to."""
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    node.remove_card("0000:5e:00.0")
    driver.scan()
    node.dfl_card("0000:5e:00.0", IFACE, [ALL_F])
    assert driver.scan() == {}


def test_port_without_an_fme_is_left_out_with_a_reason(node, make_driver, caplog):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    fme_dir = next((node.sys / "devices").rglob("dfl-fme.0"))
    os.rename(fme_dir, fme_dir.with_name("not-an-fme"))
    for mode in ("af", "region"):
        with caplog.at_level(logging.WARNING):
            assert make_driver(mode=mode).scan() == {}
        assert any("dfl-port.0 is not served: no FME found" in r.getMessage() for r in caplog.records)
        caplog.clear()


def test_dangling_class_entry_and_stray_files_do_not_break_the_scan(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    os.symlink("../../devices/gone/region9", node.sys / "class/fpga_region/region9")
    (node.sys / "class/fpga_region/README").write_text("not a region")
    assert ids(make_driver().scan()) == {AF_IFACE_AFU: ["dfl-port.0"]}


def test_sriov_vf_port_belongs_to_the_fme_of_its_physical_function(node, make_driver):
    card = node.dfl_card("0000:5e:00.0", IFACE, [AFU], numa=1)
    pf = next((node.sys / "devices").rglob("0000:5e:00.0"))
    vf = pf.parent / "0000:5e:00.1"
    node.write(vf / "numa_node", "1")
    node.link(vf / "physfn", pf, card)
    region = vf / "fpga_region" / "region7"
    node.link(node.sys / "class/fpga_region/region7", region, card)
    node.write(region / "dfl-port.5" / "afu_id", AFU2)
    node.node("dfl-port.5")
    inventory = make_driver().scan()
    assert ids(inventory) == {AF_IFACE_AFU: ["dfl-port.0"], AF_IFACE_AFU2: ["dfl-port.5"]}
    assert by_id(inventory)["dfl-port.5"][1].numa_nodes == (1,)
    assert by_id(inventory)["dfl-port.5"][1].info["pci"] == "0000:5e:00.1"


@pytest.mark.parametrize("numa", ["-1", "two", ""])
def test_unknown_or_malformed_numa_node_gives_no_topology(node, make_driver, numa):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    node.write(next((node.sys / "devices").rglob("0000:5e:00.0")) / "numa_node", numa)
    assert by_id(make_driver().scan())["dfl-port.0"][1].numa_nodes == ()


def test_health_changes_are_logged_once_each_way(node, make_driver, caplog):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    driver.scan()
    with caplog.at_level(logging.INFO, logger="multidp.driver.fpga"):
        node.set_afu_id("dfl-port.0", ALL_F)
        driver.scan()
        driver.scan()
        node.set_afu_id("dfl-port.0", AFU)
        driver.scan()
        driver.scan()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "dfl-port.0" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert "is Unhealthy" in lines[0][1] and lines[1][1].startswith("no longer:")


def test_intel_can_be_switched_off(node, make_driver):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    assert make_driver(intel=False).scan() == {}
