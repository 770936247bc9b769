"""The ResourceSlice requests the publisher makes, on lightkube's client, each under a timeout."""

from __future__ import annotations

import importlib
import json
from typing import Any
from urllib.parse import quote

from multidp.kubeapi import ApiProblem, check_status, json_object, read_at_most

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 << 20  # a node's slices: at most a few MB


class Conflict(Exception):
    """409: the slice changed (or exists) meanwhile; list again and retry."""


class SliceApi:
    """List, create, update and delete one driver's slices on one node; read the Node's UID."""

    def __init__(self, http: Any, node: str, driver: str) -> None:
        self.http, self.node, self.driver = http, node, driver
        self.httpx = importlib.import_module(type(http).__module__.partition(".")[0])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> dict[str, Any]:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            with self.http.stream(method, path, content=content, headers=headers, params=params,
                                  timeout=self.httpx.Timeout(TIMEOUT_S)) as answer:
                if answer.status_code == 409:
                    raise Conflict(f"{method} {path}: {read_at_most(answer, 4096)[:200].decode(errors='replace')}")
                if answer.status_code == 404 and method == "DELETE":
                    return {}
                if answer.status_code in (200, 201, 202):
                    return json_object(read_at_most(answer, MAX_ANSWER_BYTES), f"the answer to {method} {path}")
                check_status(answer)
                return {}
        except self.httpx.HTTPError as exc:
            raise ApiProblem(type(exc).__name__, str(exc) or "no detail") from exc

    def node_uid(self) -> str:
        uid = (self._call("GET", f"/api/v1/nodes/{quote(self.node, safe='')}").get("metadata") or {}).get("uid")
        if not isinstance(uid, str) or not uid:
            raise ApiProblem("garbage", f"Node {self.node} has no metadata.uid")
        return uid

    def list(self) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={self.node},spec.driver={self.driver}"
        items = self._call("GET", SLICES, params={"fieldSelector": selector}).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", SLICES, obj)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"{SLICES}/{quote(obj['metadata']['name'], safe='')}", obj)

    def delete(self, name: str) -> None:
        self._call("DELETE", f"{SLICES}/{quote(name, safe='')}")
