"""Hot-plug events through udev (pyudev), when it is importable; rescans cover the rest.

pyudev is never required: without it (or without a udev netlink socket, as in
many containers) the driver notices devices appearing and vanishing by
comparing the sysfs class directories on every poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

SUBSYSTEMS = ("infiniband", "infiniband_verbs", "infiniband_mad")


class UdevWatch:
    """Calls ``on_event()`` from pyudev's observer thread for every RDMA-related uevent."""

    def __init__(self, observer: object) -> None:
        self._observer = observer

    @classmethod
    def start(cls, on_event: Callable[[], None], log: logging.Logger) -> UdevWatch | None:
        try:
            import pyudev  # type: ignore[import-not-found]
        except Exception as exc:  # noqa: BLE001 - optional: any import failure means "no udev"
            log.debug("pyudev is not available (%s); hot-plug is seen by rescans", exc)
            return None
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            for subsystem in SUBSYSTEMS:
                monitor.filter_by(subsystem=subsystem)
            observer = pyudev.MonitorObserver(monitor, callback=lambda _device: on_event(), name="rdma-udev")
            observer.daemon = True
            observer.start()
        except Exception as exc:  # noqa: BLE001 - no netlink socket in this namespace, and the like
            log.info("udev events unavailable (%s: %s); hot-plug is seen by rescans", type(exc).__name__, exc)
            return None
        log.info("watching udev for RDMA devices appearing and vanishing")
        return cls(observer)

    def stop(self) -> None:
        try:
            self._observer.send_stop()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - stopping is best effort
            pass
