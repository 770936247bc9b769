"""The driver's side of the verbs event child (:mod:`multidp_rdma.verbschild`).

One thread starts the child, tells it which devices to watch, and blocks
reading its lines; each event marks its device for a health rescan. The child
ends when its stdin does, so it never outlives the driver. When it dies it is
started again after 1 s, then twice as long each time up to a minute (back to
1 s once it has run a minute): one warning when it first dies, one line when it
is back; meanwhile the devices it watched are polled.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from multidp_rdma.events import EventHub

# ibv_event_type values (infiniband/verbs.h) the log names.
EVENT_NAMES = {8: "DEVICE_FATAL", 9: "PORT_ACTIVE", 10: "PORT_ERR", 11: "LID_CHANGE", 12: "PKEY_CHANGE",
               13: "SM_CHANGE", 17: "CLIENT_REREGISTER", 18: "GID_CHANGE"}
DEVICE_FATAL = 8
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
CHILD = [sys.executable, "-m", "multidp_rdma.verbschild"]


class VerbsEvents:
    """Runs the child and feeds its reports to an :class:`EventHub`; ``command`` starts it (tests: a fake)."""

    def __init__(self, hub: EventHub, log: logging.Logger, command: Sequence[str] = CHILD) -> None:
        self.hub = hub
        self.log = log
        self._command = list(command)
        self._lock = threading.Lock()
        self._devices: tuple[str, ...] = ()
        self._child: subprocess.Popen[str] | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rdma-verbs-events", daemon=True)
        self.restarts = 0
        self._told: set[tuple[str, str]] = set()  # (device, reason) already in the log

    def start(self) -> None:
        self._thread.start()

    def watch(self, devices: Sequence[str]) -> None:
        """The devices to watch from now on (after each discovery)."""
        with self._lock:
            self._devices = tuple(devices)
            self._send(self._child)

    def _send(self, child: subprocess.Popen[str] | None) -> None:
        if child is None or child.stdin is None:
            return
        try:
            child.stdin.write("watch " + " ".join(self._devices) + "\n")
            child.stdin.flush()
        except (OSError, ValueError):
            pass  # it died: the reader thread sees that

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            child = self._child
        if child is not None:
            if child.stdin is not None:
                try:
                    child.stdin.close()  # the child's poll() sees the end of input and exits
                except OSError:
                    pass
            try:
                child.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        warned = False
        while not self._stopped.is_set():
            started = time.monotonic()
            code = self._run_child(announce=warned)
            if self._stopped.is_set():
                return
            self.hub.source_down("verbs", f"the verbs event child exited ({code})")
            if not warned:
                warned = True
                self.log.warning("the verbs event child exited (%s); the ports it watched are polled until it is "
                                 "back, restarting it in %g s, then backing off up to %g s", code, backoff,
                                 MAX_BACKOFF_S)
            if time.monotonic() - started >= MAX_BACKOFF_S:
                backoff = FIRST_BACKOFF_S
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            self.restarts += 1

    def _run_child(self, announce: bool) -> str:
        """Start the child and read it to its end; how it ended."""
        try:
            child = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1, close_fds=True)
        except OSError as exc:
            return f"could not start: {exc}"
        with self._lock:
            self._child = child
            self._send(child)
        assert child.stdout is not None
        self._read(child.stdout, announce)
        child.wait()
        with self._lock:
            self._child = None
        return f"exit code {child.returncode}"

    def _read(self, stdout: IO[str], announce: bool) -> None:
        for line in stdout:  # blocks until the child says something or ends
            words = line.split()
            if not words:
                continue
            if words[0] == "watching":
                if announce:
                    announce = False
                    self.log.info("the verbs event child is back")
                self.hub.verbs_watching(frozenset(words[1:]))
                if not self.hub.live("verbs"):
                    self.hub.source_up("verbs")
            elif words[0] == "event" and len(words) == 3:
                kind = int(words[2]) if words[2].isdigit() else -1
                self.log.debug("verbs event %s on %s", EVENT_NAMES.get(kind, words[2]), words[1])
                if kind == DEVICE_FATAL:
                    self.hub.uevent()
                self.hub.verbs_event(words[1])
            elif words[0] in ("failed", "lost") and len(words) >= 2:
                reason = " ".join(words[2:]) or words[0]
                if (words[1], reason) not in self._told:
                    self._told.add((words[1], reason))
                    self.log.info("no verbs events for RDMA device %s (%s); its ports are polled", words[1], reason)
                if words[0] == "lost":
                    self.hub.verbs_event(words[1])
