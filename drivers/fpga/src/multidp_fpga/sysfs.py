"""Reading a sysfs tree that may live under another root (containers, tests).

Everything here takes the sysfs root explicitly. Symlinks are followed inside
that root: a relative link (what the kernel makes) resolves as usual, and an
absolute one (``/sys/devices/...``) is re-rooted, so a tree copied from a real
node into a folder reads the same as the node itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

#: A PCI function's sysfs name as the kernel writes it ("%04x:%02x:%02x.%d"): domain (a 32-bit
#: number, 4 to 8 hex digits), bus, device, function, in lowercase hex.
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HEX_UUID = re.compile(r"^[0-9a-f]{32}$")
_ROOT_COMPLEX = re.compile(r"pci[0-9a-f]{4,8}:[0-9a-f]{2}")
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


class Failed:
    """The answer of a read that failed: ``problem`` is the text SysfsError puts after the path.

    A plain class, not a dataclass: the plugin imports this module at start, and making a
    dataclass costs more than the rest of the module.
    """

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Failed) and other.problem == self.problem

    def __hash__(self) -> int:
        return hash(self.problem)

    def __repr__(self) -> str:
        return f"Failed({self.problem!r})"


def attribute_answer(path: str | Path) -> str | Failed:
    """The stripped text of one small sysfs attribute, or why it cannot be had."""
    # os.open and os.read, not open(): a poll makes dozens of these, and a file object costs more than the read.
    try:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Failed("is missing")
    except OSError as exc:
        return Failed(f"cannot be read: {exc.strerror or exc}")
    try:
        data = b""
        while len(data) <= MAX_ATTRIBUTE_BYTES:
            chunk = os.read(handle, MAX_ATTRIBUTE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except IsADirectoryError:
        return Failed("is a directory, not an attribute file")
    except OSError as exc:
        return Failed(f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(handle)
    if len(data) > MAX_ATTRIBUTE_BYTES:
        return Failed(f"is longer than {MAX_ATTRIBUTE_BYTES} bytes, not a sysfs attribute")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        return Failed("holds bytes that are not ASCII text")


def listing_answer(path: str | Path) -> tuple[str, ...] | Failed:
    """The sorted entry names of a directory, or why it cannot be listed."""
    try:
        return tuple(sorted(os.listdir(path)))
    except FileNotFoundError:
        return Failed("is missing")
    except NotADirectoryError:
        return Failed("is not a directory")
    except OSError as exc:
        return Failed(f"cannot be listed: {exc.strerror or exc}")


def readlink_answer(path: str | Path) -> str | None:
    """A symlink's target as written, or None for anything that is not a link (or is gone)."""
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_attribute(path: Path) -> str:
    """The stripped text of one small sysfs attribute, or SysfsError naming the file."""
    answer = attribute_answer(path)
    if isinstance(answer, Failed):
        raise SysfsError(path, answer.problem)
    return answer


def normalise_uuid(text: str) -> str:
    """An id as Intel's plugin compares them: lowercase, '-' stripped."""
    return text.strip().lower().replace("-", "")


def read_uuid(path: Path, read: Callable[[Path], str] = read_attribute) -> str:
    """A 128-bit id file (afu_id, compat_id, interface_id) as 32 lowercase hex digits."""
    value = normalise_uuid(read(path))
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

    def __init__(self, root: Path, readlink: Callable[[Path], str | None] = readlink_answer) -> None:
        self.root = Path(os.path.realpath(root))
        self._given_root = root
        self._readlink = readlink  # a scan's recorded reads, or the plain syscall
        self._cache: dict[tuple[str, str | None], Path] = {}

    def __call__(self, path: Path) -> Path:
        key = (str(path), self._readlink(path))
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


def pcie_root(sysfs_root: Path, pci_dir: Path | None) -> str:
    """The PCIe root complex (``pci0000:3a``) a resolved PCI function folder hangs off: the first
    ``pci<domain>:<bus>`` folder below the sysfs root; '' when there is none."""
    if pci_dir is None:
        return ""
    try:
        parts = Path(os.path.abspath(pci_dir)).relative_to(os.path.realpath(sysfs_root)).parts
    except ValueError:
        parts = pci_dir.parts
    return next((part for part in parts if _ROOT_COMPLEX.fullmatch(part)), "")


def numa_node(pci_dir: Path | None, read: Callable[[Path], str] = read_attribute) -> tuple[int, ...]:
    """The NUMA node of a PCI function: () when unknown (-1, missing or malformed)."""
    if pci_dir is None:
        return ()
    try:
        node = int(read(pci_dir / "numa_node"))
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
    answer = listing_answer(path)
    if isinstance(answer, Failed):
        raise SysfsError(path, answer.problem)
    return list(answer)


def natural_key(name: str) -> tuple[object, ...]:
    """Sort ``dfl-port.10`` after ``dfl-port.9``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
