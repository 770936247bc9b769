"""Which devices running pods hold, from the kubelet's PodResources API (``v1.PodResourcesLister/List``).

When a driver moves between the Device Plugin and DRA front-ends, the devices that pods of the old
front-end still hold must stay out of the new one's hands until freed. The kubelet knows: its
PodResources socket lists, per running container, the device-plugin IDs it was allocated and (with the
kubelet feature gate KubeletPodResourcesDynamicResources, beta and on from 1.34) the DRA devices of its
claims. A kubelet without that gate lists no DRA devices at all, which reads the same as none held.

Calls are synchronous: :func:`held` runs on host threads, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import msgspec

from multidp.api import podresources_v1_pb2 as podres
from multidp.api.services import method_path
from multidp.names import base_id

PODRESOURCES_SERVICE = "v1.PodResourcesLister"
LIST = "List"
KUBELET_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
# The kubelet's own PodResources clients accept 16 MiB; gRPC's 4 MiB default is too small for a busy node.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
ClaimDevice = tuple[str, str, str]  # (driver, pool, device), as a ResourceSlice names a device


class PodResourcesUnavailable(Exception):
    """The kubelet's PodResources API could not be asked; the message names the socket and what failed."""


class Held(msgspec.Struct, frozen=True):
    """What running pods hold on this node, as the kubelet answered at one moment.

    ``devices`` maps a resource name to the device IDs held through the device plugin, replica IDs
    (``<id>::<n>``) folded to the device's (the whole device is what moves between front-ends).
    ``claims`` are the DRA devices held through claims. ``pods`` and ``claim_pods`` say which pods
    hold each, for messages (see :meth:`holder` and :meth:`claim_holder`).
    """

    devices: dict[str, frozenset[str]] = msgspec.field(default_factory=dict)
    claims: frozenset[ClaimDevice] = frozenset()
    pods: dict[tuple[str, str], list[str]] = msgspec.field(default_factory=dict)  # (resource, device ID) -> "ns/pod"
    claim_pods: dict[ClaimDevice, list[str]] = msgspec.field(default_factory=dict)

    def holder(self, resource: str, device_id: str) -> str | None:
        """The pods (``namespace/pod``, comma-separated) holding ``device_id`` of ``resource``, or None.

        ``device_id`` may be a replica ID; the device behind it is looked up.
        """
        pods = self.pods.get((resource, base_id(device_id)))
        return ", ".join(pods) if pods else None

    def claim_holder(self, driver: str, pool: str, device: str) -> str | None:
        """The pods (``namespace/pod``, comma-separated) whose claims hold this DRA device, or None."""
        pods = self.claim_pods.get((driver, pool, device))
        return ", ".join(pods) if pods else None


def held(socket: Path = KUBELET_SOCKET, timeout: float = 5.0) -> Held:
    """Ask the kubelet at ``socket`` which devices running pods hold (one List over a fresh channel).

    Raises :class:`PodResourcesUnavailable` when the socket is missing or the call fails.
    """
    socket = Path(socket)
    if not socket.exists():
        raise PodResourcesUnavailable(
            f"the kubelet's PodResources socket {socket} does not exist: mount the kubelet's pod-resources "
            "folder (hostPath /var/lib/kubelet/pod-resources)")
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    try:
        with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
            call = channel.unary_unary(method_path(PODRESOURCES_SERVICE, LIST),
                                       request_serializer=podres.ListPodResourcesRequest.SerializeToString,
                                       response_deserializer=podres.ListPodResourcesResponse.FromString)
            response: podres.ListPodResourcesResponse = call(podres.ListPodResourcesRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        raise PodResourcesUnavailable(
            f"asking the kubelet's PodResources API at {socket} which devices pods hold failed: "
            f"{_status(exc)}") from exc
    return _from_response(response)


def _status(exc: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call (a channel error may carry neither)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    name = code.name if code is not None else "error"
    return f"{name}: {details or exc}"


def _from_response(response: podres.ListPodResourcesResponse) -> Held:
    """Fold the kubelet's per-container answer into what is held and by whom."""
    devices: dict[str, set[str]] = {}
    pods: dict[tuple[str, str], list[str]] = {}
    claim_pods: dict[ClaimDevice, list[str]] = {}
    for pod in response.pod_resources:
        who = f"{pod.namespace}/{pod.name}"
        for container in pod.containers:
            for entry in container.devices:
                for device_id in entry.device_ids:
                    base = base_id(device_id)
                    devices.setdefault(entry.resource_name, set()).add(base)
                    _add(pods.setdefault((entry.resource_name, base), []), who)
            for dynamic in container.dynamic_resources:
                for claimed in dynamic.claim_resources:
                    key = (claimed.driver_name, claimed.pool_name, claimed.device_name)
                    _add(claim_pods.setdefault(key, []), who)
    return Held(devices={resource: frozenset(ids) for resource, ids in devices.items()},
                claims=frozenset(claim_pods), pods=pods, claim_pods=claim_pods)


def _add(holders: list[str], who: str) -> None:
    """Name a pod once however many of its containers (or replicas) hold the device."""
    if who not in holders:
        holders.append(who)
