"""Read glibc's ``/etc/ld.so.cache``: where the dynamic linker finds each library on the node.

Driver installs that keep their libraries outside the usual folders (``/usr/local/nvidia/lib64`` on
GKE-style nodes and on the H100 this driver was checked on) list that folder in ``ld.so.conf``, so
the cache names it. NVIDIA's container toolkit falls back to the same cache when its fixed folders do
not hold a library; the CDI spec builder does too (:func:`multidp_nvidia.answers.driver_mounts`).

Format (glibc ``elf/cache.c``): a 48-byte header ``glibc-ld.so.cache1.1``, ``nlibs``, string table
length, an endianness flag, then ``nlibs`` entries of (flags, key, value, osversion, hwcap), where key
and value are offsets of NUL-terminated strings counted from the header's start. Old caches put that
block after a ``ld.so-1.7.0`` table of 12-byte entries; glibc 2.32+ writes the new block alone.
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

NEW_MAGIC = b"glibc-ld.so.cache1.1"
OLD_MAGIC = b"ld.so-1.7.0"
OLD_HEADER_SIZE = 16  # magic, padding to 4, nlibs
OLD_ENTRY_SIZE = 12
HEADER_SIZE = 48
ENTRY_SIZE = 24
ELF_LIBC6 = 0x0003
TYPE_MASK = 0x00FF
ARCH_MASK = 0xFF00
# the 64-bit ABI bits ldconfig sets per machine (glibc sysdeps/generic/ldconfig.h)
ARCH_BITS = {"x86_64": 0x0300, "aarch64": 0x0A00, "ppc64le": 0x0500, "ppc64": 0x0500, "s390x": 0x0400}


class LdCacheError(ValueError):
    """The cache file is not one glibc wrote; the message names the file and what is wrong."""


def libraries(cache_file: Path, machine: str | None = None) -> list[tuple[str, str]]:
    """``(name, path)`` of every glibc library the cache lists for ``machine``'s 64-bit ABI, in cache order.

    A missing file gives ``[]`` (nodes without a cache are fine); an unreadable or malformed one raises
    :class:`LdCacheError`.
    """
    try:
        data = cache_file.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LdCacheError(f"cannot read {cache_file}: {exc.strerror or exc}") from exc
    arch = ARCH_BITS.get(machine or platform.machine())
    return [(name, path) for flags, name, path in _entries(data, cache_file)
            if flags & TYPE_MASK == ELF_LIBC6 and (flags & ARCH_MASK == arch if arch else flags & ARCH_MASK)]


def _entries(data: bytes, cache_file: Path) -> list[tuple[int, str, str]]:
    start = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < OLD_HEADER_SIZE:
            raise LdCacheError(f"{cache_file}: truncated old-format header")
        (old_count,) = struct.unpack_from("<I", data, 12)
        start = OLD_HEADER_SIZE + old_count * OLD_ENTRY_SIZE
        start += -start % 8  # the new block is 8-byte aligned
        if not data.startswith(NEW_MAGIC, start):
            raise LdCacheError(f"{cache_file}: old-format cache without the glibc 1.1 block (not supported)")
    elif not data.startswith(NEW_MAGIC):
        raise LdCacheError(f"{cache_file}: not an ld.so.cache (magic {data[:20]!r})")
    if len(data) < start + HEADER_SIZE:
        raise LdCacheError(f"{cache_file}: truncated header")
    endian = ">" if data[start + 28] == 3 else "<"  # 2 little, 3 big, 0 (older ldconfig) little on x86
    count, _ = struct.unpack_from(f"{endian}II", data, start + 20)
    if start + HEADER_SIZE + count * ENTRY_SIZE > len(data):
        raise LdCacheError(f"{cache_file}: {count} entries do not fit in {len(data)} bytes")
    entry = struct.Struct(f"{endian}iIIIQ")
    found = []
    for i in range(count):
        flags, key, value, _, _ = entry.unpack_from(data, start + HEADER_SIZE + i * ENTRY_SIZE)
        found.append((flags, _string(data, start + key, cache_file), _string(data, start + value, cache_file)))
    return found


def _string(data: bytes, offset: int, cache_file: Path) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise LdCacheError(f"{cache_file}: string offset {offset} is outside the file")
    return data[offset:end].decode("utf-8", "surrogateescape")
