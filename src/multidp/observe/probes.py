"""What /healthz and /readyz answer (served by :mod:`multidp.observe.metrics`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from multidp.host.retry import FailedStatus
from multidp.plugins.factory import FAILED, RUNNING

if TYPE_CHECKING:
    from multidp.host.host import Host


def health(host: Host) -> tuple[bool, dict[str, Any]]:
    """Live: the process runs and every endpoint keeps its gRPC server up.

    A failed driver does not count: restarting the pod would not mend it faster than the
    host's own retries, and would drop the other drivers' resources meanwhile.
    """
    problems = [f"{e.resource}: its endpoint thread is not running" for e in host.table.all() if not e.serving]
    if host.stopping:
        problems.append("stopping")
    return not problems, {"problems": problems}


def readiness(host: Host) -> tuple[bool, dict[str, Any]]:
    """Ready: every driver enabled on this node runs and has scanned, and every resource is registered.

    A driver that failed (retrying or not) keeps the pod unready, with its reason, so that a
    rollout stops at a node where a driver does not come up; a driver that is disabled or not
    selected never does. ``--strict`` exits instead, for failures at start only.
    """
    lock = host.instance_lock
    waiting = [] if host.started else [f"plugin dir lock: another multidp ({lock.waiting_for})"
                                       if lock.waiting_for else "starting"]
    statuses, runners = list(host.statuses.values()), dict(host.runners)
    for status in statuses:
        runner = runners.get(status.name)
        if status.state == RUNNING and runner is not None and runner.scans == 0:
            waiting.append(f"driver {status.name}: first scan")
    endpoints = host.table.all()
    waiting += [f"{e.resource}: registration" for e in endpoints if not e.registered]
    failed = {s.name: s.reason for s in statuses if s.state == FAILED}
    now = time.time()
    retries = {s.name: {"attempts": s.attempts, "next_try_in_s": round(s.retry_in(now) or 0.0, 1)}
               for s in statuses if isinstance(s, FailedStatus) and s.state == FAILED and s.retrying}
    return not waiting and not failed, {"waiting_for": waiting, "failed_drivers": failed, "retrying": retries,
                                        "resources": sorted(e.resource for e in endpoints)}
