"""Publishing one DRA driver's devices as ResourceSlices: one pool per resource, owned by the Node.

A thread per driver keeps the API in step with the devices. It wakes on a change, on the kubelet
registering the driver (a starting kubelet deletes the node's slices), and every RESYNC_S otherwise.
It lists the driver's slices on this node and leaves alone a pool whose newest generation already
lists the same devices. Otherwise it writes the pool again under the next generation, at most 128
devices per slice, 64 once any device carries a taint. It updates the slices it has, creates what
is missing and deletes the rest; pools that are gone lose their slices. A 409 makes it list again
and retry.

Taints carry health (:mod:`multidp.dra.attributes`). An API server that drops them (the device taints
feature gate off) is noticed by reading the written slice back. From then on, unhealthy devices are
left out of the slices instead, and the log says so once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from multidp.dra.attributes import listed
from multidp.dra.sliceapi import Conflict, SliceApi
from multidp.kubeapi import ApiProblem, LazyClient, NoCredentials
from multidp.model import Device

log = logging.getLogger(__name__)

RESYNC_S = 60.0
STOP_WAIT_S = 30.0  # a sync in flight: a few requests of up to 10 s each
FAST_CONFLICTS = 3  # 409s listed again at once before backing off
MAX_DEVICES, MAX_TAINTED = 128, 64
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


class Offered(msgspec.Struct, frozen=True):
    """One device as the front-end offers it: its pool and DRA name, the resource, the device, its health."""

    pool: str
    name: str
    resource: str
    device: Device
    healthy: bool


class SlicePublisher:
    """Keeps ``driver``'s ResourceSlices on ``node`` equal to what ``offered()`` returns."""

    def __init__(self, driver: str, dra_name: str, node: str, client: LazyClient,
                 offered: Callable[[], list[Offered]]) -> None:
        self.driver, self.dra_name, self.node, self.client, self.offered = driver, dra_name, node, client, offered
        self.taints_dropped = False
        self.generations: dict[str, int] = {}  # pool -> generation last seen published
        self.last_error = ""
        self.writes = 0
        self._sent: dict[str, tuple[dict[str | None, str | None], list[dict[str, Any]]]] = {}  # pool -> last write
        self._api: SliceApi | None = None
        self._node_uid = ""
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._logged: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=f"{driver}-slices", daemon=True)

    def start(self) -> None:
        self._wake.set()
        self._thread.start()

    def changed(self) -> None:
        """The devices or their health changed (or the kubelet registered us): sync soon."""
        self._wake.set()

    def stop(self, withdraw: bool) -> None:
        """Stop syncing; with ``withdraw``, delete this driver's slices on this node (best effort; also those a
        previous run left when this one never published)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT_S)
        if not withdraw:
            return
        try:
            api = self._api or SliceApi(self.client.get(), self.node, self.dra_name)
            for item in api.list():
                api.delete(item["metadata"]["name"])
        except (ApiProblem, Conflict, NoCredentials, KeyError, TypeError) as exc:
            log.warning("driver %s: deleting its ResourceSlices failed: %s", self.driver, exc)

    def _run(self) -> None:
        delay, conflicts = BACKOFF_FIRST_S, 0
        while not self._stopped.is_set():
            self._wake.wait(RESYNC_S)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._sync()
                delay, conflicts = BACKOFF_FIRST_S, 0
                self.last_error = ""
            except NoCredentials as exc:
                log.warning("driver %s: ResourceSlices are not published: %s", self.driver, exc)
                self.last_error = str(exc)
                return
            except Conflict as exc:  # someone else wrote meanwhile: list again at once, a few times
                conflicts += 1
                if conflicts <= FAST_CONFLICTS:
                    self._wake.set()
                    continue
                self._backoff(f"publishing ResourceSlices keeps meeting conflicts: {exc}", delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            except (ApiProblem, KeyError, TypeError, ValueError) as exc:
                self._backoff(f"publishing ResourceSlices failed: {exc}", delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _backoff(self, error: str, delay: float) -> None:
        self.last_error = error
        self._once(error, f"; trying again in {delay:g} s and as the delay grows (up to {BACKOFF_MAX_S:g} s)")
        if not self._stopped.wait(delay):
            self._wake.set()

    def _once(self, message: str, more: str = "") -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.error("driver %s: %s%s", self.driver, message, more)

    def _connect(self) -> SliceApi:
        if self._api is None:
            self._api = SliceApi(self.client.get(), self.node, self.dra_name)
        if not self._node_uid:
            self._node_uid = self._api.node_uid()
        return self._api

    def _desired(self) -> dict[str, list[dict[str, Any]]]:
        pools: dict[str, list[dict[str, Any]]] = {}
        for item in self.offered():
            pools.setdefault(item.pool, [])
            if not item.healthy and self.taints_dropped:
                continue  # the server cannot carry the taint: the device is not offered at all
            entry = listed(item.name, item.device, item.resource, taint=not item.healthy)
            for problem in entry.left_out:
                self._once(f"device {item.device.id}: {problem}; left out of its ResourceSlice")
            pools[item.pool].append(entry.entry)
        return pools

    def _sync(self) -> None:
        """Every pool on its own: one pool's failure neither stops the others nor the removal of gone pools."""
        api = self._connect()
        have: dict[str, list[dict[str, Any]]] = {}
        for item in api.list():
            have.setdefault(item["spec"]["pool"]["name"], []).append(item)
        failures: list[Exception] = []
        for pool, devices in self._desired().items():
            if self._stopped.is_set():
                return
            try:
                self._sync_pool(api, pool, devices, have.pop(pool, []))
            except (ApiProblem, KeyError, TypeError, ValueError) as exc:
                failures.append(exc)
        for pool, stale in have.items():  # a resource that is gone
            for item in stale:
                api.delete(item["metadata"]["name"])
            self.generations.pop(pool, None)
            self._sent.pop(pool, None)
        if failures:
            raise failures[0]

    def _sync_pool(self, api: SliceApi, pool: str, devices: list[dict[str, Any]],
                   slices: list[dict[str, Any]]) -> None:
        if not devices and not slices:
            return
        generations = {s["spec"]["pool"].get("generation", 0) for s in slices}
        wanted = sorted(devices, key=_name)
        if len(generations) == 1 and all(s["spec"]["pool"].get("resourceSliceCount") == len(slices) for s in slices):
            # What the server holds is what this host last sent (its answer adds timeAdded to taints and
            # writes quantities in its own form, so it is compared by name and version), or, after a
            # restart, the same devices as far as the server's normal forms allow.
            held = {s["metadata"].get("name"): s["metadata"].get("resourceVersion") for s in slices}
            if self._sent.get(pool) == (held, wanted) or (
                    pool not in self._sent and _comparable(d for s in slices for d in s["spec"].get("devices") or [])
                    == _comparable(wanted)):
                self.generations[pool] = generations.pop()
                self._sent[pool] = (held, wanted)
                return
        size = MAX_TAINTED if any("taints" in d for d in devices) else MAX_DEVICES
        chunks = [devices[i:i + size] for i in range(0, len(devices), size)] or [[]]
        generation = max(generations, default=0) + 1
        versions: dict[str | None, str | None] = {}
        self._sent.pop(pool, None)
        for index, chunk in enumerate(chunks):
            if self._stopped.is_set():
                return  # a withdrawal follows: write nothing more
            spec = {"driver": self.dra_name, "nodeName": self.node, "devices": chunk,
                    "pool": {"name": pool, "generation": generation, "resourceSliceCount": len(chunks)}}
            if index < len(slices):
                obj = {**slices[index], "spec": spec}
                written = api.update(obj)
            else:
                written = api.create(self._new_slice(spec))
            self.writes += 1
            metadata = written.get("metadata") or {}
            versions[metadata.get("name")] = metadata.get("resourceVersion")
            self._check_taints(chunk, written)
        for extra in slices[len(chunks):]:
            api.delete(extra["metadata"]["name"])
        self.generations[pool] = generation
        self._sent[pool] = (versions, wanted)

    def _new_slice(self, spec: dict[str, Any]) -> dict[str, Any]:
        owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self._node_uid, "controller": True}
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                "metadata": {"generateName": f"{self.node}-{self.dra_name}-", "ownerReferences": [owner]},
                "spec": spec}

    def _check_taints(self, sent: list[dict[str, Any]], written: dict[str, Any]) -> None:
        if self.taints_dropped or not any("taints" in d for d in sent):
            return
        back = {d.get("name"): d for d in (written.get("spec") or {}).get("devices") or []}
        if any("taints" in d and not back.get(d["name"], {}).get("taints") for d in sent):
            self.taints_dropped = True
            log.error("driver %s: the API server dropped the devices' taints (is the DRADeviceTaints feature gate "
                      "off?); unhealthy devices are left out of the ResourceSlices instead", self.driver)
            self._wake.set()


def _name(device: dict[str, Any]) -> str:
    return str(device.get("name", ""))


def _comparable(devices: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Devices without what the server adds or rewrites: taints' timeAdded, and capacity values."""
    plain = []
    for device in devices:
        entry = {k: v for k, v in device.items() if k not in ("taints", "capacity")}
        entry["taints"] = [{k: v for k, v in taint.items() if k != "timeAdded"} for taint in device.get("taints") or []]
        entry["capacity"] = sorted(device.get("capacity") or {})
        plain.append(entry)
    return sorted(plain, key=_name)
