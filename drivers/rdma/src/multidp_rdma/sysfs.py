"""Reading sysfs safely: small files, links that stay inside the root, problems logged once.

Every reader raises :class:`SysfsError` naming the file and what is wrong with
it, so a malformed or unreadable attribute becomes a clear log line and never
an exception that ends a scan. :class:`ProblemLog` keeps a scan that runs four
times a second from repeating the same line.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

# A PCI function's sysfs name as the kernel writes it ("%04x:%02x:%02x.%d"): domain (a 32-bit
# number, 4 to 8 hex digits), bus, device, function, in lowercase hex.
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_NUMBERED = re.compile(r"^\s*(\d+)\s*(?::\s*(\S.*?))?\s*$")
# A sysfs attribute is a page at most; anything longer is not one.
MAX_ATTRIBUTE_BYTES = 4096
_MAX_LINKS = 40  # the kernel's own limit on nested links


class SysfsError(Exception):
    """A sysfs file that is missing, unreadable or malformed: ``str()`` is "<path> <problem>"."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path} {problem}")


def read_text(path: Path | str) -> str:
    """The stripped text of one small sysfs attribute, or SysfsError naming the file."""
    try:  # os.open/os.read: no buffered file object for one small read (health reads these at every poll)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_ATTRIBUTE_BYTES + 1)
        finally:
            os.close(fd)
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


def read_optional(path: Path) -> str | None:
    """The attribute's text, or None when the file does not exist (other problems raise)."""
    try:
        return read_text(path)
    except SysfsError as exc:
        if exc.problem == "is missing":
            return None
        raise


def read_hex_id(path: Path) -> str:
    """A PCI ID file (``0x15b3``) as four lower-case hex digits (``15b3``)."""
    text = read_text(path)
    digits = text[2:] if text.lower().startswith("0x") else text
    if not digits or not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
        raise SysfsError(path, f"holds {text!r}, not a hexadecimal ID such as 0x15b3")
    return digits.lower().zfill(4)


def read_numbered(path: Path | str) -> tuple[int, str]:
    """A ``"<number>: <name>"`` attribute (``4: ACTIVE``) as (4, "ACTIVE")."""
    text = read_text(path)
    match = _NUMBERED.match(text)
    if not match:
        raise SysfsError(path, f"holds {text!r}, not '<number>: <name>' such as '4: ACTIVE'")
    return int(match.group(1)), match.group(2) or ""


def read_numa_node(path: Path) -> int | None:
    """A PCI function's NUMA node: None when unknown (-1) or the file is absent."""
    text = read_optional(path)
    if text is None:
        return None
    try:
        node = int(text)
    except ValueError:
        raise SysfsError(path, f"holds {text!r}, not a NUMA node number") from None
    return node if node >= 0 else None


def list_names(path: Path) -> list[str]:
    """Entry names of a directory, sorted; [] when it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise SysfsError(path, "is a file, not a directory") from None
    except OSError as exc:
        raise SysfsError(path, f"cannot be listed: {exc.strerror or exc}") from None


def natural_key(name: str) -> tuple[str, int]:
    """Sort key that puts ``uverbs10`` after ``uverbs9``."""
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


class SysfsRoot:
    """A sysfs tree (``/sys`` or a copy of its layout elsewhere) and its links.

    Real sysfs links are relative (``../../devices/...``) and resolve inside
    any root. An absolute link (``/sys/devices/...``), as some copied or
    hand-made trees hold, is read as relative to this root so that a test tree
    never leads into the host's own /sys.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.is_host = os.path.realpath(self.root) == "/sys"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _rerooted(self, target: str) -> Path:
        if self.is_host:
            return Path(target)
        relative = os.path.relpath(target, "/sys") if target.startswith("/sys/") else target.lstrip("/")
        return self.root / relative

    def resolve(self, path: Path) -> Path:
        """Where ``path`` leads after following links (the path itself if it is none)."""
        current = Path(os.path.realpath(path.parent)) / path.name
        for _ in range(_MAX_LINKS):
            try:
                target = os.readlink(current)
            except OSError:
                break
            if os.path.isabs(target):
                current = self._rerooted(target)
            else:
                current = Path(os.path.normpath(current.parent / target))
            current = Path(os.path.realpath(current.parent)) / current.name
        return current

    def link_name(self, path: Path) -> str | None:
        """The last component of a link's target (``driver`` → ``mlx5_core``), None if no link."""
        try:
            return os.path.basename(os.readlink(path).rstrip("/")) or None
        except OSError:
            return None


class ProblemLog:
    """Logs each problem once while it lasts, and says when it is gone.

    Call :meth:`report` for every problem seen in a pass, then :meth:`settle`
    at the end of the pass: problems not reported again are cleared (and
    logged again should they come back).
    """

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._active: dict[str, str] = {}
        self._seen: set[str] = set()

    def report(self, key: str, message: str, level: int = logging.WARNING) -> None:
        self._seen.add(key)
        if self._active.get(key) != message:
            self._active[key] = message
            self.log.log(level, "%s", message)

    def settle(self, resolved_note: str | None = None) -> list[str]:
        """End a pass; return the keys whose problems went away."""
        gone = [k for k in self._active if k not in self._seen]
        for key in gone:
            del self._active[key]
            if resolved_note:
                self.log.info("%s: %s", key, resolved_note)
        self._seen = set()
        return gone

    @property
    def active(self) -> dict[str, str]:
        return dict(self._active)
