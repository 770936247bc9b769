"""The DT_SONAME reader: crafted libraries, broken files, and this machine's own libraries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from multidp_nvidia.elf import soname
from multidp_nvidia.ldcache import libraries

from .elf_files import write_elf_library


@pytest.mark.parametrize("big_endian", [False, True])
def test_soname_is_read_from_the_dynamic_segment(tmp_path: Path, big_endian: bool) -> None:
    library = write_elf_library(tmp_path / "libnvidia-nvvm.so.580.1", "libnvidia-nvvm.so.4", big_endian=big_endian)
    assert soname(library) == "libnvidia-nvvm.so.4"


def test_files_without_a_soname_give_none(tmp_path: Path) -> None:
    good = write_elf_library(tmp_path / "good", "libx.so.1").read_bytes()
    cases = {
        "no_soname": write_elf_library(tmp_path / "plain", None).read_bytes(),
        "empty": b"",  # what the fake driver roots hold
        "not_elf": b"#!/bin/sh\n" + bytes(200),
        "elf32": good[:4] + b"\x01" + good[5:],
        "truncated": good[:100],
        "dynamic_cut_off": good[:-36],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert soname(tmp_path / name) is None, name
    assert soname(tmp_path / "missing") is None
    assert soname(tmp_path) is None  # a directory


@pytest.mark.skipif(not Path("/etc/ld.so.cache").exists(), reason="no ld.so.cache on this machine")
def test_agrees_with_ldconfig_on_this_machines_libraries() -> None:
    # ldconfig files every library under its DT_SONAME: the two readers must agree on real files
    checked = 0
    for name, path in libraries(Path("/etc/ld.so.cache"))[:200]:
        if name.endswith(".so") or not os.path.exists(path):
            continue
        assert soname(Path(os.path.realpath(path))) == name, path
        checked += 1
    assert checked > 0
