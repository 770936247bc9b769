"""AMD/Xilinx Alveo cards on fake nodes: pairing, shells, nodes, health, names."""

from __future__ import annotations

import logging

import pytest
from multidp import Health

from fpga_helpers import U200, U200_RES, U250, U250_RES, allocate, by_id, ids, nodes_of
from multidp_fpga.amd import qdma_instance


def test_two_cards_with_different_shells(node, make_driver):
    node.alveo_card("0000:65:00", *U200, numa=0)
    node.alveo_card("0000:d8:00", *U250, numa=1)
    inventory = make_driver().scan()
    assert ids(inventory) == {U200_RES: ["0000:65:00.1"], U250_RES: ["0000:d8:00.1"]}
    devices = by_id(inventory)
    assert devices["0000:65:00.1"][1].numa_nodes == (0,)
    assert devices["0000:d8:00.1"][1].numa_nodes == (1,)
    assert devices["0000:65:00.1"][1].info["mgmt"] == "0000:65:00.0"


def test_allocate_gives_render_and_management_nodes_rwm(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    driver = make_driver()
    driver.scan()
    answer = allocate(driver, U200_RES, "0000:65:00.1")
    assert nodes_of(answer) == [("/dev/dri/renderD128", "rwm"), ("/dev/xclmgmt25856", "rwm")]
    assert answer.mounts == []


def test_two_cards_of_one_shell_share_a_resource_and_keep_their_own_nodes(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    node.alveo_card("0000:66:00", *U200)
    driver = make_driver()
    assert ids(driver.scan()) == {U200_RES: ["0000:65:00.1", "0000:66:00.1"]}
    answer = allocate(driver, U200_RES, "0000:66:00.1")
    assert nodes_of(answer) == [("/dev/dri/renderD129", "rwm"), ("/dev/xclmgmt26112", "rwm")]


def test_qdma_function_adds_its_node(node, make_driver):
    node.alveo_card("0000:d8:00", *U250, qdma=True)
    driver = make_driver()
    driver.scan()
    answer = allocate(driver, U250_RES, "0000:d8:00.1")
    assert ("/dev/xfpga/dma.qdma.u55297.0", "rwm") in nodes_of(answer)
    assert qdma_instance("0000:d8:00.1") == 0xD8 * 256 + 1


def test_vm_with_only_the_user_function(node, make_driver):
    node.alveo_card("0000:00:05", *U200, mgmt=False)
    driver = make_driver()
    device = by_id(driver.scan())["0000:00:05.1"][1]
    assert device.health is Health.HEALTHY and "mgmt" not in device.info
    assert nodes_of(allocate(driver, U200_RES, "0000:00:05.1")) == [("/dev/dri/renderD128", "rwm")]


def test_missing_management_node_is_left_out_not_fatal(node, make_driver, caplog):
    node.alveo_card("0000:65:00", *U200)
    (node.dev / "xclmgmt25856").unlink()
    driver = make_driver()
    with caplog.at_level(logging.WARNING):
        device = by_id(driver.scan())["0000:65:00.1"][1]
    assert device.health is Health.HEALTHY
    assert nodes_of(allocate(driver, U200_RES, "0000:65:00.1")) == [("/dev/dri/renderD128", "rwm")]
    assert any("xclmgmt25856 is missing" in r.getMessage() for r in caplog.records)


def test_malformed_instance_file_is_reported(node, make_driver, caplog):
    node.alveo_card("0000:65:00", *U200)
    node.write(next((node.sys / "devices").rglob("0000:65:00.0")) / "instance", "abc")
    with caplog.at_level(logging.WARNING):
        driver = make_driver()
        driver.scan()
    assert nodes_of(allocate(driver, U200_RES, "0000:65:00.1")) == [("/dev/dri/renderD128", "rwm")]
    assert any("instance holds 'abc', not a number" in r.getMessage() for r in caplog.records)


def test_other_vendors_are_ignored_and_partner_vendors_served(node, make_driver):
    node.other_pci_function("0000:01:00.0")
    node.alveo_card("0000:17:00", *U200, vendor="0x1d0f", device="0xf010")  # AWS
    node.alveo_card("0000:18:00", *U250, vendor="0x3475")  # Arista
    node.alveo_card("0000:19:00", *U250, vendor="0x1234")  # not an XRT vendor
    assert ids(make_driver().scan()) == {U200_RES: ["0000:17:00.1"], U250_RES: ["0000:18:00.1"]}


def test_unreadable_shell_after_it_was_read_is_unhealthy_then_recovers(node, make_driver):
    card = node.alveo_card("0000:65:00", *U200)
    driver = make_driver()
    driver.scan()
    (card.rom / "VBNV").unlink()
    inventory = driver.scan()
    assert ids(inventory) == {U200_RES: ["0000:65:00.1"]}
    device = by_id(inventory)["0000:65:00.1"][1]
    assert device.health is Health.UNHEALTHY and f"{card.rom / 'VBNV'} is missing" in device.reason
    node.write(card.rom / "VBNV", U200[0])
    assert by_id(driver.scan())["0000:65:00.1"][1].health is Health.HEALTHY


def test_the_pci_rom_attribute_is_not_mistaken_for_the_shell(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    node.write(next((node.sys / "devices").rglob("0000:65:00.1")) / "rom", "")
    assert ids(make_driver().scan()) == {U200_RES: ["0000:65:00.1"]}


def test_a_new_shell_moves_the_card(node, make_driver):
    card = node.alveo_card("0000:65:00", *U200)
    driver = make_driver()
    driver.scan()
    node.write(card.rom / "VBNV", U250[0])
    node.write(card.rom / "timestamp", U250[1])
    assert ids(driver.scan()) == {U250_RES: ["0000:65:00.1"]}


def test_shell_never_read_is_skipped_with_one_log_line(node, make_driver, caplog):
    card = node.alveo_card("0000:65:00", *U200)
    node.alveo_card("0000:66:00", *U250)
    for name in ("VBNV", "timestamp"):
        (card.rom / name).unlink()
    card.rom.rmdir()
    driver = make_driver()
    with caplog.at_level(logging.WARNING):
        assert ids(driver.scan()) == {U250_RES: ["0000:66:00.1"]}
        driver.scan()
    lines = [r.getMessage() for r in caplog.records if "0000:65:00.1" in r.getMessage()]
    assert len(lines) == 1 and "has no rom* directory" in lines[0] and "not served" in lines[0]
    node.write(card.rom / "VBNV", U200[0])
    node.write(card.rom / "timestamp", U200[1])
    assert set(driver.scan()) == {U200_RES, U250_RES}


@pytest.mark.parametrize("broken", ["empty VBNV", "empty timestamp", "binary VBNV"])
def test_malformed_shell_files(node, make_driver, broken):
    card = node.alveo_card("0000:65:00", *U200)
    driver = make_driver()
    driver.scan()
    if broken == "binary VBNV":
        (card.rom / "VBNV").write_bytes(b"\xff\xfe\x00")
    else:
        node.write(card.rom / broken.split()[1], "")
    device = by_id(driver.scan())["0000:65:00.1"][1]
    assert device.health is Health.UNHEALTHY and str(card.rom) in device.reason


def test_missing_render_node_or_drm_entry_is_unhealthy(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    driver = make_driver()
    driver.scan()
    (node.dev / "dri/renderD128").unlink()
    device = by_id(driver.scan())["0000:65:00.1"][1]
    assert device.health is Health.UNHEALTHY and "renderD128 is missing" in device.reason
    node.node("dri/renderD128")
    assert by_id(driver.scan())["0000:65:00.1"][1].health is Health.HEALTHY
    drm = next((node.sys / "devices").rglob("renderD128"))
    for entry in drm.iterdir():
        entry.unlink()
    drm.rmdir()
    assert "no DRM render node" in by_id(driver.scan())["0000:65:00.1"][1].reason


def test_malformed_vendor_file_skips_only_that_function(node, make_driver, caplog):
    node.alveo_card("0000:65:00", *U200)
    bad = node.other_pci_function("0000:02:00.0")
    vendor_file = next((node.sys / "devices").rglob("0000:02:00.0")) / "vendor"
    vendor_file.unlink()
    vendor_file.mkdir()
    with caplog.at_level(logging.WARNING):
        assert ids(make_driver().scan()) == {U200_RES: ["0000:65:00.1"]}
    assert any(f"PCI function {bad.address} is skipped" in r.getMessage() for r in caplog.records)


def test_cards_appearing_and_vanishing(node, make_driver):
    driver = make_driver()
    assert driver.scan() == {}
    node.alveo_card("0000:65:00", *U200)
    assert ids(driver.scan()) == {U200_RES: ["0000:65:00.1"]}
    node.remove_card("0000:65:00.1")
    assert driver.scan() == {}


def test_legacy_names_and_node_mounts(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    driver = make_driver(amd_legacy_names=True, amd_mount_nodes=True)
    legacy = "xilinx.com/fpga-xilinx_u200_xdma_201830_2-1561465320"
    assert ids(driver.scan()) == {legacy: ["0000:65:00.1"]}
    mounts = [(m.host_path, m.container_path, m.read_only) for m in allocate(driver, legacy, "0000:65:00.1").mounts]
    assert mounts == [("/dev/dri/renderD128", "/dev/dri/renderD128", False),
                      ("/dev/xclmgmt25856", "/dev/xclmgmt25856", False)]


def test_overlong_shell_name_needs_an_override(node, make_driver, caplog):
    shell = "xilinx_u55c_gen3x16_xdma_base_3_with_a_very_long_custom_suffix"
    node.alveo_card("0000:65:00", shell, "1620000000")
    computed = f"amd.com/{shell}-1620000000"
    with caplog.at_level(logging.WARNING):
        assert make_driver().scan() == {}
    assert any("63" in r.getMessage() and "drivers.fpga.names" in r.getMessage() for r in caplog.records)
    driver = make_driver(names={computed: "amd.com/u55c"})
    assert ids(driver.scan()) == {"amd.com/u55c": ["0000:65:00.1"]}
    assert nodes_of(allocate(driver, "amd.com/u55c", "0000:65:00.1"))[0] == ("/dev/dri/renderD128", "rwm")


def test_amd_can_be_switched_off(node, make_driver):
    node.alveo_card("0000:65:00", *U200)
    assert make_driver(amd=False).scan() == {}
