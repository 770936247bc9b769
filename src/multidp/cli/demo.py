"""``multidp demo``: the whole host against a kubelet stand-in and simulated hardware.

It shows, for every installed driver (or the sample driver when none is
installed): registration, the inventory, one allocation per resource, a
health change travelling to the kubelet and back, and a kubelet restart with
the time each resource took to register again. Then it stops the host and
checks that no socket was left behind. A second part (:mod:`multidp.cli.demodra`) serves the same
drivers through DRA.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence

from multidp.cli.demodra import run_dra_demo
from multidp.host.host import Host
from multidp.plugins.registry import PluginRegistry
from multidp.testing.host import make_settings
from multidp.testing.kubelet import KubeletStandIn
from multidp.testing.kubeletview import AllocationFailed
from multidp.testing.sample import SamplePlugin
from multidp.testing.util import short_socket_dir

WAIT_S = 20.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(drivers: Sequence[str] | None = None, with_sample: bool = False) -> int:
    logging.basicConfig(level=logging.ERROR, format="  [log] %(levelname)s %(name)s: %(message)s")
    directory = short_socket_dir("mdp-demo")
    kubelet = KubeletStandIn(directory).start()
    registry = PluginRegistry()
    if with_sample or not registry.names:
        registry = PluginRegistry(extra={"sample": SamplePlugin()})
        if not with_sample:
            _say("No drivers are installed; showing multidp.testing's sample driver.")
    settings = make_settings(directory, simulate=True)
    settings.drivers = list(drivers) if drivers else None
    host = Host(settings, registry)
    try:
        code = _show(host, kubelet)
    finally:
        host.stop()
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return max(code, run_dra_demo(registry, drivers))


def _show(host: Host, kubelet: KubeletStandIn) -> int:
    _say(f"== multidp demo: plugin dir {host.settings.plugin_dir} (kubelet stand-in, simulated hardware)")
    started = time.monotonic()
    host.start()
    for status in sorted(host.statuses.values(), key=lambda s: s.name):
        _say(f"driver {status.name} ({status.origin}): {status.state}{f' - {status.reason}' if status.reason else ''}")
    resources = sorted(host.endpoints)
    if not resources:
        _say("No resources to serve: no driver found simulated devices.")
        return 1
    _say("\n== Registration")
    for resource in resources:
        reg = kubelet.wait_registered(resource, timeout=WAIT_S)
        opts = reg.options
        _say(f"{resource}: registered {1000 * (reg.at - started):.0f} ms after start, endpoint {reg.endpoint}, "
             f"preferred allocation {'on' if opts.get_preferred_allocation_available else 'off'}, "
             f"pre-start {'on' if opts.pre_start_required else 'off'}")
    _say("\n== Inventory (as the kubelet sees it)")
    for resource in resources:
        view = kubelet.wait_devices(resource, lambda v: v.updates > 0, WAIT_S, "a device list")
        _say(f"{resource}: capacity {view.capacity}, allocatable {view.allocatable}")
        for device_id, (health, numa) in list(view.devices.items())[:6]:
            _say(f"  {device_id}  {health}  NUMA {','.join(map(str, numa)) or '-'}")
        if view.capacity > 6:
            _say(f"  … and {view.capacity - 6} more")
    _say("\n== One allocation per resource (GetPreferredAllocation, then Allocate, as the kubelet does)")
    for resource in resources:
        try:
            response = kubelet.allocate(resource, 1)
        except AllocationFailed as exc:
            _say(f"{resource}: {exc}")
            continue
        _say(f"{resource}:")
        for line in response.describe():
            _say(f"  {line}")
    _health_change(host, kubelet)
    _say("\n== Kubelet restart (every socket removed, a new kubelet.sock)")
    counts = {r: sum(x.resource == r for x in kubelet.registrations) for r in resources}
    kubelet.restart()
    restarted = kubelet.restarts[-1]
    for resource in resources:
        reg = kubelet.wait_registered(resource, counts[resource] + 1, WAIT_S)
        _say(f"{resource}: registered again {1000 * (reg.at - restarted):.1f} ms after the new kubelet.sock")
    host.stop()
    left = sorted(p.name for p in host.settings.plugin_dir.glob("multidp-*.sock"))
    _say(f"\n== Stopped; sockets left behind: {', '.join(left) if left else 'none'}")
    return 0 if not left else 1


def _health_change(host: Host, kubelet: KubeletStandIn) -> None:
    _say("\n== Health change (simulated fault, then recovery)")
    for name in sorted(host.runners):
        simulation = host.factory.simulations.get(name)
        if simulation is None:
            _say(f"driver {name}: no simulation, skipped")
            continue
        before = {r: dict(v.devices) for r, v in kubelet.resources.items()}
        injected = time.monotonic()
        try:
            _say(f"driver {name}: {simulation.inject_fault()}")
        except NotImplementedError:
            _say(f"driver {name}: its simulation cannot inject faults")
            continue
        changed = _wait_change(kubelet, before)
        _say(f"  kubelet saw: {changed} ({1000 * (time.monotonic() - injected):.0f} ms)")
        before = {r: dict(v.devices) for r, v in kubelet.resources.items()}
        recovered = time.monotonic()
        _say(f"driver {name}: {simulation.clear_fault()}")
        changed = _wait_change(kubelet, before)
        _say(f"  kubelet saw: {changed} ({1000 * (time.monotonic() - recovered):.0f} ms)")


def _wait_change(kubelet: KubeletStandIn, before: dict[str, dict[str, tuple[str, tuple[int, ...]]]]) -> str:
    def differs() -> bool:
        return any(dict(v.devices) != before.get(r) for r, v in kubelet.resources.items())

    try:
        kubelet.wait_for(differs, WAIT_S, "a ListAndWatch update")
    except AssertionError:
        return "no change within the wait"
    notes = []
    for resource, view in kubelet.resources.items():
        old = before.get(resource, {})
        for device_id, (health, _) in view.devices.items():
            if old.get(device_id, (None,))[0] != health:
                notes.append(f"{resource} {device_id} {health}")
    return "; ".join(notes[:4]) + (f" and {len(notes) - 4} more" if len(notes) > 4 else "")
