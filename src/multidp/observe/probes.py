"""What /healthz and /readyz answer (served by :mod:`multidp.observe.metrics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multidp.plugins.factory import FAILED, RUNNING

if TYPE_CHECKING:
    from multidp.host.host import Host


def health(host: Host) -> tuple[bool, dict[str, Any]]:
    """Live: the process runs and every endpoint keeps its gRPC server up."""
    problems = [f"{e.resource}: its endpoint thread is not running" for e in host.table.all() if not e.serving]
    if host.stopping:
        problems.append("stopping")
    return not problems, {"problems": problems}


def readiness(host: Host) -> tuple[bool, dict[str, Any]]:
    """Ready: every running driver has scanned and every resource is registered.

    A driver that failed to load is reported, not waited for (with --strict the
    host stops instead).
    """
    waiting = [] if host.started else ["starting"]
    statuses, runners = list(host.statuses.values()), dict(host.runners)
    for status in statuses:
        runner = runners.get(status.name)
        if status.state == RUNNING and runner is not None and runner.scans == 0:
            waiting.append(f"driver {status.name}: first scan")
    endpoints = host.table.all()
    waiting += [f"{e.resource}: registration" for e in endpoints if not e.registered]
    failed = {s.name: s.reason for s in statuses if s.state == FAILED}
    return not waiting, {"waiting_for": waiting, "failed_drivers": failed,
                         "resources": sorted(e.resource for e in endpoints)}
