"""Writes ld.so.cache files the way glibc's ldconfig lays them out, for the reader's and the CDI tests."""

from __future__ import annotations

import struct
from pathlib import Path

X86_64_LIBC6 = 0x0303
AARCH64_LIBC6 = 0x0A03
I386_LIBC6 = 0x0003


def write_ld_cache(path: Path, entries: list[tuple[str, str, int]], *, old_block: bool = False,
                   big_endian: bool = False) -> Path:
    """``entries``: (name, path, flags). ``old_block`` prefixes an ld.so-1.7.0 table, as pre-2.32 ldconfig did."""
    endian = ">" if big_endian else "<"
    strings = bytearray()
    table = bytearray()
    offsets = []
    string_base = 48 + 24 * len(entries)  # counted from the new header
    for name, lib_path, _ in entries:
        offsets.append((string_base + len(strings), string_base + len(strings) + len(name) + 1))
        strings += name.encode() + b"\0" + lib_path.encode() + b"\0"
    for (key, value), (_, _, flags) in zip(offsets, entries, strict=True):
        table += struct.pack(f"{endian}iIIIQ", flags, key, value, 0, 0)
    header = b"glibc-ld.so.cache1.1" + struct.pack(f"{endian}IIB3xI12x", len(entries), len(strings),
                                                    3 if big_endian else 2, 0)
    prefix = b""
    if old_block:
        prefix = b"ld.so-1.7.0\0" + struct.pack("<I", len(entries)) + bytes(12 * len(entries))
        prefix += bytes(-len(prefix) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(prefix + header + bytes(table) + bytes(strings))
    return path
