"""Devices that running pods got through the device plugin, kept out of DRA until those pods end.

When a driver starts on DRA (a switch by label or config, or a host restarted into DRA), pods that got
its devices through the device plugin may still run. The kubelet's PodResources API says which. Such
devices are offered Unhealthy through DRA (tainted in the slices, refused by Prepare), naming the pod,
and the API is asked again every POLL_S until none is held any more. A kubelet whose PodResources
socket is not mounted cannot say: that is logged once, and DRA offers the devices at once (the window
docs/dra.md describes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from multidp.dra.podresources import PodResourcesUnavailable, held

log = logging.getLogger(__name__)

POLL_S = 5.0
GIVE_UP_S = 600.0  # a PodResources socket gone this long: its holders are forgotten

Holders = dict[tuple[str, str], str]  # (resource, driver ID) -> "namespace/pod" holding it


class PodHeldWatch:
    """Asks PodResources which of ``resources()``'s devices pods hold, until none is."""

    def __init__(self, driver: str, socket: Path, resources: Callable[[], Collection[str]],
                 changed: Callable[[Holders], None]) -> None:
        self.driver, self.socket, self.resources, self.changed = driver, socket, resources, changed
        self.holders: Holders = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{driver}-podresources", daemon=True)

    def start(self) -> None:
        """Poll in the background until nothing is held (again after an earlier poll ended)."""
        if self._thread.is_alive():
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.driver}-podresources", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> bool:
        """Ask once; whether any device is held. PodResourcesUnavailable when the kubelet cannot say."""
        answer = held(self.socket)
        wanted = set(self.resources())
        holders = {(resource, device): answer.holder(resource, device) or "a pod"
                   for resource, devices in answer.devices.items() if resource in wanted for device in devices}
        if holders != self.holders:
            self.holders = holders
            self.changed(holders)
        return bool(holders)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if not self.check():
                    return  # nothing held: devices freed later are DRA's already
                failures = 0
            except PodResourcesUnavailable as exc:
                # A kubelet restarting makes its socket go for a while: what was held stays held meanwhile.
                failures += 1
                if failures == 1:
                    log.warning("driver %s: PodResources did not answer (%s); the devices pods held stay out of "
                                "DRA while it is asked again", self.driver, exc)
                if failures * POLL_S >= GIVE_UP_S:
                    log.error("driver %s: PodResources has not answered for %g s; DRA now offers the devices pods "
                              "held through the device plugin (%s)", self.driver, GIVE_UP_S, exc)
                    self.holders = {}
                    self.changed({})
                    return
            self._stopped.wait(POLL_S)
