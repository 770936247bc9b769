"""The DRA kubelet stand-in against a tiny in-test DRA plugin on real unix sockets, and the fake API
server's ResourceClaims read with urllib."""

from __future__ import annotations

import json
import queue
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from multidp.api import dra_v1_pb2 as dra
from multidp.api import drahealth_v1_pb2 as hp
from multidp.api import pluginregistration_v1_pb2 as reg
from multidp.api.services import DRA_SERVICES, DRA_V1, DRA_V1BETA1, HEALTH_SERVICES, HEALTH_V1, REGISTRATION_SERVICE
from multidp.testing import FakeApiServer, short_socket_dir, wait_until
from multidp.testing.drakubelet import DraCallFailed, DraKubelet

NAME = "fake.example.com"
ALL = (*DRA_SERVICES, HEALTH_V1)


def _unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(fn, request.FromString, response.SerializeToString)


class FakeDraPlugin:
    """A DRA plugin in miniature: GetInfo as told, Prepare / Unprepare recorded, a health stream fed by tests."""

    def __init__(self, root: Path, versions: tuple[str, ...] = ALL, kind: str = "DRAPlugin", tag: str = "") -> None:
        self.reg_socket, self.dra_socket = root / "reg" / f"{NAME}{tag}-reg.sock", root / f"dra{tag}.sock"
        self.versions, self.kind = versions, kind
        self.notified: list[tuple[bool, str]] = []
        self.calls: list[tuple[str, list[str]]] = []  # (method path, claim uids)
        self.skip: set[str] = set()  # uids left out of the answers
        self.unavailable = 0  # answer UNAVAILABLE this many times first
        self.fail: grpc.StatusCode | None = None
        self.health: queue.Queue[hp.NodeWatchResourcesResponse | None] = queue.Queue()  # None: end the stream
        self.watches = 0
        self.server = grpc.server(ThreadPoolExecutor(8))
        handlers = {REGISTRATION_SERVICE: {
            "GetInfo": _unary(self.get_info, reg.InfoRequest, reg.PluginInfo),
            "NotifyRegistrationStatus": _unary(self.notify, reg.RegistrationStatus, reg.RegistrationStatusResponse)}}
        for service in DRA_SERVICES:
            handlers[service] = {
                "NodePrepareResources": _unary(lambda r, c, s=service: self.prepare(s, r, c),
                                               dra.NodePrepareResourcesRequest, dra.NodePrepareResourcesResponse),
                "NodeUnprepareResources": _unary(lambda r, c, s=service: self.unprepare(s, r, c),
                                                 dra.NodeUnprepareResourcesRequest, dra.NodeUnprepareResourcesResponse)}
        for service in HEALTH_SERVICES:
            handlers[service] = {"NodeWatchResources": grpc.unary_stream_rpc_method_handler(
                self.watch, hp.NodeWatchResourcesRequest.FromString, hp.NodeWatchResourcesResponse.SerializeToString)}
        for service, methods in handlers.items():
            self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        self.server.add_insecure_port(f"unix:{self.reg_socket}")
        self.server.add_insecure_port(f"unix:{self.dra_socket}")

    def get_info(self, request: Any, context: Any) -> reg.PluginInfo:
        return reg.PluginInfo(type=self.kind, name=NAME, endpoint=str(self.dra_socket),
                              supported_versions=self.versions)

    def notify(self, request: Any, context: Any) -> reg.RegistrationStatusResponse:
        self.notified.append((request.plugin_registered, request.error))
        return reg.RegistrationStatusResponse()

    def _called(self, path: str, request: Any, context: Any) -> None:
        self.calls.append((path, [c.uid for c in request.claims]))
        if self.unavailable:
            self.unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        if self.fail is not None:
            context.abort(self.fail, "broken on purpose")

    def prepare(self, service: str, request: Any, context: Any) -> dra.NodePrepareResourcesResponse:
        self._called(f"/{service}/NodePrepareResources", request, context)
        return dra.NodePrepareResourcesResponse(claims={c.uid: dra.NodePrepareResourceResponse(devices=[dra.Device(
            request_names=["req"], pool_name="pool", device_name=f"dev-{c.name}",
            cdi_device_ids=[f"{NAME}/claim={c.uid}"])]) for c in request.claims if c.uid not in self.skip})

    def unprepare(self, service: str, request: Any, context: Any) -> dra.NodeUnprepareResourcesResponse:
        self._called(f"/{service}/NodeUnprepareResources", request, context)
        return dra.NodeUnprepareResourcesResponse(claims={c.uid: dra.NodeUnprepareResourceResponse()
                                                          for c in request.claims if c.uid not in self.skip})

    def watch(self, request: Any, context: Any) -> Iterator[hp.NodeWatchResourcesResponse]:
        self.watches += 1
        while context.is_active():
            try:
                message = self.health.get(timeout=0.05)
            except queue.Empty:
                continue
            if message is None:
                return
            yield message


def health_message(state: hp.HealthStatus, message: str = "") -> hp.NodeWatchResourcesResponse:
    return hp.NodeWatchResourcesResponse(devices=[hp.DeviceHealth(
        device=hp.DeviceIdentifier(pool_name="pool", device_name="dev-0"), health=state, last_updated_time=1700000000,
        health_check_timeout_seconds=30, message=message)])


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_socket_dir()
    (path / "reg").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet(root: Path) -> Iterator[DraKubelet]:
    with DraKubelet(root / "reg") as standin:
        yield standin


@pytest.fixture
def plugins() -> Iterator[list[FakeDraPlugin]]:
    started: list[FakeDraPlugin] = []
    yield started
    for plugin in started:
        plugin.server.stop(grace=None)


@pytest.fixture
def serve(root: Path, plugins: list[FakeDraPlugin]) -> Any:
    def start(**kwargs: Any) -> FakeDraPlugin:
        plugin = FakeDraPlugin(root, **kwargs)
        plugins.append(plugin)
        plugin.server.start()
        return plugin
    return start


def test_a_v1_plugin_registers_with_v1_and_its_health_service(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve()
    view = kubelet.wait_registered(NAME)
    assert (view.dra_service, view.health_service, view.endpoint) == (DRA_V1, HEALTH_V1, str(plugin.dra_socket))
    wait_until(lambda: plugin.notified == [(True, "")], 5, "the registration notified")
    assert (NAME, ALL) in kubelet.registrations


def test_a_v1beta1_only_plugin_is_called_under_v1beta1(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve(versions=(DRA_V1BETA1,))
    view = kubelet.wait_registered(NAME)
    assert (view.dra_service, view.health_service) == (DRA_V1BETA1, None)
    kubelet.prepare(NAME, [("ns", "u1", "c1")])
    assert plugin.calls == [(f"/{DRA_V1BETA1}/NodePrepareResources", ["u1"])]


@pytest.mark.parametrize(("versions", "kind", "words"), [
    (("v0.DRAPlugin", HEALTH_V1), "DRAPlugin", ["none of the supported versions", "v0.DRAPlugin", DRA_V1]),
    (ALL, "CSIPlugin", ["plugin type", "CSIPlugin"]),
])
def test_a_plugin_the_kubelet_cannot_use_is_told_why(kubelet: DraKubelet, serve: Any, versions: tuple[str, ...],
                                                      kind: str, words: list[str]) -> None:
    plugin = serve(versions=versions, kind=kind)
    wait_until(lambda: bool(plugin.notified), 5, "the registration notified")
    registered, error = plugin.notified[0]
    assert not registered and all(word in error for word in words)
    assert NAME not in kubelet.plugins and error in kubelet.errors


def test_prepare_and_unprepare_round_trip_with_a_claim_left_out(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve()
    kubelet.wait_registered(NAME)
    plugin.skip = {"u2"}
    answers = kubelet.prepare(NAME, [("ns", "u1", "c1"), ("ns", "u2", "c2")])
    device = answers["u1"].devices[0]
    assert (answers["u1"].error, device.device, device.pool, device.cdi_ids) == ("", "dev-c1", "pool",
                                                                                [f"{NAME}/claim=u1"])
    assert answers["u2"].error == "plugin answered no result for claim u2" and answers["u2"].devices == []
    assert kubelet.prepared == {"u1": (NAME, "ns", "c1")}
    assert kubelet.unprepare(NAME, [("ns", "u1", "c1"), ("ns", "u2", "c2")]) == {
        "u1": "", "u2": "plugin answered no result for claim u2"}
    assert kubelet.prepared == {}


def test_unavailable_is_retried_and_other_errors_raise(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve()
    kubelet.wait_registered(NAME)
    plugin.unavailable = 2
    assert kubelet.prepare(NAME, [("ns", "u1", "c1")], timeout=5)["u1"].error == ""
    assert len(plugin.calls) == 3
    plugin.fail = grpc.StatusCode.INTERNAL
    with pytest.raises(DraCallFailed) as failed:
        kubelet.prepare(NAME, [("ns", "u2", "c2")])
    assert (failed.value.code, failed.value.details) == (grpc.StatusCode.INTERNAL, "broken on purpose")
    with pytest.raises(DraCallFailed, match="not.example.com is not registered"):
        kubelet.unprepare("not.example.com", [("ns", "u1", "c1")])


def test_health_changes_are_seen_and_an_ended_stream_means_unknown(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve()
    kubelet.wait_registered(NAME)
    key = ("pool", "dev-0")
    plugin.health.put(health_message(hp.HEALTHY))
    kubelet.wait_health(NAME, lambda h: key in h and h[key].health == "Healthy")
    plugin.health.put(health_message(hp.UNHEALTHY, "fan stopped"))
    entry = kubelet.wait_health(NAME, lambda h: h[key].health == "Unhealthy")[key]
    assert (entry.message, entry.last_updated, entry.timeout_s) == ("fan stopped", 1700000000, 30)
    plugin.health.put(health_message(hp.HEALTHY, "x" * 1025))
    wait_until(lambda: len(kubelet.health_messages(NAME)) == 3, 5, "the third message")
    assert kubelet.health(NAME)[key].health == "Unhealthy" and "longer than 1024 bytes" in kubelet.errors[-1]
    plugin.health.put(None)  # the stream ends: Unknown, and it is opened again
    kubelet.wait_health(NAME, lambda h: h[key].health == "Unknown")
    wait_until(lambda: plugin.watches == 2, 5, "the stream reopened")
    plugin.health.put(health_message(hp.HEALTHY))
    kubelet.wait_health(NAME, lambda h: h[key].health == "Healthy")


def test_a_kubelet_restart_registers_again_and_a_reboot_prepares_again(kubelet: DraKubelet, serve: Any) -> None:
    plugin = serve()
    kubelet.wait_registered(NAME)
    before = kubelet.prepare(NAME, [("ns", "u1", "c1")])["u1"]
    kubelet.restart()
    kubelet.wait_registered(NAME)
    wait_until(lambda: plugin.notified == [(True, "")] * 2, 5, "the second registration notified")
    assert kubelet.prepared == {"u1": (NAME, "ns", "c1")}
    assert kubelet.reboot_replay(NAME) == {"u1": before}
    assert plugin.calls[-1] == (f"/{DRA_V1}/NodePrepareResources", ["u1"])
    assert kubelet.reboot_replay("other.example.com") == {}


def test_removal_replacement_and_late_servers(kubelet: DraKubelet, serve: Any, root: Path) -> None:
    early = socket.socket(socket.AF_UNIX)  # a socket file with no server behind it yet
    early.bind(str(root / "reg" / f"{NAME}-reg.sock"))
    wait_until(lambda: any("GetInfo" in e for e in kubelet.errors), 5, "a failed GetInfo")
    early.close()
    first = serve()  # the server comes up late on that path: registered all the same
    assert kubelet.wait_registered(NAME).socket == first.reg_socket
    second = serve(tag="-2")  # a rolling update: the newer registration replaces the first
    wait_until(lambda: kubelet.plugins[NAME].socket == second.reg_socket, 5, "the newer registration")
    first.server.stop(grace=None).wait(5)
    first.reg_socket.unlink(missing_ok=True)
    scans = kubelet.scans
    wait_until(lambda: kubelet.scans > scans + 1, 5, "a scan after the removal")
    assert kubelet.plugins[NAME].endpoint == str(second.dra_socket)
    second.health.put(health_message(hp.HEALTHY))
    kubelet.wait_health(NAME, lambda h: bool(h) and h[("pool", "dev-0")].health == "Healthy")
    second.reg_socket.unlink()  # the plugin goes away: deregistered, its devices Unknown
    wait_until(lambda: NAME not in kubelet.plugins, 5, "deregistration")
    assert kubelet.health(NAME)[("pool", "dev-0")].health == "Unknown"


def _get(api: FakeApiServer, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_fake_api_server_answers_claims() -> None:
    api = FakeApiServer("node-a")
    try:
        results = [{"request": "gpus", "driver": NAME, "pool": "p", "device": d, "shareID": "s"} for d in "ab"]
        obj = api.claims.add("ns", "c1", results, uid="u1")
        path = "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/"
        code, body = _get(api, path + "c1")
        assert code == 200 and body == obj and body["metadata"]["uid"] == "u1"
        assert body["spec"]["devices"]["requests"] == [
            {"name": "gpus", "exactly": {"deviceClassName": "multidp", "count": 2}}]
        assert body["status"]["allocation"]["devices"]["results"][1] == results[1]
        again = api.claims.add("ns", "c1", results, allocated=False)
        assert "status" not in _get(api, path + "c1")[1] and again["metadata"]["uid"] != "u1"
        api.claims.remove("ns", "c1")
        code, body = _get(api, path + "c1")
        assert (code, body["reason"], body["message"]) == (404, "NotFound",
                                                           'resourceclaims.resource.k8s.io "c1" not found')
        assert _get(api, "/apis/resource.k8s.io/v1beta1/namespaces/ns/resourceclaims/c1")[0] == 404
        api.claims.forbidden_claims = True
        assert _get(api, path + "c1")[1]["reason"] == "Forbidden" and api.claims.gets == 4
        api.claims.forbidden_claims, api.stall_gets = False, True
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(api.url + path + "c1", timeout=0.2)
        assert api.stalled == 1 and api.claims.gets == 4
        with pytest.raises(ValueError, match="device"):
            api.claims.add("ns", "bad", [{"request": "r", "driver": NAME, "pool": "p"}])
    finally:
        api.close()
