"""One multidp per plugin dir (issue 17 item 6).

Two instances on one node (a slow stop overlapping the next pod, a manual run) each register
every resource, and the second removes the first's live sockets as stale. So the host takes an
exclusive ``flock`` on ``<plugin dir>/.multidp.lock`` before it sweeps or serves anything; a
second instance waits for it (``lockWait``, by default the DaemonSet's 30 s grace period), then
takes over, or gives up with :class:`InstanceLocked` naming the holder.

The lock is a directory, not a file: the kubelet, when it starts, removes what it finds in the
plugin dir but never a directory (several kubelet versions remove every file, sockets or not;
kubernetes pkg/kubelet/cm/devicemanager CleanupPluginDirectory). A removed lock file would let
the next instance lock a new one beside a live holder. The holder records who it is in
``holder`` inside it, for the waiter's message. The kernel drops the lock when the holder's
process ends, however it ends, so a crashed instance never blocks the next; the directory itself
is never removed (a waiter could then hold the old one while a newcomer locks a new one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multidp.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".multidp.lock"
HOLDER_NAME = "holder"
DEFAULT_LOCK_WAIT_S = 30.0  # the DaemonSet's terminationGracePeriodSeconds: the old pod is gone by then
POLL_S = 0.2


class InstanceLocked(ConfigError):
    """Another multidp held the plugin dir's lock past the wait allowed: exit 2, as a config error."""

    def __init__(self, path: Path, holder: str, waited: float) -> None:
        self.path, self.holder, self.waited = path, holder, waited
        super().__init__("", f"another multidp ({holder}) holds {path}; waited {waited:g} s for it to stop; "
                             "stop it first (one multidp per plugin dir), or raise lockWait if it only stops slowly")


def lock_wait_of(settings: Any) -> float:
    """How long start waits for the lock: the settings' ``lock_wait`` (the config key ``lockWait``)."""
    return float(settings.lock_wait)


def describe_holder(lock_dir: Path) -> str:
    """``pid N, pod P, since T`` from what the holder recorded; never raises."""
    try:
        record = json.loads((lock_dir / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return "holder not recorded"
    if not isinstance(record, dict):
        return "holder not recorded"
    parts = []
    for field in ("pid", "pod", "since"):
        value = record.get(field)
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            parts.append(f"{field} {value}")
    return ", ".join(parts) or "holder not recorded"


class InstanceLock:
    """The plugin dir's instance lock. ``release`` is final: a later ``acquire`` returns False,
    so a host stopped before (or while) it starts never takes the lock afterwards."""

    def __init__(self, plugin_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = plugin_dir.absolute() / LOCK_NAME
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._guard = threading.Lock()  # acquire's attempts against release from another thread
        self._fd: int | None = None
        self._closed = False
        self.waiting_for: str | None = None  # the holder, while this instance waits (for probes)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float, stopping: threading.Event | None = None) -> bool:
        """Take the lock, waiting up to ``wait`` seconds for another holder to let go.

        True once held; False when ``stopping`` was set (SIGTERM) or ``release`` was called
        first; InstanceLocked past the wait; ConfigError when the lock cannot be made at all.
        """
        stopping = stopping or threading.Event()
        began = time.monotonic()
        while True:
            with self._guard:
                if self._closed or stopping.is_set():
                    self.waiting_for = None
                    return False
                if self._fd is not None or self._try_lock():  # (a second flock of ours would wait on us)
                    if self.waiting_for is not None:
                        log.info("took over %s after waiting %.1f s", self.path, time.monotonic() - began)
                    self.waiting_for = None
                    return True
            waited = time.monotonic() - began
            if waited >= wait:
                self.waiting_for = None
                raise InstanceLocked(self.path, describe_holder(self.path), wait)
            if self.waiting_for is None:  # said once: the holder is the same old pod until it stops
                self.waiting_for = describe_holder(self.path)
                log.warning("another multidp (%s) holds %s; waiting up to %g s for it to stop",
                            self.waiting_for, self.path, wait)
            stopping.wait(min(POLL_S, wait - waited))

    def _try_lock(self) -> bool:
        """One attempt, on the lock as it is now (opened again each time: it may have been removed
        and made again while we waited, and a lock on the old one would exclude nobody)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            now = os.stat(self.path, follow_symlinks=False)
        except (BlockingIOError, FileNotFoundError):  # held, or removed between open and lock
            os.close(fd)
            return False
        except OSError as exc:  # a file system without flock, say: waiting would not mend it
            os.close(fd)
            raise ConfigError("pluginDir", f"cannot lock {self.path}: {exc.strerror or exc}") from None
        mine = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)
            return False
        self._fd = fd
        self._record()
        return True

    def _open(self) -> int:
        try:
            try:
                os.mkdir(self.path, 0o755)
            except FileExistsError:
                pass
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError("pluginDir", f"cannot make or open the instance lock {self.path} (a directory): "
                                           f"{exc.strerror or exc}") from None

    def _record(self) -> None:
        """Who holds the lock, for a waiting instance's message. POD_NAME (the downward API) names
        the pod; HOSTNAME does too, except with hostNetwork, where it is the node's name."""
        pod = self._environ.get("POD_NAME") or self._environ.get("HOSTNAME") or socket.gethostname()
        record = {"pid": os.getpid(), "pod": pod,
                  "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        temporary = self.path / f"{HOLDER_NAME}.new"
        try:
            temporary.write_text(json.dumps(record) + "\n")
            temporary.replace(self.path / HOLDER_NAME)  # a waiter never reads half a record
        except OSError as exc:
            log.warning("cannot record this instance in %s: %s", self.path, exc.strerror or exc)

    def release(self) -> None:
        """Let the lock go (the last step of stop: our sockets are gone by then). Final."""
        with self._guard:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is None:
                return
            # While still held: the record never names an instance that has let go.
            with contextlib.suppress(OSError):
                (self.path / HOLDER_NAME).unlink(missing_ok=True)
            os.close(fd)  # closing the only descriptor drops the flock
        log.debug("released %s", self.path)
