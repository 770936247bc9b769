"""Noticing kubelet restarts: file events in the plugin dir, and a slow safety net.

The kubelet removes every socket in its directory when it starts, then creates
a new ``kubelet.sock``. A deleted socket of ours makes its endpoint serve again;
a new kubelet.sock makes every endpoint register again (each registers once per
kubelet). A plugin dir that is removed and created again is noticed through
its parent. Every few seconds a check catches what events missed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from multidp.config.settings import Settings
from multidp.host.table import ResourceTable
from multidp.host.watch import DirWatcher
from multidp.serving.sockets import SOCKET_PREFIX

log = logging.getLogger(__name__)

SAFETY_NET_S = 2.0


class KubeletRestarts:
    """Wakes the table's endpoints when the kubelet restarts or their sockets go."""

    def __init__(self, settings: Settings, table: ResourceTable) -> None:
        self.kubelet_socket = settings.kubelet_socket_path.absolute()
        self.plugin_dir = settings.plugin_dir.absolute()
        self.table = table
        self._files = DirWatcher([self.plugin_dir, self.plugin_dir.parent, self.kubelet_socket.parent],
                                 self._created, self._deleted)
        self._stopped = threading.Event()
        self._safety = threading.Thread(target=self._safety_net, name="safety-net", daemon=True)

    def start(self) -> None:
        self._files.start()
        self._safety.start()

    def stop(self) -> None:
        self._stopped.set()
        self._files.stop()

    def _created(self, path: Path) -> None:
        if path == self.kubelet_socket:
            log.info("kubelet socket %s created: registering again", path)
            for endpoint in self.table.all():
                endpoint.kubelet_started()
        elif path == self.plugin_dir:
            log.warning("plugin dir %s is back; serving again", path)
            self._files.restart()
            for endpoint in self.table.all():
                endpoint.socket_deleted()  # it went with the dir; serve now, not after a retry delay

    def _deleted(self, path: Path) -> None:
        if path.parent == self.plugin_dir and path.name.startswith(SOCKET_PREFIX):
            endpoint = self.table.endpoint_at(path)
            if endpoint is not None:
                endpoint.socket_deleted()
        elif path == self.plugin_dir:
            log.warning("plugin dir %s was removed; waiting for it to come back", path)

    def _safety_net(self) -> None:
        """Catch what file events missed: a new kubelet.sock, a socket of ours gone (not a retry:
        each endpoint retries a failure at its own growing delay)."""
        while not self._stopped.wait(SAFETY_NET_S):
            for endpoint in self.table.all():
                endpoint.check()
