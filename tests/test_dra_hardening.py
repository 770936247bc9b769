"""DRA under stress: odd claims, an Unprepare overtaking a Prepare, stopping mid-start, sockets that
cannot be served, broken CDI specs, a checkpoint moved away, admin access, and devices still held when a
driver moves to the device plugin."""

from __future__ import annotations

import json
import shutil
import threading
import time
from typing import Any

import pytest
from dra_helpers import DRA_NAME, POOL, WIDGET, Env

from multidp.dra import claims as claims_module
from multidp.errors import ConfigError
from multidp.host.host import Host
from multidp.plugins.registry import PluginRegistry
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin, wait_until
from multidp.testing.host import make_settings


def settings_for(env: Env, frontend: str = "dra", **section: Any) -> Any:
    new = make_settings(env.root / "dp", {"sample": {"frontend": frontend, **section}},
                        dra_plugins_dir=env.root / "pl", dra_registry_dir=env.root / "reg",
                        boot_id_file=env.root / "boot_id", pod_resources_socket=env.root / "podres.sock")
    new.drivers = ["sample"]
    return new


def test_a_claim_with_odd_fields_fails_alone(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        good = env.claim("good", "widget-0")
        odd_obj = env.api.claims.add("ns", "odd", [{"request": "r", "driver": DRA_NAME, "pool": POOL,
                                                    "device": "widget-1"}])
        odd_obj["status"]["allocation"]["devices"] = ["not", "an", "object"]
        env.api.claims.replace(odd_obj)
        odd = ("ns", odd_obj["metadata"]["uid"], "odd")
        answers = env.kubelet.prepare(DRA_NAME, [good, odd])
        assert answers[good[1]].error == ""
        assert "none of its allocated devices belongs" in answers[odd[1]].error


def test_an_unprepare_that_overtakes_a_slow_prepare_wins(env: Env, monkeypatch: pytest.MonkeyPatch):
    real = claims_module.ClaimReader.read

    def slow(self: Any, claim: Any, name: str) -> Any:
        time.sleep(1.5)  # an API server slower than the kubelet's patience
        return real(self, claim, name)

    monkeypatch.setattr(claims_module.ClaimReader, "read", slow)
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        assert "not prepared within" in env.kubelet.prepare(DRA_NAME, [claim], timeout=1.2)[claim[1]].error
        assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}  # the pod went meanwhile
        time.sleep(1.0)  # the first Prepare finishes its read, and must record nothing
        stored = json.loads(env.checkpoint.read_text())["data"]["claims"] if env.checkpoint.exists() else {}
        assert claim[1] not in stored
        other = env.claim("c2", "widget-0")
        assert env.kubelet.prepare(DRA_NAME, [other])[other[1]].error == ""  # widget-0 is free


def test_stopping_during_start_up_leaves_no_socket(env: Env):
    class SlowSpecs(SampleDriver):
        def cdi_specs(self) -> Any:
            time.sleep(1.0)
            return super().cdi_specs()

    host = Host(settings_for(env), PluginRegistry(extra={"sample": SamplePlugin(SlowSpecs)}),
                environ={"KUBECONFIG": str(env.api.kubeconfig(env.root)), "NODE_NAME": "node-a"})
    starting = threading.Thread(target=host.start)
    starting.start()
    time.sleep(0.5)
    host.stop()  # SIGTERM while the first scan writes CDI specs
    starting.join()
    time.sleep(1.0)
    assert not list(env.root.rglob("*.sock"))


def test_a_socket_that_cannot_be_served_is_said_and_tried_again(env: Env, caplog: pytest.LogCaptureFixture):
    env.kubelet.stop()
    shutil.rmtree(env.root / "reg")
    (env.root / "reg").write_text("a file where the registry folder should be")
    with env.start():
        wait_until(lambda: any("cannot serve DRA" in r.getMessage() for r in caplog.records), 10, "the error")
        assert not list(env.root.rglob("*.sock"))
        (env.root / "reg").unlink()
        env.kubelet = type(env.kubelet)(env.root / "reg")
        env.kubelet.start()
        env.kubelet.wait_registered(DRA_NAME, timeout=15)  # the next scans try again (poll: 1 s)


def test_broken_cdi_specs_fail_only_devices_that_need_them(env: Env):
    class Broken(SampleDriver):
        def cdi_specs(self) -> Any:
            raise RuntimeError("no libcuda here")

    with env.start(driver_plugin=SamplePlugin(Broken)):
        env.kubelet.wait_registered(DRA_NAME)
        shared = env.api.claims.add("ns", "s", [{"request": "r", "driver": DRA_NAME,
                                                 "pool": "node-a/example.com/widget-shared",
                                                 "device": "widget-shared-0"}])
        uid = shared["metadata"]["uid"]
        assert env.kubelet.prepare(DRA_NAME, [("ns", uid, "s")])[uid].error == ""  # names no CDI device
        widget = env.claim("w", "widget-0")
        assert "no libcuda here" in env.kubelet.prepare(DRA_NAME, [widget])[widget[1]].error


def test_a_corrupt_checkpoint_moved_away_takes_effect_without_a_restart(env: Env):
    env.checkpoint.parent.mkdir(parents=True)
    env.checkpoint.write_text("{not json")
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        claim = env.claim("c1", "widget-0")
        assert "not JSON" in env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error
        env.checkpoint.rename(env.checkpoint.with_suffix(".bad"))
        assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""


def test_admin_access_reaches_a_device_in_use_and_holds_it_for_nobody(env: Env):
    with env.start():
        env.kubelet.wait_registered(DRA_NAME)
        user = env.claim("user", "widget-0")
        assert env.kubelet.prepare(DRA_NAME, [user])[user[1]].error == ""
        admin = env.api.claims.add("ns", "admin", [{"request": "r", "driver": DRA_NAME, "pool": POOL,
                                                    "device": "widget-0", "adminAccess": True}])
        uid = admin["metadata"]["uid"]
        assert env.kubelet.prepare(DRA_NAME, [("ns", uid, "admin")])[uid].error == ""
        assert env.kubelet.unprepare(DRA_NAME, [user]) == {user[1]: ""}
        again = env.claim("again", "widget-0")
        assert env.kubelet.prepare(DRA_NAME, [again])[again[1]].error == ""  # the admin claim held nothing


def test_devices_held_by_dra_claims_stay_unhealthy_on_the_device_plugin_until_unprepared(env: Env):
    kubelet = KubeletStandIn(env.root / "dp").start()
    try:
        with env.start() as host:
            env.kubelet.wait_registered(DRA_NAME)
            claim = env.claim("c1", "widget-1")
            assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""
            host.reload(settings_for(env, "device-plugin"))
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4 and v.healthy == ["widget-0", "widget-2",
                                                                                     "widget-3"])
            assert env.kubelet.unprepare(DRA_NAME, [claim]) == {claim[1]: ""}
            kubelet.wait_devices(WIDGET, lambda v: len(v.healthy) == 4, what="widget-1 free again")
    finally:
        kubelet.stop()


def test_two_drivers_under_one_dra_name_are_refused(tmp_path):
    from multidp.config.settings import load_settings

    path = tmp_path / "c.yaml"
    path.write_text("drivers:\n  a: {draDriverName: x.example.com}\n  b: {draDriverName: x.example.com}\n")
    with pytest.raises(ConfigError, match="drivers.b.draDriverName.*driver a's DRA driver name too"):
        load_settings({"config": str(path)}, {})


def test_devices_pods_got_through_the_device_plugin_stay_out_of_dra_until_the_pods_end(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    from multidp.dra import podwatch
    from multidp.testing.podresources import FakePodResources

    monkeypatch.setattr(podwatch, "POLL_S", 0.2)
    kubelet = KubeletStandIn(env.root / "dp").start()
    pods = FakePodResources(env.root / "podres.sock").start()
    try:
        with env.start({"sample": {"frontend": "device-plugin"}}) as host:
            kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4)
            pods.pods = [("team", "train", "main", {WIDGET: ["widget-2"]}, [])]
            host.reload(settings_for(env, "dra"))
            env.kubelet.wait_registered(DRA_NAME)
            key = (POOL, "widget-2")
            env.kubelet.wait_health(DRA_NAME, lambda h: key in h, 10)
            health = env.kubelet.health(DRA_NAME)
            assert health[key].health == "Unhealthy" and "held by pod team/train" in health[key].message
            claim = env.claim("c1", "widget-2")
            assert "held by pod team/train" in env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error
            pods.pods = []  # the pod ended
            env.kubelet.wait_health(DRA_NAME, lambda h: h[key].health == "Healthy", 10)
            assert env.kubelet.prepare(DRA_NAME, [claim])[claim[1]].error == ""
    finally:
        pods.stop()
        kubelet.stop()
