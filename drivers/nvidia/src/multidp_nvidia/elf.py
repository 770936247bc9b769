"""The DT_SONAME of a 64-bit ELF shared library: the name programs and ldconfig know it by.

Most of the driver's libraries are ``<lib>.so.1``, but not all: on the H100 check machine
``libnvidia-nvvm`` is ``.so.4`` and ``libnvidia-gpucomp`` is its full version. The CDI spec mounts each
library at its soname, so this reads it from the file rather than assuming ``.1``. Only the ELF
header, the program headers, the dynamic segment and one string are read (libcuda is ~100 MB).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2MSB = 2
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_STRTAB, DT_SONAME = 0, 5, 14
MAX_DYNAMIC = 1 << 20  # a dynamic segment is a few hundred bytes; more is a broken file
MAX_NAME = 4096


def soname(path: Path) -> str | None:
    """The library's DT_SONAME, or ``None`` if it is not a readable 64-bit ELF file or names none."""
    try:
        with path.open("rb") as file:
            return _soname(file)
    except (OSError, struct.error, ValueError):
        return None


def _soname(file: BinaryIO) -> str | None:
    ident = file.read(16)
    if len(ident) < 16 or not ident.startswith(ELF_MAGIC) or ident[4] != ELFCLASS64:
        return None
    endian = ">" if ident[5] == ELFDATA2MSB else "<"
    header = file.read(48)
    phoff, = struct.unpack_from(f"{endian}Q", header, 16)
    phentsize, phnum = struct.unpack_from(f"{endian}HH", header, 38)
    file.seek(phoff)
    table = file.read(phentsize * phnum)
    loads, dynamic = [], None
    for i in range(phnum):
        kind, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from(f"{endian}IIQQQQQQ", table, i * phentsize)
        if kind == PT_LOAD:
            loads.append((vaddr, filesz, offset))
        elif kind == PT_DYNAMIC:
            dynamic = (offset, min(filesz, MAX_DYNAMIC))
    if dynamic is None:
        return None
    file.seek(dynamic[0])
    entries = file.read(dynamic[1])
    strtab = name = None
    for tag, value in struct.iter_unpack(f"{endian}qQ", entries[: len(entries) // 16 * 16]):
        if tag == DT_NULL:
            break
        if tag == DT_STRTAB:
            strtab = value
        elif tag == DT_SONAME:
            name = value
    if strtab is None or name is None:
        return None
    # DT_STRTAB is an address: the PT_LOAD segment holding it says where that is in the file
    start = next((offset + strtab - vaddr for vaddr, size, offset in loads if vaddr <= strtab < vaddr + size), None)
    if start is None:
        return None
    file.seek(start + name)
    raw = file.read(MAX_NAME).split(b"\0", 1)[0]
    return raw.decode("utf-8", "surrogateescape") or None
