"""Reading a sysfs tree that may live under another root (containers, tests).

Everything here takes the sysfs root explicitly. Symlinks are followed inside
that root: a relative link (what the kernel makes) resolves as usual, and an
absolute one (``/sys/devices/...``) is re-rooted, so a tree copied from a real
node into a folder reads the same as the node itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: A PCI function's sysfs name as the kernel writes it ("%04x:%02x:%02x.%d"): domain (a 32-bit
#: number, 4 to 8 hex digits), bus, device, function, in lowercase hex.
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HEX_UUID = re.compile(r"^[0-9a-f]{32}$")
ALL_F = "f" * 32

#: A sysfs attribute is a page at most; anything longer is not one.
MAX_ATTRIBUTE_BYTES = 4096
_MAX_LINKS = 40  # the kernel's own limit on nested links


class SysfsError(Exception):
    """A sysfs file that is missing, unreadable or malformed: ``str()`` is "<path> <problem>"."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path} {problem}")


def read_attribute(path: Path) -> str:
    """The stripped text of one small sysfs attribute, or SysfsError naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ATTRIBUTE_BYTES + 1)
    except FileNotFoundError:
        raise SysfsError(path, "is missing") from None
    except IsADirectoryError:
        raise SysfsError(path, "is a directory, not an attribute file") from None
    except OSError as exc:
        raise SysfsError(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_ATTRIBUTE_BYTES:
        raise SysfsError(path, f"is longer than {MAX_ATTRIBUTE_BYTES} bytes, not a sysfs attribute")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SysfsError(path, "holds bytes that are not ASCII text") from None


def normalise_uuid(text: str) -> str:
    """An id as Intel's plugin compares them: lowercase, '-' stripped."""
    return text.strip().lower().replace("-", "")


def read_uuid(path: Path) -> str:
    """A 128-bit id file (afu_id, compat_id, interface_id) as 32 lowercase hex digits."""
    value = normalise_uuid(read_attribute(path))
    if not _HEX_UUID.match(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise SysfsError(path, f"holds {shown!r}, not a 128-bit id (32 hex digits)")
    return value


def resolve(root: Path, path: Path) -> Path:
    """``path`` (inside ``root``) with every symlink followed, staying inside ``root``.

    Returns the path as far as it exists; a dangling link resolves to its
    target, which then does not exist (callers check).
    """
    given_root = Path(os.path.abspath(root))
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    # The kernel's links are relative, so this is the common, fast case.
    if _inside(root_real, real) or not _inside(given_root, path):
        return real
    # An absolute link (/sys/devices/...) led out of the root: follow again, re-rooted.
    return _resolve_rooted(root_real, root_real / Path(os.path.abspath(path)).relative_to(given_root))


def _resolve_rooted(root: Path, path: Path) -> Path:
    """Follow links one component at a time, re-rooting absolute targets under ``root``."""
    parts = list(Path(os.path.abspath(path)).relative_to(root).parts)
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        if part in (".", ""):
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                return candidate
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                if not _inside(root, target):
                    # The sysfs root stands for the node's /sys.
                    base = Path("/sys") if _inside(Path("/sys"), target) else Path(target.anchor)
                    target = root / target.relative_to(base)
                parts = list(target.relative_to(root).parts) + parts
                current = root
            else:
                parts = list(target.parts) + parts
            continue
        current = candidate
    return current


def _inside(root: Path, path: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(root)
    except ValueError:
        return False
    return True


class Resolver:
    """:func:`resolve` with a cache keyed by each link's own target.

    Reading one link (one syscall) tells whether it still points where it did;
    only a new or changed link is resolved again, component by component. The
    directories under ``sys/devices`` a link leads to do not move while the
    link stays the same.
    """

    MAX_ENTRIES = 4096

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._given_root = root
        self._cache: dict[tuple[str, str | None], Path] = {}

    def __call__(self, path: Path) -> Path:
        try:
            target: str | None = os.readlink(path)
        except OSError:
            target = None  # not a link, or gone
        key = (str(path), target)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            found = self._cache[key] = resolve(self._given_root, path)
        return found


def pci_function_of(root: Path, real: Path) -> Path | None:
    """The PCI function directory that ``real`` (a resolved region, port or FME path) hangs under."""
    if not _inside(root, real):
        return None
    for candidate in (real, *real.parents):
        if candidate == root:
            break
        if PCI_ADDRESS.match(candidate.name):
            return candidate
    return None


def numa_node(pci_dir: Path | None) -> tuple[int, ...]:
    """The NUMA node of a PCI function: () when unknown (-1, missing or malformed)."""
    if pci_dir is None:
        return ()
    try:
        node = int(read_attribute(pci_dir / "numa_node"))
    except (SysfsError, ValueError):
        return ()
    return (node,) if node >= 0 else ()


def listdir(path: Path) -> list[str]:
    """Sorted entry names of a directory; [] when it is missing or unreadable."""
    try:
        return read_dir(path)
    except SysfsError:
        return []


def read_dir(path: Path) -> list[str]:
    """Sorted entry names of a directory that should be there, or SysfsError naming it.

    For directories whose absence hides devices (a class entry's target, the PCI
    device list): those must be reported, not read as empty.
    """
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        raise SysfsError(path, "is missing") from None
    except NotADirectoryError:
        raise SysfsError(path, "is not a directory") from None
    except OSError as exc:
        raise SysfsError(path, f"cannot be listed: {exc.strerror or exc}") from None


def natural_key(name: str) -> tuple[object, ...]:
    """Sort ``dfl-port.10`` after ``dfl-port.9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
