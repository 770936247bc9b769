"""A poll that repeats the last scan's reads returns exactly what a full scan returns.

Each test runs two drivers over one tree in lockstep: the driver as it is (a poll repeats the
reads of its last full scan and scans in full only when an answer differs) and a twin that scans
in full at every poll. After every change to the tree both must give the same inventory (devices,
health, reasons, NUMA, info), the same Allocate grants, the same logged problems and the same CDI
specs; the driver must have scanned in full after the change and not at a poll with no change.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fpga_helpers import AFU, ALL_F, IFACE, U250, by_id
from multidp_fpga.config import FpgaConfig, validate
from multidp_fpga.driver import FpgaDriver
from multidp_fpga.fakesys import FakeNode
from multidp_fpga.simulate import NLB0, NLB3, REGION_CARD, build_demo_node

OTHER_ID = "0123456789abcdef0123456789abcdef"


class Twins:
    """The driver under test beside a twin that scans in full at every poll."""

    def __init__(self, node: FakeNode, **config: Any) -> None:
        self.node = node
        self.polled = self._driver(config)
        self.full = self._driver(config)
        self.full.reads.unchanged = lambda: False  # type: ignore[method-assign]
        self.full_scans = 0
        scan_in_full = self.polled._full_scan

        def counted() -> Any:
            self.full_scans += 1
            return scan_in_full()

        self.polled._full_scan = counted  # type: ignore[method-assign]

    def _driver(self, config: dict[str, Any]) -> FpgaDriver:
        settings = validate(FpgaConfig(**{"card_modes": {REGION_CARD: "region"}, **config}))
        return FpgaDriver(settings, self.node.sys, self.node.dev, logging.getLogger("multidp.driver.fpga"))

    def poll(self) -> tuple[bool, Any]:
        """One poll of both; whether the driver under test scanned in full, and its inventory."""
        before = self.full_scans
        polled, full = self.polled.scan(), self.full.scan()
        assert polled == full
        assert self.polled._grants == self.full._grants
        assert self.polled.problems.current == self.full.problems.current
        assert self.polled.cdi_specs() == self.full.cdi_specs()
        return self.full_scans > before, polled

    def settled(self) -> Any:
        """Two polls after a change: the first scans in full, the second only repeats reads.

        Returns the inventory and the grants (what Allocate answers)."""
        scanned, inventory = self.poll()
        assert scanned, "a change to the tree must bring a full scan"
        scanned, again = self.poll()
        assert not scanned and again is inventory, "a poll with no change must not scan in full"
        return inventory, dict(self.polled._grants)


def _card(node: FakeNode, address: str) -> Any:
    return node.cards[address]


def _sysfs_dir(node: FakeNode, name: str) -> Path:
    return next((node.sys / "devices").rglob(name))


def afu_rewritten(node: FakeNode) -> None:
    node.set_afu_id("dfl-port.1", NLB0)


def afu_all_f(node: FakeNode) -> None:
    node.set_afu_id("dfl-port.0", ALL_F)


def afu_malformed(node: FakeNode) -> None:
    node.set_afu_id("dfl-port.0", "not an id")


def afu_unreadable(node: FakeNode) -> None:
    path = _card(node, "0000:5e:00.0").afu_files["dfl-port.0"]
    path.unlink()
    path.mkdir()


def afu_missing(node: FakeNode) -> None:
    _card(node, "0000:af:00.0").afu_files["dfl-port.2"].unlink()


def interface_changed(node: FakeNode) -> None:
    node.set_interface_id("0000:5e:00.0", OTHER_ID)


def region_interface_all_f(node: FakeNode) -> None:
    node.set_interface_id(REGION_CARD, ALL_F)


def port_node_vanished(node: FakeNode) -> None:
    (node.dev / "dfl-port.2").unlink()


def fme_node_vanished(node: FakeNode) -> None:
    (node.dev / _card(node, REGION_CARD).fme).unlink()


def port_released(node: FakeNode) -> None:
    shutil.rmtree(_sysfs_dir(node, "dfl-port.1"))


def intel_card_removed(node: FakeNode) -> None:
    node.remove_card("0000:af:00.0")


def intel_card_added(node: FakeNode) -> None:
    node.dfl_card("0000:86:00.0", IFACE, [NLB3], numa=1)


def vf_created(node: FakeNode) -> None:
    card = _card(node, "0000:5e:00.0")
    pf = _sysfs_dir(node, "0000:5e:00.0")
    vf = pf.parent / "0000:5e:00.1"
    node.write(vf / "numa_node", "0")
    node.link(vf / "physfn", pf, card)
    region = vf / "fpga_region" / "region9"
    node.link(node.sys / "class/fpga_region/region9", region, card)
    node.write(region / "dfl-port.9" / "afu_id", NLB3)
    node.node("dfl-port.9")


def intel_class_gone(node: FakeNode) -> None:
    shutil.rmtree(node.sys / "class/fpga_region")


def shell_changed(node: FakeNode) -> None:
    rom = _card(node, "0000:65:00.1").rom
    node.write(rom / "VBNV", U250[0])
    node.write(rom / "timestamp", U250[1])


def shell_unreadable(node: FakeNode) -> None:
    (_card(node, "0000:65:00.1").rom / "VBNV").unlink()


def render_node_vanished(node: FakeNode) -> None:
    (node.dev / "dri/renderD128").unlink()


def render_minor_changed(node: FakeNode) -> None:
    drm = _sysfs_dir(node, "0000:65:00.1") / "drm"
    (drm / "renderD128").rename(drm / "renderD150")
    node.node("dri/renderD150")


def instance_malformed(node: FakeNode) -> None:
    node.write(_sysfs_dir(node, "0000:65:00.0") / "instance", "twelve")


def management_node_vanished(node: FakeNode) -> None:
    next(node.dev.glob("xclmgmt*")).unlink()


def qdma_node_vanished(node: FakeNode) -> None:
    next((node.dev / "xfpga").iterdir()).unlink()


def alveo_unbound(node: FakeNode) -> None:
    (_sysfs_dir(node, "0000:d8:00.1") / "user_pf").unlink()


def alveo_card_removed(node: FakeNode) -> None:
    node.remove_card("0000:65:00.1")


def alveo_card_added(node: FakeNode) -> None:
    node.alveo_card("0000:3d:00", *U250, numa=1)


def u30_serial_changed(node: FakeNode) -> None:
    serial = next(_sysfs_dir(node, "0000:18:00.1").glob("xmc.u.*")) / "serial_num"
    node.write(serial, "ANOTHERCARD")


def ma35_product_gone(node: FakeNode) -> None:
    info = next(_sysfs_dir(node, "0000:c1:00.0").glob("misc/*")) / "device_info"
    node.write(info, "Product serial number = MA35SIM0001")


def ma35_node_vanished(node: FakeNode) -> None:
    (node.dev / "ama_transcoder0").unlink()


def ma35_added(node: FakeNode) -> None:
    node.ma35("0000:c2:00.0", serial="MA35SIM0002")


CHANGES: list[Callable[[FakeNode], None]] = [
    afu_rewritten, afu_all_f, afu_malformed, afu_unreadable, afu_missing, interface_changed,
    region_interface_all_f, port_node_vanished, fme_node_vanished, port_released, intel_card_removed,
    intel_card_added, vf_created, shell_changed, shell_unreadable, render_node_vanished, render_minor_changed,
    instance_malformed, management_node_vanished, qdma_node_vanished, alveo_unbound, alveo_card_removed,
    alveo_card_added, u30_serial_changed, ma35_product_gone, ma35_node_vanished, ma35_added, intel_class_gone,
]


@pytest.fixture
def demo(tmp_path: Path) -> FakeNode:
    return build_demo_node(tmp_path / "node")


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__)
def test_one_change_gives_what_a_full_scan_gives(demo: FakeNode, change: Callable[[FakeNode], None]) -> None:
    twins = Twins(demo)
    before = twins.settled()
    change(demo)
    assert twins.settled() != before  # every change here shows in the inventory or in Allocate's answers


@pytest.mark.parametrize("mode", ["af", "region", "regiondevel"])
def test_changes_one_after_another_give_what_full_scans_give(demo: FakeNode, mode: str) -> None:
    twins = Twins(demo, mode=mode, card_modes={})
    twins.settled()
    for change in CHANGES:
        change(demo)
        twins.poll()
        assert not twins.poll()[0], f"after {change.__name__}: a poll with no change must not scan in full"


def test_an_id_that_comes_back_makes_the_device_healthy_again(demo: FakeNode) -> None:
    twins = Twins(demo)
    twins.settled()
    afu_all_f(demo)
    assert by_id(twins.settled()[0])["dfl-port.0"][1].reason.endswith("is all f: no usable AFU is loaded")
    demo.set_afu_id("dfl-port.0", NLB0)
    assert by_id(twins.settled()[0])["dfl-port.0"][1].reason == ""


def test_opae_layout(tmp_path: Path) -> None:
    node = FakeNode(tmp_path / "node")
    card = node.opae_card("0000:5e:00.0", IFACE, [AFU, NLB3])
    twins = Twins(node)
    twins.settled()
    node.set_afu_id("intel-fpga-port.1", ALL_F)
    twins.settled()
    assert card.interface_file is not None
    card.interface_file.unlink()
    twins.settled()
    (node.dev / card.fme).unlink()
    twins.poll()
    node.remove_card("0000:5e:00.0")
    assert twins.settled()[0] == {}


def test_a_function_whose_vendor_could_not_be_read_is_read_again_until_it_can(demo: FakeNode) -> None:
    vendor = _sysfs_dir(demo, "0000:65:00.1") / "vendor"
    vendor.unlink()
    vendor.mkdir()
    twins = Twins(demo)
    assert "0000:65:00.1" not in by_id(twins.settled()[0])
    vendor.rmdir()
    demo.write(vendor, "0x10ee")
    assert "0000:65:00.1" in by_id(twins.settled()[0])


def test_a_pci_function_link_that_dangled_and_is_mended(demo: FakeNode) -> None:
    link = demo.sys / "bus/pci/devices/0000:65:00.1"
    target = os.readlink(link)
    link.unlink()
    os.symlink(target + ".gone", link)
    twins = Twins(demo)
    assert "0000:65:00.1" not in by_id(twins.settled()[0])
    link.unlink()
    os.symlink(target, link)
    assert "0000:65:00.1" in by_id(twins.settled()[0])


def test_numa_is_read_once_per_function(demo: FakeNode) -> None:
    twins = Twins(demo)
    twins.settled()
    read = {path for (_, path) in twins.polled.reads._recorded or {}}
    assert read and not any(path.endswith("/numa_node") for path in read)
    assert any(path.endswith("/afu_id") for path in read) and any(path.endswith("/VBNV") for path in read)


def test_a_poll_repeats_each_read_once_and_no_more(demo: FakeNode) -> None:
    twins = Twins(demo)
    twins.settled()
    calls: list[str] = []
    real_listdir = os.listdir

    def listdir(path: Any) -> list[str]:
        calls.append(os.fspath(path))
        return real_listdir(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "listdir", listdir)
        twins.polled.scan()
    assert calls and len(calls) == len(set(calls))
    assert not any(path.startswith(str(demo.sys / "devices/pci0000:00")) for path in calls)  # the other function
