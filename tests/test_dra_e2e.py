"""DRA end to end: a host serving the sample driver through DRA, the DRA kubelet stand-in, a fake API
server holding the claims, real unix sockets. Restarts, reboots and bad checkpoints included."""

from __future__ import annotations

import json
from typing import Any

from dra_helpers import DRA_NAME, NODE, POOL, WIDGET, Env, allocations

from multidp.api.services import DRA_V1
from multidp.model import ContainerAllocation
from multidp.testing import SampleDriver, SamplePlugin, wait_until


def test_a_claim_is_prepared_with_cdi_ids_and_unprepared(env: Env):
    with env.start():
        view = env.kubelet.wait_registered(DRA_NAME)
        assert view.dra_service == DRA_V1
        claim = env.claim("c1", "widget-0", "widget-1")
        answer = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]]
        assert answer.error == ""
        assert sorted(d.device for d in answer.devices) == ["widget-0", "widget-1"]
        ids = {d.device: list(d.cdi_ids) for d in answer.devices}
        # each device its own declared CDI name; the per-claim spec's device once, on the first
        assert ids == {"widget-0": ["example.com/widget=widget-0", f"{DRA_NAME}/claim={claim[1]}-0"],
                       "widget-1": ["example.com/widget=widget-1"]}
        spec = json.loads((env.cdi / f"multidp-{DRA_NAME}_claim-{claim[1]}.json").read_text())
        edits = spec["devices"][0]["containerEdits"]
        assert [n["path"] for n in edits["deviceNodes"]] == ["/dev/widget-0", "/dev/widget-1"]
        assert edits["env"] == ["WIDGET_DEVICES=widget-0,widget-1"]
        request = allocations(env.plugin)[-1]
        assert (request.claim_uid, request.request_name, request.device_ids) == (claim[1], "widgets",
                                                                                ("widget-0", "widget-1"))
        assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}
        assert not list(env.cdi.glob("*_claim-*.json"))
        assert env.kubelet.unprepare(DRA_NAME, [("ns", "no-such-uid", "gone")]) == {"no-such-uid": ""}


def test_device_plugin_resources_are_not_offered_in_dra_mode(env: Env):
    from multidp.testing import KubeletStandIn

    kubelet = KubeletStandIn(env.root / "dp").start()  # the device-plugin kubelet of the same host
    try:
        with env.start() as host:
            env.kubelet.wait_registered(DRA_NAME)
            assert host.endpoints == {} and kubelet.registrations == []
            assert [p.name for p in (env.root / "dp").glob("*.sock")] == ["kubelet.sock"]
    finally:
        kubelet.stop()


def test_each_claim_fails_alone_naming_why(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        first = env.claim("first", "widget-0")
        taken = env.claim("taken", "widget-0")
        elsewhere = env.claim("elsewhere", "widget-99")
        stale = ("ns", "old-uid", "first")
        missing = ("ns", "uid-x", "missing")
        answers = env.kubelet.prepare(DRA_NAME, [first, taken, elsewhere, stale, missing])
        # the two claims of widget-0 are read at the same time: one wins, the other names it
        (winner,) = [c for c in (first, taken) if answers[c[1]].error == ""]
        loser = taken if winner is first else first
        assert f"already prepared for claim ns/{winner[2]}" in answers[loser[1]].error
        assert "widget-99" in answers[elsewhere[1]].error and "not a device" in answers[elsewhere[1]].error
        assert "has UID" in answers["old-uid"].error
        assert "not found" in answers["uid-x"].error


def test_an_answer_with_annotations_is_refused(env: Env):
    class Annotating(SampleDriver):
        def allocate(self, request: Any) -> ContainerAllocation:
            answer = super().allocate(request)
            answer.annotations = {"vendor.com/visible": "0"}
            return answer

    with env.start(driver_plugin=SamplePlugin(Annotating)):
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        error = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error
        assert "annotations (vendor.com/visible)" in error
        assert not list(env.cdi.glob("*_claim-*.json"))
        assert json.loads(env.checkpoint.read_text())["data"]["claims"] == {}


def test_a_host_restart_keeps_prepared_claims(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        before = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]]
    env.api.claims.remove("ns", "c1")  # answered from the checkpoint: no GET needed
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        calls = len(allocations(env.plugin))
        again = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]]
        assert again == before and len(allocations(env.plugin)) == calls
        other = env.claim("c2", "widget-0")
        assert "already prepared for claim ns/c1" in env.kubelet.prepare(DRA_NAME, [other])[other[1]].error
        # dra-example-driver#259: a spec file lost meanwhile is written again before answering
        (env.cdi / f"multidp-{DRA_NAME}_claim-{claim[1]}.json").unlink()
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]] == before
        assert (env.cdi / f"multidp-{DRA_NAME}_claim-{claim[1]}.json").exists()


def test_after_a_reboot_answers_are_derived_again_not_replayed(env: Env):
    """kubernetes#141433: after a reboot the kubelet calls Prepare again for its claims; device numbers may
    have changed (ROCm k8s-gpu-dra-driver#86), so the driver is asked again for the stored device IDs."""
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-1")
        before = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]]
    env.reboot()
    env.api.claims.remove("ns", "c1")
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        calls = len(allocations(env.plugin))
        replayed = env.kubelet.reboot_replay(DRA_NAME)  # kubernetes#141433: the kubelet prepares again
        assert replayed[claim[1]] == before
        assert len(allocations(env.plugin)) == calls + 1
        assert allocations(env.plugin)[-1].device_ids == ("widget-1",)
        assert (env.cdi / f"multidp-{DRA_NAME}_claim-{claim[1]}.json").exists()
        stored = json.loads(env.checkpoint.read_text())["data"]["claims"][claim[1]]
        assert stored["boot_id"] == "boot-2"


def test_a_half_prepared_claim_is_cleaned_up_at_start(env: Env):
    """NVIDIA dra-driver-gpu#840: a host that died mid-Prepare left a claim and its spec behind."""
    from multidp.dra.checkpoint import PREPARING, Checkpoint, Contents, PreparedClaim

    spec = env.cdi / f"multidp-{DRA_NAME}_claim-u9.json"
    spec.parent.mkdir(parents=True)
    spec.write_text("{}")
    Checkpoint(env.checkpoint).save(Contents({"u9": PreparedClaim("u9", "ns", "c9", PREPARING, (), (str(spec),))}))
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        assert not spec.exists()
        assert json.loads(env.checkpoint.read_text())["data"]["claims"] == {}


def test_a_corrupt_checkpoint_stops_prepare_but_not_unprepare(env: Env):
    """dra-example-driver#249: an unusable checkpoint is never read as empty (claims of running pods would
    be handed out twice), so Prepare fails naming it; Unprepare still answers, so pods can go."""
    env.checkpoint.parent.mkdir(parents=True)
    env.checkpoint.write_text('{"kind": "MultidpDRACheckpoint", "version": 1, "checksum": "x", "data": {}}')
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        error = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error
        assert str(env.checkpoint) in error and "checksum" in error
        assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}


def test_health_changes_reach_the_health_stream(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        key = (POOL, "widget-2")
        env.kubelet.wait_health(DRA_NAME, lambda h: key in h and h[key].health == "Healthy", 10)
        assert env.plugin.hardware is not None
        env.plugin.hardware.set_health(WIDGET, "widget-2", False, "fan stopped")
        env.kubelet.wait_health(DRA_NAME, lambda h: h[key].health == "Unhealthy" and h[key].message == "fan stopped",
                                10)
        env.plugin.hardware.set_health(WIDGET, "widget-2", True)
        env.kubelet.wait_health(DRA_NAME, lambda h: h[key].health == "Healthy", 10)


def test_a_kubelet_restart_registers_again_and_claims_stay(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-3")
        before = env.kubelet.prepare(DRA_NAME, [claim])[claim[1]]
        env.kubelet.restart()
        env.kubelet.wait_registered(DRA_NAME)
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]] == before


def test_stopping_removes_the_sockets(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
    assert not list(env.root.rglob("*.sock"))
    wait_until(lambda: DRA_NAME not in env.kubelet.plugins, 10)


def test_metrics_count_prepares_and_prepared_claims(env: Env):
    from multidp.observe.metrics import HostCollector

    with env.start() as host:
        env.kubelet.wait_registered(DRA_NAME)
        good, bad = env.claim("c1", "widget-0"), env.claim("c2", "widget-0")
        env.kubelet.prepare(DRA_NAME, [good, bad])
        samples = {(s.name, s.labels.get("health", "")): s.value
                   for family in HostCollector(host).collect() for s in family.samples
                   if s.name.startswith("multidp_dra_")}
        assert samples[("multidp_dra_prepared_claims", "")] == 1
        assert samples[("multidp_dra_prepare_duration_seconds_count", "")] == 2
        assert samples[("multidp_dra_prepare_errors_total", "")] == 1
        assert samples[("multidp_dra_devices", "Healthy")] == 5


def test_devices_that_need_unwritable_cdi_specs_are_unhealthy_and_bad_devices_left_out(env: Env):
    from multidp.model import Device

    class Broken(SampleDriver):
        def cdi_specs(self) -> Any:
            raise RuntimeError("no libcuda here")

        def scan(self) -> Any:
            inventory = dict(super().scan())
            inventory["example.com/other"] = ["not a device", Device(""), Device("ok-0")]
            inventory["Not A Name"] = [Device("x")]
            return inventory

    with env.start(driver_plugin=SamplePlugin(Broken)) as host:
        env.kubelet.wait_registered(DRA_NAME)
        key = (POOL, "widget-0")
        env.kubelet.wait_health(DRA_NAME, lambda h: key in h and h[key].health == "Unhealthy", 10)
        health = env.kubelet.health(DRA_NAME)
        assert "needs CDI device example.com/widget=widget-0, but" in health[key].message
        assert "no libcuda here" in health[key].message
        assert health[(f"{NODE}/example.com/widget-shared", "widget-shared-0")].health == "Healthy"  # names no CDI
        assert {name for pool, name in health if pool == f"{NODE}/example.com/other"} == {"ok-0"}
        assert not [pool for pool, _ in health if "Not A Name" in pool]
        assert host.dra.all()[0].preparer.broken is None


def test_a_reload_moves_a_driver_between_front_ends_never_offering_a_device_twice(env: Env):
    from multidp.testing import KubeletStandIn
    from multidp.testing.host import make_settings

    kubelet = KubeletStandIn(env.root / "dp").start()
    try:
        def settings(frontend: str) -> Any:
            new = make_settings(env.root / "dp", {"sample": {"frontend": frontend}}, dra_plugins_dir=env.root / "pl",
                                dra_registry_dir=env.root / "reg", boot_id_file=env.root / "boot_id")
            new.drivers = ["sample"]
            return new

        with env.start({"sample": {"frontend": "device-plugin"}}) as host:
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
            assert not list((env.root / "reg").glob("*.sock"))
            host.reload(settings("dra"))
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, what="the empty list")
            env.kubelet.wait_registered(DRA_NAME)
            assert host.endpoints == {}
            host.reload(settings("device-plugin"))
            env.kubelet.wait_for(lambda: DRA_NAME not in env.kubelet.plugins, what="DRA deregistered")
            assert not list((env.root / "reg").glob("*.sock"))
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4 and v.stream_open, what="served again")
    finally:
        kubelet.stop()


def test_a_slow_claim_is_answered_before_the_kubelets_deadline_and_found_done_later(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        assert env.plugin.driver is not None
        env.plugin.driver.faults["allocate"] = 2.0  # seconds
        slow = env.claim("slow", "widget-0")
        answer = env.kubelet.prepare(DRA_NAME, [slow], timeout=1.5)[slow[1]]
        assert "not prepared within the kubelet's deadline" in answer.error
        env.plugin.driver.faults.clear()
        wait_until(lambda: env.kubelet.prepare(DRA_NAME, [slow])[slow[1]].error == "", 10, "the claim done")
        assert len(allocations(env.plugin)) == 1  # the first try finished it; the retry found it done


def test_a_stopped_driver_keeps_serving_unprepare_for_its_claims(env: Env):
    from multidp.testing.host import make_settings

    with env.start() as host:
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""
        off = make_settings(env.root / "dp", {"sample": {"frontend": "dra", "enabled": False}},
                            dra_plugins_dir=env.root / "pl", dra_registry_dir=env.root / "reg",
                            boot_id_file=env.root / "boot_id")
        off.drivers = ["sample"]
        host.reload(off)
        key = (POOL, "widget-0")
        env.kubelet.wait_health(DRA_NAME, lambda h: h[key].health == "Unhealthy", 10)
        assert "does not run on this node now" in env.kubelet.health(DRA_NAME)[key].message
        other = env.claim("c2", "widget-1")
        assert "does not run on this node now" in env.kubelet.prepare(DRA_NAME, [other])[other[1]].error
        assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}
        env.kubelet.wait_for(lambda: DRA_NAME not in env.kubelet.plugins, what="deregistered after the last claim")
        wait_until(lambda: not list(env.root.rglob("*.sock")), 10, "the DRA sockets removed")


def test_a_driver_that_fails_to_start_still_unprepares_its_claims(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""
    with env.start({"sample": {"frontend": "dra", "pollInterval": "often"}}) as host:  # a bad config
        assert host.failed_drivers
        env.kubelet.wait_registered(DRA_NAME)
        assert "failed to start" in env.kubelet.prepare(DRA_NAME, [env.claim("c2", "widget-1")]).popitem()[1].error
        assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}
        env.kubelet.wait_for(lambda: DRA_NAME not in env.kubelet.plugins, what="deregistered after the last claim")


def test_a_node_label_switches_the_front_end_live_and_a_typo_keeps_the_last_good(env: Env):
    from multidp.testing import KubeletStandIn

    kubelet = KubeletStandIn(env.root / "dp").start()
    label = "multidp.io/sample.frontend"
    try:
        with env.start({"sample": {}}) as host:
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
            host.apply_labels({label: "dra"})
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, what="the empty list")
            env.kubelet.wait_registered(DRA_NAME)
            host.apply_labels({label: "DRA-please"})  # a typo: stays on DRA
            assert DRA_NAME in env.kubelet.plugins and host.endpoints == {}
            host.apply_labels({})  # the label removed: the config's front-end
            env.kubelet.wait_for(lambda: DRA_NAME not in env.kubelet.plugins, what="DRA deregistered")
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4 and v.stream_open, what="served again")
    finally:
        kubelet.stop()
