"""The HTTP listeners, bound when they can be: a port in use never takes the devices down.

``metricsAddress`` serves /metrics, /healthz and /readyz; ``probeAddress``, when set,
serves the probes alone on a listener of their own, so that the kubelet's probes keep
answering when the metrics port is taken (another node agent on the host network, say).
A listener that cannot bind logs why, keeps trying after 1 s, 2 s, ... up to a minute
(on one timer thread that exists only while a bind is failing), and says when it binds.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from multidp.observe.metrics import ObservabilityServer
from multidp.serving.later import Later

if TYPE_CHECKING:
    from multidp.host.host import Host

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0


class Listener:
    """One observability server at ``address``; :attr:`server` is None until it could bind."""

    def __init__(self, address: str, host: Host, probes_only: bool = False) -> None:
        self.address, self.host, self.probes_only = address, host, probes_only
        self.server: ObservabilityServer | None = None
        self.failures = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._later: Later | None = None

    def start(self) -> None:
        self._try()

    def _try(self) -> None:
        with self._lock:
            if self._stopped or self.server is not None:
                return
            try:
                server = ObservabilityServer(self.address, self.host, self.probes_only)
            except OSError as exc:
                self._failed(exc)
                return
            server.start()
            self.server = server
            if self.failures:
                log.warning("listening on %s now, after %d failed tries", self.address, self.failures)
            if self._later is not None:
                self._later.close(wait=0)
                self._later = None

    def _failed(self, exc: OSError) -> None:
        self.failures += 1
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(self.failures - 1, 16))
        what = "the probes" if self.probes_only else "metrics and probes"
        level = logging.ERROR if self.failures == 1 or delay == MAX_RETRY_S else logging.DEBUG
        log.log(level, "cannot listen on %s for %s: %s; devices are served regardless; trying again in %g s",
                self.address, what, exc.strerror or exc, delay)
        if self._later is None:
            self._later = Later("listener-retry")
        self._later.call(delay, self._try)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            later, server = self._later, self.server
            self._later = self.server = None
        if later is not None:
            later.close(wait=0)
        if server is not None:
            server.stop()


def listeners_for(metrics_address: str | None, probe_address: str | None, host: Host) -> list[Listener]:
    """The listeners to run, started: the metrics one, and the probes' own unless it is the same address."""
    listeners = []
    if metrics_address:
        listeners.append(Listener(metrics_address, host))
    if probe_address and probe_address != metrics_address:
        listeners.append(Listener(probe_address, host, probes_only=True))
    for listener in listeners:
        listener.start()
    return listeners
