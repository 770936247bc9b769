"""``multidp demo``, second part: the same drivers served through DRA.

A fake API server stands in for the cluster and the DRA kubelet stand-in for the kubelet. The host
publishes each driver's ResourceSlices, the scheduler stand-in allocates one claim per driver from
them, and the kubelet stand-in prepares it. A simulated fault then shows up as a device taint, and
clearing it removes the taint. Last, the claims are unprepared, the host stops, and the demo checks
that no socket was left behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from multidp.dra.frontend import DraFrontend
from multidp.host.host import Host
from multidp.plugins.registry import PluginRegistry
from multidp.testing.apiserver import FakeApiServer
from multidp.testing.drakubelet import DraKubelet
from multidp.testing.host import make_settings
from multidp.testing.scheduler import SchedulerStandIn, Unschedulable
from multidp.testing.util import short_socket_dir, wait_until

NODE = "demo-node"
WAIT_S = 20.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_dra_demo(registry: PluginRegistry, drivers: Sequence[str] | None) -> int:
    directory = short_socket_dir("mdp-dra")
    (directory / "boot_id").write_text("demo-boot\n")
    api = FakeApiServer(NODE)
    kubelet = DraKubelet(directory / "reg").start()
    names = list(drivers) if drivers else registry.names
    settings = make_settings(directory / "dp", {name: {"frontend": "dra"} for name in names}, simulate=True,
                             dra_plugins_dir=directory / "pl", dra_registry_dir=directory / "reg",
                             boot_id_file=directory / "boot_id", pod_resources_socket=directory / "pod-resources.sock")
    settings.drivers = list(drivers) if drivers else None
    host = Host(settings, registry, environ={"KUBECONFIG": str(api.kubeconfig(directory)), "NODE_NAME": NODE})
    try:
        return _show(host, kubelet, api, directory)
    finally:
        host.stop()
        kubelet.stop()
        api.close()
        shutil.rmtree(directory, ignore_errors=True)


def _show(host: Host, kubelet: DraKubelet, api: FakeApiServer, directory: Any) -> int:
    _say(f"\n\n== DRA: the same drivers through Dynamic Resource Allocation (node {NODE}, a fake API server)")
    host.start()
    frontends = sorted(host.dra.all(), key=lambda f: f.driver)
    if not frontends:
        _say("No driver runs in DRA mode.")
        return 1
    scheduler = SchedulerStandIn(api)
    claims: list[tuple[DraFrontend, tuple[str, str, str]]] = []
    for frontend in frontends:
        view = kubelet.wait_registered(frontend.dra_name, WAIT_S)
        _say(f"\n{frontend.driver} as DRA driver {frontend.dra_name}: registered; the kubelet picked "
             f"{view.dra_service} and {view.health_service}")
        resources = sorted({state.resource for state in frontend.health().values()})
        try:
            wait_until(partial(_published, api, frontend.dra_name, len(resources)), WAIT_S, "slices")
        except AssertionError:
            _say(f"  its ResourceSlices did not appear within {WAIT_S:g} s")
        for pool, devices in sorted(_pools(api, frontend.dra_name).items()):
            _say(f"  pool {pool}: {len(devices)} devices, e.g. {devices[0]['name']} "
                 f"{_attributes(devices[0])}")
        if not resources:
            continue
        name = f"{frontend.driver}-claim"
        try:
            claim = scheduler.allocate("demo", name, frontend.dra_name, resources[0])
        except Unschedulable as exc:
            _say(f"  the scheduler stand-in: {exc}")
            continue
        key = ("demo", claim["metadata"]["uid"], name)
        answer = kubelet.prepare(frontend.dra_name, [key])[key[1]]
        result = claim["status"]["allocation"]["devices"]["results"][0]
        _say(f"  claim demo/{name}: allocated {result['device']} from {result['pool']}; prepared: "
             + (f"error: {answer.error}" if answer.error else
                f"CDI {', '.join(i for d in answer.devices for i in d.cdi_ids)}"))
        if not answer.error:
            claims.append((frontend, key))
    _taints(host, api, frontends)
    for frontend, key in claims:
        error = kubelet.unprepare(frontend.dra_name, [key])[key[1]]
        _say(f"claim {key[0]}/{key[2]}: unprepared{f' - {error}' if error else ''}")
    host.stop()
    left = sorted(p.name for p in directory.rglob("*.sock") if p.name != "pod-resources.sock")
    _say(f"\n== Stopped; DRA sockets left behind: {', '.join(left) if left else 'none'}")
    return 0 if not left else 1


def _pools(api: FakeApiServer, dra_name: str) -> dict[str, list[dict[str, Any]]]:
    pools: dict[str, list[dict[str, Any]]] = {}
    for obj in api.slices.slices(driver=dra_name, node=NODE):
        pools.setdefault(obj["spec"]["pool"]["name"], []).extend(obj["spec"].get("devices") or [])
    return pools


def _published(api: FakeApiServer, dra_name: str, pools: int) -> bool:
    return len(_pools(api, dra_name)) >= pools


def _any_taint(api: FakeApiServer, dra_name: str, wanted: bool) -> bool:
    return bool(_tainted(api, dra_name)) == wanted


def _attributes(device: dict[str, Any]) -> str:
    shown = [f"{k.rpartition('/')[2]}={next(iter(v.values()))}" for k, v in device.get("attributes", {}).items()]
    return "(" + ", ".join(shown[:4]) + (", …" if len(shown) > 4 else "") + ")"


def _tainted(api: FakeApiServer, dra_name: str) -> dict[str, str]:
    return {d["name"]: d["taints"][0]["value"] for devices in _pools(api, dra_name).values() for d in devices
            if d.get("taints")}


def _taints(host: Host, api: FakeApiServer, frontends: list[DraFrontend]) -> None:
    _say("\n== Health as device taints (simulated fault, then recovery)")
    for frontend in frontends:
        simulation = host.factory.simulations.get(frontend.driver)
        if simulation is None:
            continue
        try:
            started = time.monotonic()
            _say(f"{frontend.driver}: {simulation.inject_fault()}")
        except NotImplementedError:
            _say(f"{frontend.driver}: its simulation cannot inject faults")
            continue
        try:
            wait_until(partial(_any_taint, api, frontend.dra_name, True), WAIT_S, "a taint")
            shown = ", ".join(f"{d} ({v})" for d, v in _tainted(api, frontend.dra_name).items())
            _say(f"  tainted multidp.io/unhealthy in the API: {shown} ({1000 * (time.monotonic() - started):.0f} ms)")
        except AssertionError:
            _say("  no taint within the wait")
        started = time.monotonic()
        _say(f"{frontend.driver}: {simulation.clear_fault()}")
        try:
            wait_until(partial(_any_taint, api, frontend.dra_name, False), WAIT_S, "no taint")
            _say(f"  taint removed ({1000 * (time.monotonic() - started):.0f} ms)")
        except AssertionError:
            _say("  the taint stayed")
