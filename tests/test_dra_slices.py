"""The API side: ResourceSlices a DRA host publishes, health as taints, the kubelet deleting slices, 409s,
an API server that drops taints, and claims the scheduler stand-in allocates from the slices."""

from __future__ import annotations

import time
from typing import Any

import pytest
from dra_helpers import DRA_NAME, NODE, POOL, WIDGET, Env

from multidp.testing import SchedulerStandIn, Unschedulable, wait_until

SHARED_POOL = f"{NODE}/example.com/widget-shared"


def pools(env: Env) -> dict[str, list[dict[str, Any]]]:
    """The newest complete generation of each pool: its devices by name order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in env.api.slices.slices(driver=DRA_NAME, node=NODE):
        found.setdefault(obj["spec"]["pool"]["name"], []).append(obj)
    newest = {}
    for pool, objs in found.items():
        generation = max(o["spec"]["pool"]["generation"] for o in objs)
        current = [o for o in objs if o["spec"]["pool"]["generation"] == generation]
        if len(current) == current[0]["spec"]["pool"]["resourceSliceCount"]:
            newest[pool] = sorted((d for o in current for d in o["spec"]["devices"]), key=lambda d: d["name"])
    return newest


def device(env: Env, pool: str, name: str) -> dict[str, Any] | None:
    return next((d for d in pools(env).get(pool, []) if d["name"] == name), None)


def test_each_resource_is_a_pool_owned_by_the_node_with_its_attributes(env: Env):
    with env.start():
        wait_until(lambda: set(pools(env)) == {POOL, SHARED_POOL}, 10, "both pools published")
        assert [d["name"] for d in pools(env)[POOL]] == ["widget-0", "widget-1", "widget-2", "widget-3"]
        widget = device(env, POOL, "widget-3")
        assert widget is not None
        assert widget["attributes"]["multidp.io/resource"] == {"string": WIDGET}
        assert widget["attributes"]["resource.kubernetes.io/numaNode"] == {"int": 1}
        (obj,) = [o for o in env.api.slices.slices(driver=DRA_NAME) if o["spec"]["pool"]["name"] == POOL]
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "Node"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == env.api.uid
        assert obj["spec"]["nodeName"] == NODE
        assert env.api.slices.invalid == []


def test_health_travels_as_a_taint_and_recovery_removes_it(env: Env):
    with env.start():
        wait_until(lambda: device(env, POOL, "widget-1") is not None, 10, "published")
        first = max(o["spec"]["pool"]["generation"] for o in env.api.slices.slices(driver=DRA_NAME))
        assert env.plugin.hardware is not None
        env.plugin.hardware.set_health(WIDGET, "widget-1", False, "fan stopped")
        wait_until(lambda: (device(env, POOL, "widget-1") or {}).get("taints"), 10, "the taint")
        (taint,) = device(env, POOL, "widget-1")["taints"]  # type: ignore[index]
        assert taint.pop("timeAdded")  # the server's stamp
        assert taint == {"key": "multidp.io/unhealthy", "value": "fan-stopped", "effect": "NoSchedule"}
        assert max(o["spec"]["pool"]["generation"] for o in env.api.slices.slices(driver=DRA_NAME)) > first
        env.plugin.hardware.set_health(WIDGET, "widget-1", True)
        wait_until(lambda: "taints" not in (device(env, POOL, "widget-1") or {"taints": 1}), 10, "no taint")
        assert env.api.slices.invalid == []


def test_the_scheduler_allocates_from_the_slices_and_skips_tainted_devices(env: Env):
    scheduler = SchedulerStandIn(env.api)
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        wait_until(lambda: len(pools(env).get(POOL, [])) == 4, 10, "published")
        assert env.plugin.hardware is not None
        for sick in ("widget-0", "widget-1", "widget-2"):
            env.plugin.hardware.set_health(WIDGET, sick, False, "ecc")
        wait_until(lambda: sum("taints" in d for d in pools(env)[POOL]) == 3, 10, "three taints")
        claim = scheduler.allocate("ns", "c1", DRA_NAME, WIDGET)
        assert [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]] == ["widget-3"]
        uid = claim["metadata"]["uid"]
        answer = env.kubelet.prepare(DRA_NAME, [("ns", uid, "c1")])[uid]
        assert answer.error == "" and answer.devices[0].device == "widget-3"
        with pytest.raises(Unschedulable):
            scheduler.allocate("ns", "c2", DRA_NAME, WIDGET)


def test_slices_the_kubelet_deletes_are_published_again_when_it_registers_us(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        wait_until(lambda: set(pools(env)) == {POOL, SHARED_POOL}, 10, "published")
        env.api.slices.delete_all(node=NODE)  # a starting kubelet does this, then registers plugins
        env.kubelet.restart()
        wait_until(lambda: set(pools(env)) == {POOL, SHARED_POOL}, 10, "published again")


def test_conflicts_are_retried(env: Env):
    env.api.slices.conflict_next = 3
    with env.start():
        wait_until(lambda: set(pools(env)) == {POOL, SHARED_POOL}, 10, "published despite 409s")


def test_a_server_that_drops_taints_gets_unhealthy_devices_left_out(env: Env):
    env.api.slices.drop_taints = True
    with env.start():
        wait_until(lambda: len(pools(env).get(POOL, [])) == 4, 10, "published")
        assert env.plugin.hardware is not None
        env.plugin.hardware.set_health(WIDGET, "widget-2", False, "fan stopped")
        wait_until(lambda: [d["name"] for d in pools(env).get(POOL, [])] == ["widget-0", "widget-1", "widget-3"],
                   10, "widget-2 left out")
        env.plugin.hardware.set_health(WIDGET, "widget-2", True)
        wait_until(lambda: len(pools(env).get(POOL, [])) == 4, 10, "back")


def test_a_big_pool_is_split_at_128_devices_and_at_64_once_tainted(env: Env):
    drivers = {"sample": {"frontend": "dra", "resources": {WIDGET: {"count": 300}}}}
    with env.start(drivers):
        wait_until(lambda: len(pools(env).get(POOL, [])) == 300, 15, "300 devices")
        sizes = sorted(len(o["spec"]["devices"]) for o in env.api.slices.slices(driver=DRA_NAME))
        assert sizes == [44, 128, 128]
        assert env.plugin.hardware is not None
        env.plugin.hardware.set_health(WIDGET, "widget-7", False, "ecc")
        wait_until(lambda: sum("taints" in d for d in pools(env).get(POOL, [])) == 1, 15, "the taint")
        sizes = sorted(len(o["spec"]["devices"]) for o in env.api.slices.slices(driver=DRA_NAME))
        assert sizes == [44, 64, 64, 64, 64]
        assert env.api.slices.invalid == []


def test_moving_to_the_device_plugin_deletes_the_slices(env: Env):
    with env.start() as host:
        wait_until(lambda: bool(pools(env)), 10, "published")
        host.apply_labels({"multidp.io/sample.frontend": "device-plugin"})
        wait_until(lambda: env.api.slices.slices(driver=DRA_NAME) == [], 10, "slices deleted")


def test_a_tainted_pool_is_not_written_again_while_nothing_changes(env: Env):
    with env.start() as host:
        wait_until(lambda: device(env, POOL, "widget-1") is not None, 10, "published")
        assert env.plugin.hardware is not None
        env.plugin.hardware.set_health(WIDGET, "widget-1", False, "fan stopped")
        wait_until(lambda: (device(env, POOL, "widget-1") or {}).get("taints"), 10, "the taint")
        (frontend,) = host.dra.all()
        assert frontend.slices is not None
        time.sleep(0.3)
        writes = env.api.slices.writes
        for _ in range(3):  # the server stamped timeAdded on the taint: still the same slices
            frontend.slices.changed()
            time.sleep(0.2)
        assert env.api.slices.writes == writes


def test_a_host_restarted_onto_the_device_plugin_clears_its_old_slices(env: Env):
    with env.start():
        wait_until(lambda: bool(pools(env)), 10, "published")
    assert env.api.slices.slices(driver=DRA_NAME)  # a restarting host keeps them
    with env.start({"sample": {"frontend": "device-plugin"}}):
        wait_until(lambda: env.api.slices.slices(driver=DRA_NAME) == [], 10, "the old slices deleted")


def test_a_host_restarted_onto_the_device_plugin_still_unprepares_old_claims(env: Env):
    from multidp.testing import KubeletStandIn

    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-2")
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""
    kubelet = KubeletStandIn(env.root / "dp").start()
    try:
        with env.start({"sample": {"frontend": "device-plugin"}}):
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4 and "widget-2" not in v.healthy)
            env.kubelet.wait_registered(DRA_NAME)  # Unprepare-only
            wait_until(lambda: env.api.slices.slices(driver=DRA_NAME) == [], 10, "no devices offered via DRA")
            assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}
            kubelet.wait_devices(WIDGET, lambda v: len(v.healthy) == 4, what="widget-2 free on the device plugin")
    finally:
        kubelet.stop()
