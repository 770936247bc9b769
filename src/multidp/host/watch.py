"""File events in the plugin dir: how the host notices a kubelet restart at once.

The kubelet removes every socket in its directory when it starts, then creates
a new ``kubelet.sock``. The host watches for both through watchdog (inotify on
Linux, no debounce: a debounced watcher would miss the 10 ms re-registration
bar). If inotify is unavailable (watch limit reached), a polling observer takes
over, with a log line saying so. The plugin dir's parent is watched too, so a
plugin dir that is removed and created again is noticed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)


class _ShutdownRace(logging.Filter):
    """watchdog's inotify emitter logs an ERROR when an event (our own sockets going away as the host
    stops) arrives after it was told to stop; nothing is lost, so that line is dropped, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("InotifyEmitter.queue_events() called when the thread is inactive")


logging.getLogger("watchdog.observers.inotify").addFilter(_ShutdownRace())

PathCallback = Callable[[Path], None]
POLL_INTERVAL_S = 0.1


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: DirWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "created":
            self.watcher.dispatch(self.watcher.on_created, event.src_path)
        elif event.event_type == "deleted":
            self.watcher.dispatch(self.watcher.on_deleted, event.src_path)
        elif event.event_type == "moved":
            self.watcher.dispatch(self.watcher.on_deleted, event.src_path)
            self.watcher.dispatch(self.watcher.on_created, getattr(event, "dest_path", ""))


class DirWatcher:
    """Calls ``on_created(path)`` / ``on_deleted(path)`` for entries of some directories."""

    def __init__(self, directories: list[Path], on_created: PathCallback, on_deleted: PathCallback) -> None:
        self.directories = [d.absolute() for d in dict.fromkeys(directories)]
        self.on_created = on_created
        self.on_deleted = on_deleted
        self._observer: BaseObserver | None = None
        self._lock = threading.Lock()

    def dispatch(self, callback: PathCallback, path: str | bytes) -> None:
        if not path:
            return
        try:
            callback(Path(os.fsdecode(path)))
        except Exception:  # noqa: BLE001 - a bug in a callback must not stop the watcher
            log.exception("file event handler failed for %s", path)

    def start(self) -> None:
        with self._lock:
            try:
                self._observer = self._schedule(Observer())
            except OSError as exc:
                log.warning(
                    "file events unavailable (%s); polling %s every %.1f s instead",
                    exc,
                    ", ".join(map(str, self.directories)),
                    POLL_INTERVAL_S,
                )
                self._observer = self._schedule(PollingObserver(timeout=POLL_INTERVAL_S))

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        handler = _Handler(self)
        for directory in self.directories:
            watch_dir = directory if directory.is_dir() else directory.parent
            observer.schedule(handler, str(watch_dir), recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    def restart(self) -> None:
        """Schedule the watches again (after a watched directory was re-created)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive() and threading.current_thread() is not observer:
                observer.join(timeout=2)
