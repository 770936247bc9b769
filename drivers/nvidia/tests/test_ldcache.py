"""The ld.so.cache reader: the cache recorded on the H100 machine, synthetic layouts, and broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from multidp_nvidia.ldcache import LdCacheError, libraries

from .ld_cache_files import AARCH64_LIBC6, I386_LIBC6, X86_64_LIBC6, write_ld_cache

RECORDED = Path(__file__).parent / "fixtures" / "h100_ld.so.cache"


def test_recorded_h100_cache_names_the_driver_folder_first() -> None:
    libs = libraries(RECORDED, "x86_64")
    assert len(libs) == 520  # what `ldconfig -p -C` counts in the same file
    assert [path for name, path in libs if name == "libcuda.so.1"] == [
        "/usr/local/nvidia/lib64/libcuda.so.1", "/lib/libcuda.so.1"]
    assert ("libnvidia-ml.so.1", "/usr/local/nvidia/lib64/libnvidia-ml.so.1") in libs
    assert libraries(RECORDED, "aarch64") == []  # an x86-64 cache holds nothing for another machine


@pytest.mark.parametrize("old_block", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_layouts_glibc_writes_are_read_and_other_abis_skipped(tmp_path: Path, old_block: bool,
                                                              big_endian: bool) -> None:
    cache = write_ld_cache(tmp_path / "ld.so.cache", [
        ("libcuda.so.1", "/opt/drv/lib64/libcuda.so.1", X86_64_LIBC6),
        ("libcuda.so.1", "/opt/drv/lib32/libcuda.so.1", I386_LIBC6),
        ("libcuda.so.1", "/opt/drv/arm/libcuda.so.1", AARCH64_LIBC6),
        ("libz.so.1", "/lib/libz.so.1", X86_64_LIBC6)], old_block=old_block, big_endian=big_endian)
    assert libraries(cache, "x86_64") == [("libcuda.so.1", "/opt/drv/lib64/libcuda.so.1"),
                                          ("libz.so.1", "/lib/libz.so.1")]
    assert libraries(cache, "aarch64") == [("libcuda.so.1", "/opt/drv/arm/libcuda.so.1")]


def test_a_node_without_a_cache_has_no_cached_libraries(tmp_path: Path) -> None:
    assert libraries(tmp_path / "missing", "x86_64") == []


def test_broken_files_are_refused_naming_the_file_and_the_fault(tmp_path: Path) -> None:
    good = write_ld_cache(tmp_path / "good", [("libcuda.so.1", "/lib/libcuda.so.1", X86_64_LIBC6)]).read_bytes()
    cases = {
        "not an ld.so.cache": b"\x7fELF" + bytes(60),
        "truncated header": good[:30],
        "do not fit": good[:60],
        "outside the file": good[:48 + 24] + b"x",  # the strings are cut off
        "without the glibc 1.1 block": b"ld.so-1.7.0\0" + bytes(8),
    }
    for fault, data in cases.items():
        (tmp_path / "bad").write_bytes(data)
        with pytest.raises(LdCacheError, match=fault) as refused:
            libraries(tmp_path / "bad", "x86_64")
        assert str(tmp_path / "bad") in str(refused.value)


def test_an_unreadable_cache_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.cache").mkdir()  # reading a directory fails the way an unreadable file does
    with pytest.raises(LdCacheError, match="cannot read"):
        libraries(tmp_path / "dir.cache", "x86_64")
