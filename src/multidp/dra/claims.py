"""Reading a ResourceClaim from the API server: which of its devices this driver must prepare.

Prepare GETs the claim (``resource.k8s.io/v1``, Kubernetes 1.34 and later) and checks it is the claim
the kubelet meant (same UID: a claim deleted and created again under the same name is another claim)
and that it is allocated; it then takes the allocation results of its own DRA driver. The request is
made on lightkube's client (:mod:`multidp.kubeapi`), on the calling thread, under a timeout.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec

from multidp.kubeapi import ApiProblem, LazyClient, NoCredentials, check_status, json_object, read_at_most

REQUEST_TIMEOUT_S = 10.0
MAX_CLAIM_BYTES = 4 << 20


class ClaimProblem(Exception):
    """The claim cannot be prepared; the message says which claim and why."""


class ClaimRef(msgspec.Struct, frozen=True):
    """A claim as the kubelet names it."""

    namespace: str
    uid: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"


class AllocatedDevice(msgspec.Struct, frozen=True):
    """One allocation result of the claim for this driver."""

    request: str
    pool: str
    device: str
    share_id: str | None = None
    admin: bool = False


class ClaimReader:
    """GETs claims for one DRA driver, on its API client (made on first use)."""

    def __init__(self, client: LazyClient) -> None:
        self.client = client

    def _client(self) -> Any:
        try:
            return self.client.get()
        except NoCredentials as exc:
            raise ClaimProblem(f"cannot read claims from the API server: {exc}") from exc

    def read(self, claim: ClaimRef, driver_name: str) -> list[AllocatedDevice]:
        """The claim's allocation results for ``driver_name``; ClaimProblem naming what is wrong."""
        http = self._client()
        httpx = importlib.import_module(type(http).__module__.partition(".")[0])
        path = (f"/apis/resource.k8s.io/v1/namespaces/{quote(claim.namespace, safe='')}"
                f"/resourceclaims/{quote(claim.name, safe='')}")
        try:
            with http.stream("GET", path, timeout=httpx.Timeout(REQUEST_TIMEOUT_S)) as answer:
                check_status(answer)
                body = read_at_most(answer, MAX_CLAIM_BYTES)
            obj = json_object(body, "the ResourceClaim")
        except ApiProblem as exc:
            if exc.kind == "HTTP 404":
                raise ClaimProblem(f"claim {claim}: not found in the API server") from exc
            raise ClaimProblem(f"claim {claim}: reading it from the API server failed: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ClaimProblem(f"claim {claim}: reading it from the API server failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        return results_for(obj, claim, driver_name)


def results_for(obj: Mapping[str, Any], claim: ClaimRef, driver_name: str) -> list[AllocatedDevice]:
    """The allocation results of ``driver_name`` in the claim object ``obj`` (checked against ``claim``)."""
    def mapping(value: object) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    uid = mapping(obj.get("metadata")).get("uid")
    if uid != claim.uid:
        raise ClaimProblem(f"claim {claim}: the API server has UID {uid!r} under that name (deleted and "
                           "created again?)")
    allocation = mapping(obj.get("status")).get("allocation")
    if not isinstance(allocation, dict):
        raise ClaimProblem(f"claim {claim}: it is not allocated")
    results = mapping(allocation.get("devices")).get("results") or []
    if not isinstance(results, list):
        raise ClaimProblem(f"claim {claim}: status.allocation.devices.results is not a list")
    mine: list[AllocatedDevice] = []
    for index, result in enumerate(results):
        if not isinstance(result, dict) or result.get("driver") != driver_name:
            continue
        request, pool, device = (result.get(key) for key in ("request", "pool", "device"))
        if not (isinstance(request, str) and isinstance(pool, str) and isinstance(device, str)
                and request and pool and device):
            raise ClaimProblem(f"claim {claim}: allocation result {index} lacks request, pool or device")
        share = result.get("shareID")
        mine.append(AllocatedDevice(request, pool, device, share if isinstance(share, str) else None,
                                    result.get("adminAccess") is True))
    if not mine:
        raise ClaimProblem(f"claim {claim}: none of its allocated devices belongs to DRA driver {driver_name}")
    return mine
