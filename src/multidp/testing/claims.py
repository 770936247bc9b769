"""ResourceClaims in the fake API server: what a DRA driver GETs before it prepares a claim.

:class:`ClaimStore` (``FakeApiServer.claims``) holds ``resource.k8s.io/v1`` ResourceClaim objects (the
version Kubernetes 1.34 and later serves; v1beta1 paths are not answered). Tests add, replace and
remove claims; the server answers ``GET /apis/resource.k8s.io/v1/namespaces/<ns>/resourceclaims/<name>``
from here with the object, 404 NotFound, or 403 Forbidden as the real API server words them.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

API_VERSION = "resource.k8s.io/v1"
DEVICE_CLASS = "multidp"
RESULT_KEYS = ("request", "driver", "pool", "device")
OPTIONAL_RESULT_KEYS = ("adminAccess", "shareID")

_CLAIM_PATH = re.compile(r"^/apis/resource\.k8s\.io/v1/namespaces/([^/]+)/resourceclaims/([^/]+)$")


def claim_path(path: str) -> tuple[str, str] | None:
    """``(namespace, name)`` when ``path`` (no query) is a GET of one v1 ResourceClaim, else None."""
    match = _CLAIM_PATH.match(path)
    return (unquote(match[1]), unquote(match[2])) if match else None


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` object for a failed request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _checked_result(index: int, result: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in RESULT_KEYS if not isinstance(result.get(key), str) or not result.get(key)]
    if missing:
        raise ValueError(f"claim result {index}: {', '.join(missing)} missing or not a non-empty string "
                         f"(each result needs {', '.join(RESULT_KEYS)})")
    unknown = sorted(set(result) - set(RESULT_KEYS) - set(OPTIONAL_RESULT_KEYS))
    if unknown:
        raise ValueError(f"claim result {index}: unknown keys {', '.join(unknown)}")
    return {key: result[key] for key in (*RESULT_KEYS, *OPTIONAL_RESULT_KEYS) if key in result}


class ClaimStore:
    """The ResourceClaims the fake API server holds, by ``(namespace, name)``; safe across threads.

    ``forbidden_claims`` (True: every claim GET answered 403); ``gets`` counts the claim GETs answered
    (a stalled one is not counted).
    """

    def __init__(self) -> None:
        self.forbidden_claims = False
        self.gets = 0
        self._claims: dict[tuple[str, str], dict[str, Any]] = {}
        self._version = 0
        self._lock = threading.Lock()

    def add(self, namespace: str, name: str, results: Sequence[Mapping[str, Any]], uid: str | None = None,
            allocated: bool = True) -> dict[str, Any]:
        """Create (or overwrite) the claim ``namespace/name`` asking for the devices of ``results``.

        Each result names ``request``, ``driver``, ``pool`` and ``device`` (optionally ``adminAccess``
        and ``shareID``). The spec holds one request per request name, counting its results; the status
        holds the allocation only when ``allocated``. Returns (a copy of) the object.
        """
        if not namespace or not name:
            raise ValueError(f"a claim needs a namespace and a name (got {namespace!r}, {name!r})")
        checked = [_checked_result(i, result) for i, result in enumerate(results)]
        requests: dict[str, dict[str, Any]] = {}  # by request name, in order of first mention
        for result in checked:
            exactly = requests.setdefault(result["request"], {"deviceClassName": DEVICE_CLASS, "count": 0})
            exactly["count"] += 1
            if result.get("adminAccess"):
                exactly["adminAccess"] = True
        obj: dict[str, Any] = {
            "apiVersion": API_VERSION, "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
            "spec": {"devices": {"requests": [{"name": request, "exactly": exactly}
                                               for request, exactly in requests.items()]}},
        }
        if allocated:
            obj["status"] = {"allocation": {"devices": {"results": checked}, "nodeSelector": {}}}
        return self.replace(obj)

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``obj`` (a whole ResourceClaim) under its metadata's namespace and name, with a new
        resourceVersion; for example a claim created again under its name with another uid."""
        metadata = obj.get("metadata")
        if not isinstance(metadata, Mapping) or not metadata.get("namespace") or not metadata.get("name"):
            raise ValueError("a ResourceClaim needs metadata.namespace and metadata.name")
        stored = copy.deepcopy(dict(obj))
        with self._lock:
            self._version += 1
            stored["metadata"]["resourceVersion"] = str(self._version)
            self._claims[(metadata["namespace"], metadata["name"])] = stored
            return copy.deepcopy(stored)

    def remove(self, namespace: str, name: str) -> None:
        """Delete the claim (KeyError naming it when there is none)."""
        with self._lock:
            if self._claims.pop((namespace, name), None) is None:
                raise KeyError(f"no ResourceClaim {namespace}/{name} to remove")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the claim, or None."""
        with self._lock:
            found = self._claims.get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def all(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Copies of every claim, by (namespace, name)."""
        with self._lock:
            return copy.deepcopy(self._claims)

    def answer(self, namespace: str, name: str, forbidden: bool = False) -> tuple[int, dict[str, Any]]:
        """The HTTP status and body the API server gives a GET of the claim (``forbidden``: the
        server's switch that refuses everything)."""
        with self._lock:
            self.gets += 1
        if forbidden or self.forbidden_claims:
            return 403, status_body(403, "Forbidden", f'resourceclaims.resource.k8s.io "{name}" is forbidden: User '
                                    f'"system:serviceaccount:x:y" cannot get resource "resourceclaims" in API '
                                    f'group "resource.k8s.io" in the namespace "{namespace}"')
        found = self.get(namespace, name)
        if found is None:
            return 404, status_body(404, "NotFound", f'resourceclaims.resource.k8s.io "{name}" not found')
        return 200, found
