"""A stand-in for the kubelet's PodResources API (``v1.PodResourcesLister/List``) for tests.

It serves what :attr:`FakePodResources.pods` says, one entry per running container, the way the
kubelet answers List: one PodResources per pod, its containers each with their device-plugin devices
and their DRA claims' devices. ``unavailable`` makes List fail with UNAVAILABLE, as a kubelet that is
restarting does; ``hang`` makes it never answer (until :meth:`FakePodResources.stop`), as a stuck one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from multidp.api import podresources_v1_pb2 as podres
from multidp.dra.podresources import LIST, PODRESOURCES_SERVICE

# (namespace, pod, container, {resource: [device IDs]}, [(driver, pool, device)])
RunningContainer = tuple[str, str, str, Mapping[str, Sequence[str]], Sequence[tuple[str, str, str]]]


class FakePodResources:
    """Serves ``pods`` on ``socket_path`` as the kubelet's PodResources socket; :meth:`start` it."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)
        self.pods: list[RunningContainer] = []
        self.unavailable = False
        self.hang = False
        self.calls = 0  # List calls answered or refused
        self._lock = threading.Lock()
        self._server: Any = None
        self._stopped = threading.Event()

    def start(self) -> FakePodResources:
        """Serve on the socket (its folder created if missing); returns the fake."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._stopped.clear()
        server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="podresources"))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PODRESOURCES_SERVICE, {
            LIST: grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=podres.ListPodResourcesRequest.FromString,
                response_serializer=podres.ListPodResourcesResponse.SerializeToString),
        }),))
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        self._stopped.set()
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> FakePodResources:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _list(self, request: podres.ListPodResourcesRequest, context: Any) -> podres.ListPodResourcesResponse:
        with self._lock:
            self.calls += 1
        if self.hang:
            self._stopped.wait()
        if self.unavailable or self.hang:
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet stand-in: PodResources is unavailable")
        return self.response()

    def response(self) -> podres.ListPodResourcesResponse:
        """The List answer for the current :attr:`pods` (containers grouped into their pods, in order)."""
        by_pod: dict[tuple[str, str], podres.PodResources] = {}
        for namespace, pod, container, devices, claimed in list(self.pods):
            entry = by_pod.get((namespace, pod))
            if entry is None:
                entry = by_pod[(namespace, pod)] = podres.PodResources(name=pod, namespace=namespace)
            resources = entry.containers.add(name=container)
            for resource, ids in devices.items():
                resources.devices.add(resource_name=resource, device_ids=list(ids))
            if claimed:
                # One claim per container is enough: List's readers look at the devices, not the claims.
                claim = resources.dynamic_resources.add(claim_name=f"{pod}-{container}", claim_namespace=namespace)
                for driver, pool, device in claimed:
                    claim.claim_resources.add(driver_name=driver, pool_name=pool, device_name=device,
                                              cdi_devices=[podres.CDIDevice(name=f"{driver}/device={device}")])
        return podres.ListPodResourcesResponse(pod_resources=list(by_pod.values()))
