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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from multidp.dra.attributes import listed
from multidp.dra.sliceapi import Conflict, SliceApi
from multidp.kubeapi import ApiProblem, NoCredentials, make_client
from multidp.model import Device

log = logging.getLogger(__name__)

RESYNC_S = 60.0
MAX_DEVICES, MAX_TAINTED = 128, 64
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


@dataclass(frozen=True)
class Offered:
    """One device as the front-end offers it: its pool and DRA name, the resource, the device, its health."""

    pool: str
    name: str
    resource: str
    device: Device
    healthy: bool


class SlicePublisher:
    """Keeps ``driver``'s ResourceSlices on ``node`` equal to what ``offered()`` returns."""

    def __init__(self, driver: str, dra_name: str, node: str, environ: Mapping[str, str],
                 offered: Callable[[], list[Offered]]) -> None:
        self.driver, self.dra_name, self.node, self.environ, self.offered = driver, dra_name, node, environ, offered
        self.taints_dropped = False
        self.generations: dict[str, int] = {}  # pool -> generation last seen published
        self.last_error = ""
        self.writes = 0
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
        """Stop syncing; with ``withdraw``, delete this driver's slices on this node (best effort)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        if withdraw and self._api is not None:
            try:
                for item in self._api.list():
                    self._api.delete(item["metadata"]["name"])
            except (ApiProblem, Conflict, KeyError, TypeError) as exc:
                log.warning("driver %s: deleting its ResourceSlices failed: %s", self.driver, exc)

    def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stopped.is_set():
            self._wake.wait(RESYNC_S)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._sync()
                delay = BACKOFF_FIRST_S
                self.last_error = ""
            except NoCredentials as exc:
                log.warning("driver %s: ResourceSlices are not published: %s", self.driver, exc)
                self.last_error = str(exc)
                return
            except Conflict:
                self._wake.set()  # list again at once: someone else wrote meanwhile
            except (ApiProblem, KeyError, TypeError, ValueError) as exc:
                self.last_error = f"publishing ResourceSlices failed: {exc}"
                self._once(self.last_error, f"; trying again in {delay:g} s and as the delay grows (up to "
                                            f"{BACKOFF_MAX_S:g} s)")
                if self._stopped.wait(delay):
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)
                self._wake.set()

    def _once(self, message: str, more: str = "") -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.error("driver %s: %s%s", self.driver, message, more)

    def _connect(self) -> SliceApi:
        if self._api is None:
            self._api = SliceApi(make_client(self.environ), self.node, self.dra_name)
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
        api = self._connect()
        have: dict[str, list[dict[str, Any]]] = {}
        for item in api.list():
            have.setdefault(item["spec"]["pool"]["name"], []).append(item)
        for pool, devices in self._desired().items():
            self._sync_pool(api, pool, devices, have.pop(pool, []))
        for pool, stale in have.items():  # a resource that is gone
            for item in stale:
                api.delete(item["metadata"]["name"])
            self.generations.pop(pool, None)

    def _sync_pool(self, api: SliceApi, pool: str, devices: list[dict[str, Any]],
                   slices: list[dict[str, Any]]) -> None:
        if not devices and not slices:
            return
        generations = {s["spec"]["pool"].get("generation", 0) for s in slices}
        if len(generations) == 1 and all(s["spec"]["pool"].get("resourceSliceCount") == len(slices) for s in slices):
            listed_now = sorted((d for s in slices for d in s["spec"].get("devices") or []), key=_name)
            if listed_now == sorted(devices, key=_name):
                self.generations[pool] = generations.pop()
                return
        size = MAX_TAINTED if any("taints" in d for d in devices) else MAX_DEVICES
        chunks = [devices[i:i + size] for i in range(0, len(devices), size)] or [[]]
        generation = max(generations, default=0) + 1
        for index, chunk in enumerate(chunks):
            spec = {"driver": self.dra_name, "nodeName": self.node, "devices": chunk,
                    "pool": {"name": pool, "generation": generation, "resourceSliceCount": len(chunks)}}
            if index < len(slices):
                obj = {**slices[index], "spec": spec}
                written = api.update(obj)
            else:
                written = api.create(self._new_slice(spec))
            self.writes += 1
            self._check_taints(chunk, written)
        for extra in slices[len(chunks):]:
            api.delete(extra["metadata"]["name"])
        self.generations[pool] = generation

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
