"""The fake API server's ResourceSlices (list, watch, create, update, delete, validation) and the scheduler
stand-in that allocates claims from them."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from multidp.testing import slices as slices_module
from multidp.testing.apiserver import FakeApiServer
from multidp.testing.claims import ClaimStore
from multidp.testing.scheduler import SchedulerStandIn, Unschedulable, tolerates

PATH = "/apis/resource.k8s.io/v1/resourceslices"
DRIVER = "gpu.multidp.io"
UNHEALTHY = {"key": "multidp.io/unhealthy", "value": "xid-79", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeApiServer]:
    made = FakeApiServer("node-a")
    yield made
    made.close()


@pytest.fixture
def api(server: FakeApiServer) -> FakeApiServer:
    """The module's server (each one takes 0.5 s to shut down) with fresh stores and switches."""
    server.drop_watches()
    server.slices, server.claims, server.forbidden = slices_module.SliceStore(), ClaimStore(), False
    return server


def device(name: str, taint: bool = False, attributes: dict[str, int] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "attributes": {key: {"int": value}
                                                          for key, value in (attributes or {}).items()}}
    if taint:
        entry["taints"] = [dict(UNHEALTHY)]
    return entry


def new_slice(devices: list[dict[str, Any]], node: str = "node-a", driver: str = DRIVER, resource: str = "gpu",
              generation: int = 1, count: int = 1) -> dict[str, Any]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"generateName": f"{node}-{driver}-"},
            "spec": {"driver": driver, "nodeName": node, "devices": devices,
                     "pool": {"name": f"{node}/{resource}", "generation": generation, "resourceSliceCount": count}}}


def call(api: FakeApiServer, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", api.server_address[1], timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def create(api: FakeApiServer, obj: dict[str, Any]) -> dict[str, Any]:
    code, body = call(api, "POST", PATH, obj)
    assert code == 201, body
    return body


class Watch:
    """A watch read on a thread of its own: ``events`` fills as lines come; ``ended`` says how it ended."""

    def __init__(self, api: FakeApiServer, query: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", api.server_address[1], timeout=10)
        self.connection.request("GET", f"{PATH}?watch=true&{query}")
        self.answer = self.connection.getresponse()
        self.events: list[dict[str, Any]] = []
        self.ended: str | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self.answer.readline():
                self.events.append(json.loads(line))
            self.ended = "cleanly"
        except (http.client.HTTPException, OSError) as exc:
            self.ended = type(exc).__name__
        self.done.set()

    def kinds(self) -> list[tuple[str, str]]:
        return [(event["type"], event["object"].get("metadata", {}).get("name", "")) for event in self.events]


# The store ------------------------------------------------------------------------------------------


def test_create_names_from_generate_name_and_lists_with_field_selectors(api: FakeApiServer) -> None:
    first = create(api, new_slice([device("gpu-0")]))
    create(api, new_slice([device("gpu-0")], node="node-b"))
    create(api, new_slice([device("nic-0")], driver="nic.multidp.io", resource="nic"))
    name = first["metadata"]["name"]
    assert name.startswith("node-a-gpu.multidp.io-") and len(name) == len("node-a-gpu.multidp.io-") + 5
    assert first["metadata"]["uid"] and first["metadata"]["resourceVersion"]

    def names(selector: str) -> list[tuple[str, str]]:
        code, body = call(api, "GET", f"{PATH}?fieldSelector={selector}")
        assert code == 200 and body["kind"] == "ResourceSliceList" and body["metadata"]["resourceVersion"]
        return sorted((item["spec"]["nodeName"], item["spec"]["driver"]) for item in body["items"])

    assert names("spec.nodeName=node-a") == [("node-a", DRIVER), ("node-a", "nic.multidp.io")]
    assert names(f"spec.nodeName=node-a,spec.driver={DRIVER}") == [("node-a", DRIVER)]
    assert names(f"spec.driver!={DRIVER}") == [("node-a", "nic.multidp.io")]
    assert call(api, "GET", f"{PATH}/{name}") == (200, api.slices.get(name))
    code, body = call(api, "GET", f"{PATH}?fieldSelector=spec.pool.name=x")
    assert code == 400 and "spec.pool.name" in body["message"]


def test_node_has_a_stable_uid(api: FakeApiServer) -> None:
    before = call(api, "GET", "/api/v1/nodes/node-a")[1]["metadata"]["uid"]
    api.set_labels(x="1")
    assert before and call(api, "GET", "/api/v1/nodes/node-a")[1]["metadata"]["uid"] == before == api.uid


def test_create_refuses_a_name_clash_and_a_resource_version(api: FakeApiServer) -> None:
    named = new_slice([device("gpu-0")])
    named["metadata"] = {"name": "fixed"}
    create(api, named)
    code, body = call(api, "POST", PATH, named)
    assert (code, body["reason"]) == (409, "AlreadyExists") and '"fixed" already exists' in body["message"]
    named["metadata"] = {"name": "other", "resourceVersion": "5"}
    assert call(api, "POST", PATH, named)[0] == 500


def test_update_checks_the_resource_version_and_immutable_fields(api: FakeApiServer) -> None:
    stored = create(api, new_slice([device("gpu-0")]))
    name, version = stored["metadata"]["name"], stored["metadata"]["resourceVersion"]
    stored["spec"]["pool"]["generation"] = 2
    code, updated = call(api, "PUT", f"{PATH}/{name}", stored)
    assert code == 200 and updated["metadata"]["resourceVersion"] != version
    assert updated["metadata"]["generation"] == 2 and updated["metadata"]["uid"] == stored["metadata"]["uid"]
    code, body = call(api, "PUT", f"{PATH}/{name}", stored)  # the old resourceVersion
    assert (code, body["reason"]) == (409, "Conflict")
    assert call(api, "PUT", f"{PATH}/absent", {**updated, "metadata": {"name": "absent"}})[0] == 404
    assert call(api, "PUT", f"{PATH}/other", updated)[0] == 400  # the body names another slice
    listed = call(api, "GET", PATH)[1]["items"][0]  # as listed: no kind and apiVersion, taken from the URL
    assert "kind" not in listed and call(api, "PUT", f"{PATH}/{name}", listed)[0] == 200
    assert call(api, "PUT", f"{PATH}/{name}", {**listed, "kind": "DeviceClass"})[0] == 400
    updated = call(api, "GET", f"{PATH}/{name}")[1]
    updated["spec"]["driver"] = "other.multidp.io"
    code, body = call(api, "PUT", f"{PATH}/{name}", updated)
    assert code == 422 and "spec.driver" in body["message"]


def test_delete_one_and_delete_all(api: FakeApiServer) -> None:
    name = create(api, new_slice([device("gpu-0")]))["metadata"]["name"]
    create(api, new_slice([device("gpu-0")], node="node-b"))
    create(api, new_slice([device("nic-0")], driver="nic.multidp.io", resource="nic"))
    create(api, new_slice([device("nic-0")], driver="nic.multidp.io", resource="nic", node="node-b"))
    assert call(api, "DELETE", f"{PATH}/{name}")[0] == 200
    assert call(api, "DELETE", f"{PATH}/{name}")[0] == 404
    assert api.slices.delete_all(driver="nic.multidp.io", node="node-b") == 1
    assert api.slices.delete_all(node="node-b") == 1
    assert [obj["spec"]["driver"] for obj in api.slices.slices()] == ["nic.multidp.io"]


def test_conflict_next_answers_writes_409_and_writes_counts_them(api: FakeApiServer) -> None:
    api.slices.conflict_next = 2
    assert call(api, "POST", PATH, new_slice([device("gpu-0")]))[0] == 409
    assert call(api, "POST", PATH, new_slice([device("gpu-0")]))[0] == 409
    create(api, new_slice([device("gpu-0")]))
    assert api.slices.writes == 3 and len(api.slices.slices()) == 1


def test_forbidden_refuses_slice_requests(api: FakeApiServer) -> None:
    api.forbidden = True
    assert call(api, "GET", PATH)[0] == 403
    assert call(api, "POST", PATH, new_slice([device("gpu-0")]))[0] == 403 and not api.slices.slices()


# Validation -----------------------------------------------------------------------------------------

MANY_ATTRIBUTES = {f"a{i}": i for i in range(33)}


@pytest.mark.parametrize(("devices", "change", "field"), [
    ([device(f"d{i}") for i in range(129)], None, "spec.devices"),
    ([device(f"d{i}", taint=True) for i in range(65)], None, "spec.devices"),
    ([device("d0", attributes=MANY_ATTRIBUTES)], None, "spec.devices[0]"),
    ([device("GPU_0")], None, "spec.devices[0].name"),
    ([device("d0"), device("d0")], None, "spec.devices[1].name"),
    ([{"name": "d0", "attributes": {"x": {"string": "y" * 65}}}], None, "spec.devices[0].attributes[x].string"),
    ([{"name": "d0", "attributes": {"x": {"version": "12.4"}}}], None, "spec.devices[0].attributes[x].version"),
    ([{"name": "d0", "attributes": {"bad-name": {"int": 1}}}], None, "spec.devices[0].attributes[bad-name]"),
    ([{"name": "d0", "capacity": {"memory": {"value": "80 GB"}}}], None, "spec.devices[0].capacity[memory].value"),
    ([{"name": "d0", "taints": [{**UNHEALTHY, "effect": "Sometimes"}]}], None, "spec.devices[0].taints[0].effect"),
    ([device("d0")], lambda spec: spec.pop("driver"), "spec.driver"),
    ([device("d0")], lambda spec: spec.pop("pool"), "spec.pool"),
    ([device("d0")], lambda spec: spec["pool"].update(name="Node/GPU"), "spec.pool.name"),
    ([device("d0")], lambda spec: spec.pop("nodeName"), "spec"),
])
def test_invalid_slices_are_refused_naming_the_field(api: FakeApiServer, devices: list[dict[str, Any]],
                                                     change: Any, field: str) -> None:
    obj = new_slice(devices)
    if change is not None:
        change(obj["spec"])
    code, body = call(api, "POST", PATH, obj)
    assert (code, body["reason"]) == (422, "Invalid"), body
    assert field in [cause["field"] for cause in body["details"]["causes"]], body
    assert api.slices.invalid == [body["message"]] and not api.slices.slices()


def test_the_limits_themselves_are_allowed(api: FakeApiServer) -> None:
    create(api, new_slice([device(f"d{i}") for i in range(128)]))
    create(api, new_slice([device(f"t{i}", taint=True) for i in range(64)], resource="other"))
    create(api, new_slice([{"name": "d0", "attributes": {f"a{i}": {"bool": True} for i in range(31)},
                            "capacity": {"memory": {"value": "80Gi"}}}], resource="third"))
    assert api.slices.invalid == []


def test_the_schema_refuses_what_the_rules_do_not_know(api: FakeApiServer) -> None:
    pytest.importorskip("kubernetes_validate")
    obj = new_slice([{**device("d0"), "colour": "blue"}])
    code, body = call(api, "POST", PATH, obj)
    assert code == 422 and "colour" in body["message"] and body["details"]["causes"][0]["field"] == "spec.devices.0"
    api.slices.validate = False
    create(api, obj)
    assert len(api.slices.invalid) == 1


def test_drop_taints_drops_them_silently(api: FakeApiServer) -> None:
    api.slices.drop_taints = True
    stored = create(api, new_slice([device(f"t{i}", taint=True) for i in range(65)]))
    assert len(stored["spec"]["devices"]) == 65 and not any("taints" in d for d in stored["spec"]["devices"])


# Watch ---------------------------------------------------------------------------------------------


def test_watch_streams_the_changes_it_selects(api: FakeApiServer) -> None:
    existing = create(api, new_slice([device("gpu-0")]))["metadata"]["name"]
    version = call(api, "GET", PATH)[1]["metadata"]["resourceVersion"]
    watch = Watch(api, f"resourceVersion={version}&fieldSelector=spec.nodeName=node-a&timeoutSeconds=1"
                       "&allowWatchBookmarks=true")
    created = create(api, new_slice([device("gpu-1")]))
    create(api, new_slice([device("gpu-0")], node="node-b"))  # not selected
    created["spec"]["pool"]["generation"] = 2
    assert call(api, "PUT", f"{PATH}/{created['metadata']['name']}", created)[0] == 200
    assert call(api, "DELETE", f"{PATH}/{existing}")[0] == 200
    assert watch.done.wait(5) and watch.ended == "cleanly"
    name = created["metadata"]["name"]
    assert watch.kinds() == [("ADDED", name), ("MODIFIED", name), ("DELETED", existing), ("BOOKMARK", "")]


def test_watch_without_a_version_starts_with_what_there_is(api: FakeApiServer) -> None:
    name = create(api, new_slice([device("gpu-0")]))["metadata"]["name"]
    watch = Watch(api, "timeoutSeconds=0.2")
    assert watch.done.wait(5) and watch.kinds() == [("ADDED", name)]


def test_dropped_watches_end_without_the_last_chunk(api: FakeApiServer) -> None:
    # A raw socket: http.client reads a stream cut short as one that ended.
    with socket.create_connection(("127.0.0.1", api.server_address[1]), timeout=5) as raw:
        raw.sendall(f"GET {PATH}?watch=true&resourceVersion=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        create(api, new_slice([device("gpu-0")]))
        received = b""
        while b'"ADDED"' not in received:
            chunk = raw.recv(65536)
            assert chunk, received
            received += chunk
        api.drop_watches()
        while chunk := raw.recv(65536):
            received += chunk
    assert b'"ADDED"' in received and not received.endswith(b"0\r\n\r\n")


def test_watch_from_a_forgotten_version_is_expired(api: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices_module, "MAX_HISTORY", 1)
    for index in range(3):
        create(api, new_slice([device("gpu-0")], resource=f"r{index}"))
    watch = Watch(api, "resourceVersion=1")
    assert watch.done.wait(5) and watch.events[0]["type"] == "ERROR" and watch.events[0]["object"]["code"] == 410
    assert call(api, "GET", f"{PATH}?watch=true&resourceVersion=x")[0] == 400


# The scheduler stand-in -----------------------------------------------------------------------------


def test_tolerations_match_as_kubernetes_matches_them() -> None:
    assert tolerates([{"operator": "Exists"}], UNHEALTHY)
    assert tolerates([{"key": "multidp.io/unhealthy", "operator": "Exists", "effect": "NoSchedule"}], UNHEALTHY)
    assert tolerates([{"key": "multidp.io/unhealthy", "value": "xid-79"}], UNHEALTHY)
    assert not tolerates([{"key": "multidp.io/unhealthy", "value": "other"}], UNHEALTHY)
    assert not tolerates([{"key": "multidp.io/unhealthy", "operator": "Exists", "effect": "NoExecute"}], UNHEALTHY)
    with pytest.raises(ValueError, match="operator"):
        tolerates([{"key": "k", "operator": "Lt"}], UNHEALTHY)


def test_scheduler_uses_the_newest_complete_generation_only(api: FakeApiServer) -> None:
    scheduler = SchedulerStandIn(api)
    create(api, new_slice([device("old-0")], generation=1))
    claim = scheduler.allocate("ns", "first", DRIVER, "gpu")
    assert [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]] == ["old-0"]
    api.claims.remove("ns", "first")
    create(api, new_slice([device("new-0")], generation=2, count=2))  # the second slice not yet there
    with pytest.raises(Unschedulable, match="pool node-a/gpu generation 2: 1 slices of 2"):
        scheduler.allocate("ns", "second", DRIVER, "gpu")  # not the older generation either
    create(api, new_slice([device("new-1")], generation=2, count=2))
    claim = scheduler.allocate("ns", "second", DRIVER, "gpu", count=2)
    results = claim["status"]["allocation"]["devices"]["results"]
    assert sorted((r["request"], r["pool"], r["device"]) for r in results) == [("req", "node-a/gpu", "new-0"),
                                                                              ("req", "node-a/gpu", "new-1")]
    assert api.claims.get("ns", "second") == claim


def test_scheduler_skips_untolerated_taints_and_held_devices(api: FakeApiServer) -> None:
    scheduler = SchedulerStandIn(api)
    create(api, new_slice([device("gpu-0", taint=True), device("gpu-1"), device("gpu-2")]))
    create(api, new_slice([device("gpu-9")], node="node-b"))
    devices = [scheduler.allocate("ns", f"c{i}", DRIVER, "gpu", node="node-a")["status"]["allocation"]["devices"]
               ["results"][0]["device"] for i in range(2)]
    assert devices == ["gpu-1", "gpu-2"]
    with pytest.raises(Unschedulable) as refused:
        scheduler.allocate("ns", "c2", DRIVER, "gpu", node="node-a")
    message = str(refused.value)
    assert "ns/c2" in message and "2 allocated to other claims" in message and "gpu-0 (multidp.io/unhealthy" in message
    claim = scheduler.allocate("ns", "c2", DRIVER, "gpu", node="node-a",
                               tolerations=[{"key": "multidp.io/unhealthy", "operator": "Exists"}])
    assert claim["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-0"
    # Allocating a claim again under its own name does not count its own devices as taken.
    again = scheduler.allocate("ns", "c0", DRIVER, "gpu", node="node-a")
    assert again["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-1"


def test_unschedulable_names_incomplete_pools_and_missing_slices(api: FakeApiServer) -> None:
    scheduler = SchedulerStandIn(api)
    with pytest.raises(Unschedulable, match=r"0 free \(0 slices"):
        scheduler.allocate("ns", "c", DRIVER, "gpu")
    create(api, new_slice([device("gpu-0")], count=3))
    with pytest.raises(Unschedulable, match="pool node-a/gpu generation 1: 1 slices of 3"):
        scheduler.allocate("ns", "c", DRIVER, "gpu")
    with pytest.raises(ValueError, match="count"):
        scheduler.allocate("ns", "c", DRIVER, "gpu", count=0)
