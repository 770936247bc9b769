"""Trees written by hand from the sysfs layouts in drivers/fpga/README.md, without the builder the others use.

The class entries and bus links are written both as the kernel writes them
(relative) and as a tree copied with absolute links (``/sys/devices/...``)
would have them: the driver must read both the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fpga_helpers import AF_IFACE_AFU, IFACE, U200_RES, allocate, by_id, ids, nodes_of
from multidp_fpga.config import FpgaConfig
from multidp_fpga.driver import FpgaDriver
from multidp_fpga.sysfs import resolve

DFL_PCI = "devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0"
XRT_PCI = "devices/pci0000:64/0000:64:00.0"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(sys: Path, link_path: str, target: str, absolute: bool) -> None:
    where = sys / link_path
    where.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(f"/sys/{target}" if absolute else os.path.relpath(sys / target, where.parent), where)


def build(root: Path, absolute: bool) -> tuple[Path, Path]:
    sys, dev = root / "sys", root / "dev"
    region0 = f"{DFL_PCI}/fpga_region/region0"
    write(sys / DFL_PCI / "numa_node", "1")
    write(sys / region0 / "dfl-port.0/afu_id", "d8424dc4a4a3c413f89e433683f9040b")
    write(sys / region0 / "dfl-port.0/dev", "235:0")
    write(sys / region0 / "dfl-fme.0/dev", "236:0")
    write(sys / region0 / "dfl-fme.0/dfl-fme-region.0/fpga_region/region1/compat_id", IFACE)
    link(sys, "class/fpga_region/region0", region0, absolute)
    link(sys, "class/fpga_region/region1", f"{region0}/dfl-fme.0/dfl-fme-region.0/fpga_region/region1", absolute)
    link(sys, "bus/pci/devices/0000:5e:00.0", DFL_PCI, absolute)
    link(sys, "dev/char/235:0", f"{region0}/dfl-port.0", absolute)
    write(sys / DFL_PCI / "vendor", "0x8086")
    for function, marker in (("0", "mgmt_pf"), ("1", "user_pf")):
        pci = f"{XRT_PCI}/0000:65:00.{function}"
        write(sys / pci / "vendor", "0x10ee")
        write(sys / pci / marker, "")
        write(sys / pci / "numa_node", "0")
        link(sys, f"bus/pci/devices/0000:65:00.{function}", pci, absolute)
    write(sys / XRT_PCI / "0000:65:00.0/instance", "256")
    write(sys / XRT_PCI / "0000:65:00.1/rom.u.0/VBNV", "xilinx_u200_xdma_201830_2")
    write(sys / XRT_PCI / "0000:65:00.1/rom.u.0/timestamp", "1561465320")
    write(sys / XRT_PCI / "0000:65:00.1/drm/renderD128/dev", "226:128")
    link(sys, "dev/char/226:128", f"{XRT_PCI}/0000:65:00.1/drm/renderD128", absolute)
    for name in ("dfl-port.0", "dfl-fme.0", "dri/renderD128", "xclmgmt256"):
        write(dev / name, "")
    return sys, dev


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-links", "absolute-links"])
def test_reference_layout_is_enumerated_and_allocated(tmp_path, absolute):
    sys, dev = build(tmp_path, absolute)
    driver = FpgaDriver(FpgaConfig(), sys, dev, logging.getLogger("test"))
    inventory = driver.scan()
    assert ids(inventory) == {AF_IFACE_AFU: ["dfl-port.0"], U200_RES: ["0000:65:00.1"]}
    assert by_id(inventory)["dfl-port.0"][1].numa_nodes == (1,)
    assert nodes_of(allocate(driver, AF_IFACE_AFU, "dfl-port.0")) == [("/dev/dfl-port.0", "rw")]
    assert nodes_of(allocate(driver, U200_RES, "0000:65:00.1")) == [("/dev/dri/renderD128", "rwm"),
                                                                   ("/dev/xclmgmt256", "rwm")]
    region = FpgaDriver(FpgaConfig(mode="region"), sys, dev, logging.getLogger("test"))
    assert ids(region.scan())[f"fpga.intel.com/region-{IFACE}"] == ["dfl-fme.0"]


def test_absolute_links_stay_inside_the_root(tmp_path):
    sys, _ = build(tmp_path, absolute=True)
    real = resolve(sys, sys / "class/fpga_region/region0/dfl-port.0")
    assert real == Path(os.path.realpath(sys / DFL_PCI / "fpga_region/region0/dfl-port.0"))
