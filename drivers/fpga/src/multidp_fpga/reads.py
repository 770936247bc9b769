"""The reads a scan makes, kept so that the next poll can repeat just those.

Id files are sysfs attributes and raise no file events, so FPGA health is polled.
A full scan (walking class directories, following links, globbing, naming,
placing) costs several times the reads it is made of. :class:`Reads` records
every read of a scan with its answer; the next poll repeats the same reads in
the same order and compares. A scan is a function of those answers (and of
state that changes only when they do), so when every answer is the same, the
last scan's result is what a full scan would return; at the first answer that
differs (an id file rewritten, a device node gone, a class directory listing
another entry, a file now unreadable) the poll scans in full again.

A read made with ``once`` is repeated only while it fails: a PCI function's
NUMA node, vendor and device ID do not change while the function stays listed,
and a listing that changes brings a full scan. A glob made with ``once`` is
repeated only while it finds nothing: the FME and the region id file a scan
finds sit in class entries whose links and listings are repeated, and the id
file itself is read again at every poll.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from multidp_fpga.sysfs import Failed, SysfsError, attribute_answer, listing_answer, readlink_answer

Probe = Callable[[str], object]
Recorded = dict[tuple[Probe, str], object]  # (probe, path) -> answer, in the order the scan read them
_WILDCARDS = frozenset("*?[")


class Reads:
    """The sysfs and /dev reads of the scans; records them while a scan runs under :meth:`recording`."""

    def __init__(self) -> None:
        self._recording: Recorded | None = None
        self._recorded: Recorded | None = None  # the last complete scan's reads
        self._torn = False  # a file read twice in one scan changed in between

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the reads of one full scan; they count only if the scan completes."""
        self._recorded = None
        self._recording = {}
        self._torn = False
        try:
            yield
            if not self._torn:  # else the next poll scans in full again
                self._recorded = self._recording
        finally:
            self._recording = None

    def unchanged(self) -> bool:
        """Whether every read of the last complete scan gives the same answer now."""
        recorded = self._recorded
        if recorded is None:
            return False
        for (probe, path), answer in recorded.items():
            if probe(path) != answer:
                return False
        return True

    def count(self) -> int:
        """How many reads a poll repeats (for tests and profiling)."""
        return len(self._recorded or ())

    def _read(self, probe: Probe, path: Path, once: bool = False) -> object:
        text = os.fspath(path)
        answer = probe(text)
        if self._recording is not None and not (once and not isinstance(answer, Failed)):
            self._keep(self._recording, (probe, text), answer)
        return answer

    def _keep(self, recording: Recorded, key: tuple[Probe, str], answer: object) -> None:
        if key not in recording:
            recording[key] = answer
        elif recording[key] != answer:
            self._torn = True

    def attribute(self, path: Path, once: bool = False) -> str:
        """A small attribute's stripped text, or SysfsError naming the file."""
        answer = self._read(attribute_answer, path, once)
        if isinstance(answer, Failed):
            raise SysfsError(path, answer.problem)
        assert isinstance(answer, str)
        return answer

    def entries(self, path: Path) -> list[str]:
        """The sorted names in a directory that should be there, or SysfsError naming it."""
        answer = self._read(listing_answer, path)
        if isinstance(answer, Failed):
            raise SysfsError(path, answer.problem)
        assert isinstance(answer, tuple)
        return list(answer)

    def listing(self, path: Path) -> list[str]:
        """The sorted names in a directory; [] when it is missing or unreadable."""
        answer = self._read(listing_answer, path)
        return list(answer) if isinstance(answer, tuple) else []

    def exists(self, path: Path) -> bool:
        return bool(self._read(os.path.exists, path))

    def is_dir(self, path: Path) -> bool:
        return bool(self._read(os.path.isdir, path))

    def is_symlink(self, path: Path) -> bool:
        return bool(self._read(os.path.islink, path))

    def readlink(self, path: Path) -> str | None:
        answer = self._read(readlink_answer, path)
        return answer if isinstance(answer, str) else None

    def glob(self, base: Path, pattern: str, once: bool = False) -> list[Path]:
        """``base.glob(pattern)`` for '/'-separated names and wildcards, made of recorded reads.

        As pathlib does: every part but the last must be a directory (links followed);
        a directory that cannot be listed matches nothing.
        """
        outer = self._recording
        if not once or outer is None:
            return self._glob(base, pattern)
        self._recording = {}
        try:
            found = self._glob(base, pattern)
        finally:
            inner, self._recording = self._recording, outer
        if not found:
            for key, answer in inner.items():
                self._keep(outer, key, answer)
        return found

    def _glob(self, base: Path, pattern: str) -> list[Path]:
        found = [base]
        parts = pattern.split("/")
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            matched: list[Path] = []
            for directory in found:
                if _WILDCARDS.isdisjoint(part):
                    path = directory / part
                    if self.exists(path) if last else self.is_dir(path):
                        matched.append(path)
                    continue
                names = [n for n in self.listing(directory) if fnmatch.fnmatchcase(n, part)]
                # A listed name exists; only a directory can hold the next part.
                matched += [directory / n for n in names if last or self.is_dir(directory / n)]
            found = matched
        return found
