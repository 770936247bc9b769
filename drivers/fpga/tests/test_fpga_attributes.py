"""Driver API 1.4: what each FPGA tells DRA's scheduler, made by the full scan and within DRA's rules."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multidp import Device
from multidp.testing import attribute_problems as all_problems
from multidp.testing import create_driver

import multidp_fpga.plugin as plugin
from fpga_helpers import AFU, AFU2, ALL_F, IFACE, U250, MakeDriver, by_id
from multidp_fpga.describe import pci_id
from multidp_fpga.fakesys import FakeNode
from multidp_fpga.sysfs import pcie_root

BUS, ROOT = "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot"


@pytest.fixture
def simulate_in() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mdp", dir="/tmp") as folder:
        yield Path(folder)


def simulated(folder: Path, **section: Any) -> dict[str, Device]:
    """The simulated node's devices by ID (see multidp_fpga.simulate)."""
    driver = create_driver(plugin, section, name="fpga", simulate_in=folder)
    try:
        return {device_id: device for device_id, (_, device) in by_id(driver.scan()).items()}
    finally:
        driver.close()


@pytest.mark.parametrize("frontend", ["device-plugin", "dra"])
def test_the_simulated_node_described(simulate_in: Path, frontend: str) -> None:
    devices = simulated(simulate_in, frontend=frontend)
    assert dict(devices["dfl-port.1"].attributes) == {
        "vendor": "intel", "mode": "af", "driver": "dfl", "interfaceID": IFACE, "afuID": AFU2, "fme": "dfl-fme.0",
        "port": "dfl-port.1", "virtualFunction": False, BUS: "0000:5e:00.0", ROOT: "pci0000:5d"}
    assert dict(devices["dfl-fme.2"].attributes) == {  # the card in region mode (the simulation's cardModes)
        "vendor": "intel", "mode": "region", "driver": "dfl", "interfaceID": "bfac4d851ee856fe8c95865ce1bbaa2d",
        "fme": "dfl-fme.2", "ports": 1, BUS: "0000:3b:00.0", ROOT: "pci0000:3a"}
    assert dict(devices["0000:d8:00.1"].attributes) == {
        "vendor": "amd", "type": "alveo", "shell": U250[0], "timestamp": U250[1], "deviceID": "5001",
        BUS: "0000:d8:00.1", ROOT: "pci0000:d7"}
    assert dict(devices["0000:17:00.1"].attributes) == {  # a U30 card: its lowest user function speaks for it
        "vendor": "amd", "type": "u30", "shell": "xilinx_u30_gen3x4_base_2", "timestamp": "1598453230",
        "deviceID": "503d", "serialNumber": "XFL1U30SIM01", BUS: "0000:17:00.1", ROOT: "pci0000:16"}
    assert dict(devices["0000:c1:00.0"].attributes) == {
        "vendor": "amd", "type": "ma35", "productName": "MA35D", "deviceID": "5070", "serialNumber": "MA35SIM0001",
        BUS: "0000:c1:00.0", ROOT: "pci0000:c0"}
    assert all_problems(devices.values()) == []


def test_opae_cards_name_their_driver(node: FakeNode, make_driver: MakeDriver) -> None:
    node.opae_card("0000:5e:00.0", IFACE, [AFU], numa=1)
    port = by_id(make_driver().scan())["intel-fpga-port.0"][1].attributes
    assert (port["driver"], port["fme"], port[BUS], port[ROOT]) == ("opae", "intel-fpga-fme.0", "0000:5e:00.0",
                                                                     "pci0000:5d")


def test_a_vf_port_says_so_and_names_its_own_function(node: FakeNode, make_driver: MakeDriver) -> None:
    card = node.dfl_card("0000:86:00.0", IFACE, [AFU])
    pf = next((node.sys / "devices").rglob("0000:86:00.0"))
    vf = pf.parent / "0000:86:00.1"
    node.write(vf / "numa_node", "0")
    node.link(vf / "physfn", pf, card)
    region = vf / "fpga_region" / "region9"
    node.link(node.sys / "class/fpga_region/region9", region, card)
    node.write(region / "dfl-port.7" / "afu_id", AFU2)
    node.node("dfl-port.7")
    inventory = by_id(make_driver().scan())
    port = inventory["dfl-port.7"][1].attributes
    assert (port["virtualFunction"], port[BUS], port["fme"], port["afuID"]) == (True, "0000:86:00.1", card.fme, AFU2)
    assert inventory["dfl-port.0"][1].attributes["virtualFunction"] is False


def test_made_by_the_full_scan_and_again_when_an_id_changes(node: FakeNode, make_driver: MakeDriver) -> None:
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    driver = make_driver()
    first = by_id(driver.scan())["dfl-port.0"][1]
    assert by_id(driver.scan())["dfl-port.0"][1].attributes is first.attributes  # a poll: nothing made again
    node.set_afu_id("dfl-port.0", ALL_F)  # a crashed AFU: Unhealthy in its resource, its AFU id unknown
    crashed = by_id(driver.scan())["dfl-port.0"][1]
    assert not crashed.healthy and "afuID" not in crashed.attributes
    assert crashed.attributes["interfaceID"] == IFACE
    node.set_afu_id("dfl-port.0", AFU2)
    assert by_id(driver.scan())["dfl-port.0"][1].attributes["afuID"] == AFU2


def test_what_is_not_a_fact_is_left_out(node: FakeNode, make_driver: MakeDriver) -> None:
    long_shell = "xilinx_u55c_gen3x16_xdma_base_3_with_a_suffix_long_enough_to_pass_64_bytes"
    node.alveo_card("0000:65:00", long_shell, "1620000000", vendor="0x1d0f", device="0xf010")  # AWS F1, no serial
    driver = make_driver(amd_legacy_names=False, names={f"amd.com/{long_shell}-1620000000": "amd.com/u55c"})
    card = by_id(driver.scan())["0000:65:00.1"][1]
    assert card.attributes["timestamp"] == "1620000000" and card.attributes["deviceID"] == "f010"
    assert "shell" not in card.attributes  # over 64 bytes
    assert "serialNumber" not in card.attributes  # AMD's "F1-Node" stands in for a serial number there
    assert all_problems([card]) == []


@pytest.mark.parametrize("section", [{"mode": "region"}, {"mode": "regiondevel"}, {"amdVirtualDev": True,
                                                                                  "amdVirtualNum": 3},
                                     {"amdU30AllocUnit": "device", "frontend": "dra"}])
def test_every_device_keeps_to_dras_rules(simulate_in: Path, section: dict[str, Any]) -> None:
    devices = simulated(simulate_in, **section)
    assert len(devices) >= 7 and all(d.attributes for d in devices.values())
    assert all_problems(devices.values()) == []


@pytest.mark.parametrize(("text", "expected"), [("0x5001", "5001"), ("0X503D", "503d"), ("b30", "0b30"),
                                                ("", ""), ("0x12345", ""), ("pci", "")])
def test_pci_ids(text: str, expected: str) -> None:
    assert pci_id(text) == expected


def test_pcie_roots(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    assert pcie_root(sysfs, sysfs / "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0") == "pci0000:3a"
    assert pcie_root(sysfs, sysfs / "devices/platform/dfl-fme.0") == ""
    assert pcie_root(sysfs, None) == ""


def test_the_rule_checker_sees_broken_rules() -> None:
    found = all_problems([Device("p", attributes={"afu-id": "x", "shell": "s" * 65, "ok": True})])
    assert found == ["p: attribute 'afu-id': not a qualified name",
                     f"p: attribute 'shell': a string must have 1 to 64 bytes: {'s' * 65!r}"]
