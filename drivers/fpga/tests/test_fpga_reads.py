"""Reads: what a scan read, repeated by the next poll (:mod:`multidp_fpga.reads`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fpga_helpers import AFU, IFACE
from multidp_fpga.fakesys import FakeNode
from multidp_fpga.intel import DFL, OPAE
from multidp_fpga.reads import Reads
from multidp_fpga.sysfs import SysfsError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    node = FakeNode(tmp_path / "node")
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU])
    node.opae_card("0000:af:00.0", IFACE, [AFU])
    pci = next((node.sys / "devices").rglob("0000:5e:00.0"))
    (pci / "fpga_region" / "region77").write_text("a file where a directory could be\n")
    os.symlink("gone", pci / "fpga_region" / "region88")  # dangling
    return node.sys / "devices"


@pytest.mark.parametrize("pattern", [DFL.fme_glob, DFL.interface_id_glob, OPAE.fme_glob, OPAE.interface_id_glob,
                                     "fpga_region/*", "fpga_region/region*/*", "*/region?", "nothing/*"])
def test_glob_finds_what_pathlib_finds(tree: Path, pattern: str) -> None:
    bases = [p for p in tree.rglob("*") if p.is_dir()]
    for base in bases:
        assert sorted(Reads().glob(base, pattern)) == sorted(base.glob(pattern)), (base, pattern)
    assert any(Reads().glob(base, pattern) for base in bases) or pattern.startswith("nothing")


def test_a_poll_sees_every_recorded_answer_change(tmp_path: Path) -> None:
    attribute, directory, node = tmp_path / "afu_id", tmp_path / "ports", tmp_path / "dev-node"
    attribute.write_text(AFU + "\n")
    directory.mkdir()
    reads = Reads()
    assert not reads.unchanged()  # nothing recorded yet: scan in full
    with reads.recording():
        assert reads.attribute(attribute) == AFU
        assert reads.entries(directory) == []
        assert not reads.exists(node)
    assert reads.unchanged() and reads.count() == 3
    for change, undo in [(lambda: attribute.write_text("ff\n"), lambda: attribute.write_text(AFU + "\n")),
                         (lambda: (directory / "port.1").mkdir(), lambda: (directory / "port.1").rmdir()),
                         (lambda: node.write_text(""), lambda: node.unlink())]:
        change()
        assert not reads.unchanged()
        undo()
        assert reads.unchanged()


def test_a_once_read_is_repeated_only_while_it_fails(tmp_path: Path) -> None:
    numa, vendor = tmp_path / "numa_node", tmp_path / "vendor"
    numa.write_text("1\n")
    reads = Reads()
    with reads.recording():
        assert reads.attribute(numa, once=True) == "1"
        with pytest.raises(SysfsError, match="is missing"):
            reads.attribute(vendor, once=True)
    assert reads.count() == 1
    numa.write_text("0\n")
    assert reads.unchanged()  # fixed while its function is listed: not read again
    vendor.write_text("0x10ee\n")
    assert not reads.unchanged()


def test_a_once_glob_is_repeated_only_while_it_finds_nothing(tree: Path) -> None:
    card = next(tree.rglob("0000:5e:00.0"))
    reads = Reads()
    with reads.recording():
        assert reads.glob(card, DFL.fme_glob, once=True)
        assert reads.glob(card, OPAE.fme_glob, once=True) == []
    missing = reads.count()
    assert missing > 0 and reads.unchanged()
    (card / "fpga").mkdir()  # the read that found nothing answers otherwise now
    assert not reads.unchanged()


def test_a_file_that_changes_between_two_reads_of_one_scan_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "afu_id"
    path.write_text("one\n")
    reads = Reads()
    with reads.recording():
        reads.attribute(path)
        path.write_text("two\n")
        reads.attribute(path)
    assert not reads.unchanged()  # the next poll scans in full


def test_a_scan_that_raises_leaves_nothing_to_repeat(tmp_path: Path) -> None:
    reads = Reads()
    with pytest.raises(RuntimeError), reads.recording():
        reads.exists(tmp_path)
        raise RuntimeError("the scan failed")
    assert not reads.unchanged() and reads.count() == 0


def test_reads_outside_a_scan_are_not_recorded(tmp_path: Path) -> None:
    reads = Reads()
    reads.exists(tmp_path)
    assert reads.count() == 0
