"""Writes the smallest 64-bit ELF shared object that carries a DT_SONAME, for the soname reader's tests."""

from __future__ import annotations

import struct
from pathlib import Path

BASE = 0x10000  # where the one PT_LOAD segment is mapped


def write_elf_library(path: Path, soname: str | None, *, big_endian: bool = False) -> Path:
    e = ">" if big_endian else "<"
    strtab = b"\0" + (soname.encode() + b"\0" if soname else b"")
    strtab_at = 64 + 2 * 56
    dynamic_at = strtab_at + len(strtab) + (-(strtab_at + len(strtab)) % 8)
    tags = [(5, BASE + strtab_at), (10, len(strtab))] + ([(14, 1)] if soname else []) + [(0, 0)]
    dynamic = b"".join(struct.pack(f"{e}qQ", tag, value) for tag, value in tags)
    size = dynamic_at + len(dynamic)
    ident = b"\x7fELF" + bytes([2, 2 if big_endian else 1, 1]) + bytes(9)
    header = ident + struct.pack(f"{e}HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    load = struct.pack(f"{e}IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)
    dyn = struct.pack(f"{e}IIQQQQQQ", 2, 6, dynamic_at, BASE + dynamic_at, BASE + dynamic_at, len(dynamic),
                      len(dynamic), 8)
    body = header + load + dyn + strtab
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body + bytes(dynamic_at - len(body)) + dynamic)
    return path
