"""The plugin dir at start: refused at once if no endpoint could serve in it, claimed (one multidp
per plugin dir, :mod:`multidp.host.instancelock`), then cleared of what a process that did not stop
cleanly left there."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from multidp.config.settings import Settings
from multidp.errors import ConfigError
from multidp.host.instancelock import InstanceLock, lock_wait_of
from multidp.serving.endpoint import MAX_SOCKET_PATH
from multidp.serving.registration import is_socket
from multidp.serving.sockets import PRIVATE_DIR_PREFIX, SOCKET_PREFIX, socket_name

log = logging.getLogger(__name__)

__all__ = ["InstanceLock", "check_plugin_dir", "claim_plugin_dir", "remove_stale_sockets"]


def claim_plugin_dir(settings: Settings, drivers: Sequence[str], lock: InstanceLock,
                     stopping: threading.Event) -> bool:
    """Check the plugin dir, take its instance lock (waiting up to ``lockWait`` for another multidp
    to stop), and only then sweep what a dead instance left: before the lock, those sockets may
    be a live instance's. False when ``stopping`` came first (nothing was touched); raises
    ConfigError for an unusable dir, InstanceLocked when the other instance did not let go."""
    if settings.kubelet_socket_path.parent.absolute() != settings.plugin_dir.absolute():
        log.warning("the kubelet socket %s is outside the plugin dir %s: the kubelet looks for plugin sockets "
                    "in its own socket's directory", settings.kubelet_socket_path, settings.plugin_dir)
    check_plugin_dir(settings, drivers)
    if not lock.acquire(lock_wait_of(settings), stopping):
        return False
    remove_stale_sockets(settings.plugin_dir)
    return True


def check_plugin_dir(settings: Settings, drivers: Sequence[str]) -> None:
    """Refuse at once (ConfigError, exit 2) a plugin dir no endpoint could ever serve in: one that
    cannot be created or written, or where one of our socket paths would pass the 107 bytes a
    unix socket path may have (the endpoints would fail for ever, and the probes with them)."""
    plugin_dir = settings.plugin_dir.absolute()
    # A spare server's socket (.mdp-XXXXXXXX/s) is always shorter than these.
    ours = [plugin_dir / socket_name(d, "") for d in drivers]
    for key, path in [*(("pluginDir", p) for p in ours), ("kubeletSocket", settings.kubelet_socket_path)]:
        size = len(str(path.absolute()).encode())
        if size > MAX_SOCKET_PATH:
            raise ConfigError(key, f"the socket path {path.absolute()} would be {size} bytes, over the "
                                   f"{MAX_SOCKET_PATH} a unix socket path may have; use a shorter path")
    try:
        plugin_dir.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX, dir=plugin_dir))  # as a spare server does
    except OSError as exc:
        raise ConfigError("pluginDir", f"cannot create or write in {plugin_dir}: {exc.strerror or exc}") from None


def remove_stale_sockets(plugin_dir: Path) -> None:
    """Our sockets and private bind directories left by a process that did not stop cleanly.
    Only while holding the instance lock: without it they may be another live instance's."""
    for path in plugin_dir.glob(f"{SOCKET_PREFIX}*.sock"):
        if is_socket(path):
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)
    for path in plugin_dir.glob(f"{PRIVATE_DIR_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
