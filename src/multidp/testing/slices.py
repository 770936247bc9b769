"""ResourceSlices in the fake API server: what a DRA driver publishes so that the scheduler can allocate.

:class:`SliceStore` (``FakeApiServer.slices``) holds ``resource.k8s.io/v1`` ResourceSlice objects and answers
``/apis/resource.k8s.io/v1/resourceslices`` as the real API server does: list and watch with field selectors,
create (``generateName`` honoured), update with optimistic concurrency, delete. Writes are validated as the
server validates them (the limits and formats of :func:`problems`, and the 1.34 JSON schema through
kubernetes-validate when installed); every refusal is kept in ``invalid`` so a test can assert none happened.
The fake checks each slice alone: it does not check that a pool's devices have unique names across slices.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from multidp.testing.claims import status_body
from multidp.testing.slicerules import SCHEMA, Causes, problems

PATH = "/apis/resource.k8s.io/v1/resourceslices"
API_VERSION, KIND = "resource.k8s.io/v1", "ResourceSlice"
SELECTABLE = {"metadata.name": ("metadata", "name"), "spec.nodeName": ("spec", "nodeName"),
              "spec.driver": ("spec", "driver")}
MAX_HISTORY = 10_000  # watch events kept; a watch from before them is answered 410 Expired
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet: no vowels, no 0/1/3
Answer = tuple[int, dict[str, Any]]
Selector = list[tuple[str, bool, str]]  # (field, equal?, value)

class BadRequest(ValueError):
    """A request the API server answers 400 (its message says why)."""


class WatchDropped(Exception):
    """The watch was cut (``drop_watches``): end it as a broken connection, with no terminating chunk."""


def slice_path(path: str) -> str | None:
    """``""`` for the collection, the slice's name for one slice, None for any other path (no query)."""
    if path == PATH:
        return ""
    head, _, name = path.rpartition("/")
    return unquote(name) if head == PATH and name else None


def parse_selector(text: str) -> Selector:
    """A fieldSelector (``spec.nodeName=n,spec.driver=d``; ``==`` and ``!=`` too); BadRequest naming the term."""
    terms: Selector = []
    for term in filter(None, text.split(",")):
        negated = "!=" in term
        field, _, value = term.partition("!=" if negated else "=")
        value = value[1:] if value.startswith("=") else value
        if field not in SELECTABLE:
            raise BadRequest(f'field label not supported: "{field}" (ResourceSlices select on '
                             f'{", ".join(SELECTABLE)})')
        terms.append((field, not negated, value))
    return terms


def matches(obj: Mapping[str, Any], selector: Selector) -> bool:
    """Whether ``obj`` passes every term of ``selector``."""
    for field, equal, value in selector:
        part, key = SELECTABLE[field]
        if (str(obj.get(part, {}).get(key, "")) == value) != equal:
            return False
    return True


def _not_found(name: str) -> Answer:
    return 404, status_body(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found')


def forbidden() -> Answer:
    """The answer to every slice request while the server refuses everything."""
    return 403, status_body(403, "Forbidden", 'resourceslices.resource.k8s.io is forbidden: User '
                            '"system:serviceaccount:x:y" cannot list resource "resourceslices" in API group '
                            '"resource.k8s.io" at the cluster scope')


def _invalid(name: str, causes: Causes) -> Answer:
    body = status_body(422, "Invalid", f'ResourceSlice.resource.k8s.io "{name}" is invalid: '
                       + ", ".join(f"{field}: {detail}" for field, detail in causes))
    body["details"] = {"name": name, "group": "resource.k8s.io", "kind": "resourceslices",
                       "causes": [{"field": field, "message": detail} for field, detail in causes]}
    return 422, body


class SliceStore:
    """The cluster's ResourceSlices, by name; safe across threads.

    Switches: ``drop_taints`` (writes silently lose ``spec.devices[].taints``, as with the DRADeviceTaints
    gate off), ``validate`` (also check writes against the 1.34 schema when kubernetes-validate is
    installed), ``conflict_next`` (answer that many next writes 409 Conflict). Records: ``writes`` (write
    requests received, refused ones included), ``invalid`` (the message of every 422), ``requests``
    ("METHOD path?query" of every slice request; apart from ``FakeApiServer.requests``).
    """

    def __init__(self) -> None:
        self.drop_taints = False
        self.validate = True
        self.conflict_next = 0
        self.writes = 0
        self.invalid: list[str] = []
        self.requests: list[str] = []
        self._slices: dict[str, dict[str, Any]] = {}
        self._history: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, event type, object)
        self._version = 1
        self._forgotten = 0  # the newest resourceVersion whose events are no longer kept
        self._drops = 0
        self._cond = threading.Condition()

    # Python access for tests ------------------------------------------------------------------

    def slices(self, driver: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Copies of the slices (of ``driver``, on ``node`` when given), by name."""
        with self._cond:
            return [copy.deepcopy(obj) for _, obj in sorted(self._slices.items())
                    if driver in (None, obj["spec"].get("driver")) and node in (None, obj["spec"].get("nodeName"))]

    def get(self, name: str) -> dict[str, Any] | None:
        """A copy of the slice ``name``, or None."""
        with self._cond:
            found = self._slices.get(name)
            return copy.deepcopy(found) if found is not None else None

    def delete_all(self, node: str | None = None, driver: str | None = None) -> int:
        """Delete every slice (on ``node``, of ``driver``), as the kubelet does for a node at its start and
        for a driver after it deregisters; how many went."""
        doomed = [obj["metadata"]["name"] for obj in self.slices(driver, node)]
        with self._cond:
            return sum(self._remove(name) is not None for name in doomed)

    def drop_watches(self) -> None:
        """End every open slice watch as a broken connection would."""
        with self._cond:
            self._drops += 1
            self._cond.notify_all()

    # The API ----------------------------------------------------------------------------------

    def listing(self, selector: Selector) -> Answer:
        """A ResourceSliceList of the matching slices (items without kind and apiVersion, as served)."""
        with self._cond:
            items = [copy.deepcopy(obj) for _, obj in sorted(self._slices.items()) if matches(obj, selector)]
            version = self._version
        for item in items:
            del item["kind"], item["apiVersion"]
        return 200, {"kind": "ResourceSliceList", "apiVersion": API_VERSION,
                     "metadata": {"resourceVersion": str(version)}, "items": items}

    def create(self, obj: Any) -> Answer:
        """POST: 201 and the stored object, or a Status (409 AlreadyExists, 422 Invalid, 400, 500)."""
        with self._cond:
            refused = self._write_refused(obj)
            if refused is not None:
                return refused
            meta = obj.setdefault("metadata", {})
            if meta.get("resourceVersion"):
                return 500, status_body(500, "InternalError", "resourceVersion should not be set on objects to "
                                        "be created")
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(_SUFFIX_CHARS, k=5))
                meta["name"] = str(meta["generateName"])[:58] + suffix
            name = str(meta.get("name") or "")
            if name in self._slices:
                return 409, status_body(409, "AlreadyExists", f'resourceslices.resource.k8s.io "{name}" already '
                                        "exists")
            meta.update(uid=str(uuid.uuid4()), generation=1,
                        creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            return self._store(obj, "ADDED", 201)

    def update(self, name: str, obj: Any) -> Answer:
        """PUT of slice ``name``: 200 and the stored object, or a Status (404, 409 Conflict, 422, 400)."""
        with self._cond:
            refused = self._write_refused(obj)
            if refused is not None:
                return refused
            meta, old = obj.setdefault("metadata", {}), self._slices.get(name)
            if meta.get("name") != name:
                return 400, status_body(400, "BadRequest", f"the name of the object ({meta.get('name')}) does "
                                        f"not match the name on the URL ({name})")
            if old is None:
                return _not_found(name)
            if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                return self._conflict(name)
            spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else old["spec"]  # else: problems() says
            for field in ("driver", "nodeName"):
                if spec.get(field) != old["spec"].get(field):
                    return self._refuse(name, [(f"spec.{field}", "Invalid value: field is immutable")])
            kept = {key: old["metadata"][key] for key in ("uid", "creationTimestamp", "generation")}
            kept["generation"] += obj.get("spec") != old["spec"]
            meta.update(kept)
            return self._store(obj, "MODIFIED", 200)

    def delete(self, name: str) -> Answer:
        """DELETE of slice ``name``: 200 and the object as it was, or 404 (409 while ``conflict_next``)."""
        with self._cond:
            self.writes += 1
            if self.conflict_next > 0:
                self.conflict_next -= 1
                return self._conflict(name)
            found = self._remove(name)
            return (200, found) if found is not None else _not_found(name)

    def answer(self, method: str, name: str, query: Mapping[str, list[str]], body: bytes) -> Answer:
        """The answer to a request other than a watch: ``name`` is "" for the collection."""
        try:
            selector = parse_selector(query.get("fieldSelector", [""])[0])
            if method == "GET":
                found = self.get(name) if name else None
                return self.listing(selector) if not name else (200, found) if found else _not_found(name)
            if method == "DELETE" and name:
                return self.delete(name)
            if method == "POST" and not name:
                return self.create(read_body(body))
            if method == "PUT" and name:
                return self.update(name, read_body(body))
        except BadRequest as exc:
            return 400, status_body(400, "BadRequest", str(exc))
        return 405, status_body(405, "MethodNotAllowed", f"{method} of {PATH}/{name}: not served")

    def watch(self, query: Mapping[str, list[str]]) -> Iterator[dict[str, Any]]:
        """The events of a watch asked with ``query`` (fieldSelector, resourceVersion, timeoutSeconds,
        allowWatchBookmarks), from its resourceVersion on (absent or "0": ADDED for every slice there is
        first); a BOOKMARK last when allowed. BadRequest at once for a bad query; WatchDropped when cut."""
        selector = parse_selector(query.get("fieldSelector", [""])[0])
        since = query.get("resourceVersion", ["0"])[0] or "0"
        if not since.isdigit():
            raise BadRequest(f'resourceVersion "{since}": not a valid resource version')
        try:
            timeout = float(query["timeoutSeconds"][0]) if "timeoutSeconds" in query else None
        except ValueError as exc:
            raise BadRequest(f"timeoutSeconds {query['timeoutSeconds'][0]!r}: not a number") from exc
        with self._cond:
            drops, sent = self._drops, int(since)
            first = []
            if sent == 0:
                first = [{"type": "ADDED", "object": copy.deepcopy(obj)} for _, obj in sorted(self._slices.items())
                         if matches(obj, selector)]
                sent = self._version
            elif sent < self._forgotten:
                first = [{"type": "ERROR", "object": status_body(410, "Expired", f"too old resource version: "
                                                                 f"{sent} ({self._forgotten + 1})")}]
                timeout = 0.0
        bookmarks = query.get("allowWatchBookmarks") == ["true"]
        return self._follow(selector, first, sent, drops, timeout, bookmarks)

    def _follow(self, selector: Selector, first: list[dict[str, Any]], sent: int, drops: int,
                timeout: float | None, bookmarks: bool) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout if timeout is not None else None
        yield from first
        while deadline is None or time.monotonic() < deadline:
            with self._cond:

                def changed(last: int = sent) -> bool:
                    return self._version > last or self._drops != drops

                left = deadline - time.monotonic() if deadline is not None else 30.0
                self._cond.wait_for(changed, timeout=max(left, 0))
                if self._drops != drops:
                    raise WatchDropped
                events = [{"type": kind, "object": copy.deepcopy(obj)} for version, kind, obj in self._history
                          if version > sent and matches(obj, selector)]
                sent = self._version
            yield from events
        if bookmarks:
            yield {"type": "BOOKMARK", "object": {"kind": KIND, "apiVersion": API_VERSION,
                                                  "metadata": {"resourceVersion": str(sent)}}}

    # Inside -----------------------------------------------------------------------------------

    def _write_refused(self, obj: Any) -> Answer | None:
        """Count the write; its refusal before any lookup (a forced conflict, a body that is no slice)."""
        self.writes += 1
        name = str(obj.get("metadata", {}).get("name", "")) if isinstance(obj, dict) else ""
        if self.conflict_next > 0:
            self.conflict_next -= 1
            return self._conflict(name)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            return 400, status_body(400, "BadRequest", "the body is not a JSON object with object metadata")
        obj.setdefault("apiVersion", API_VERSION)  # as the server decodes a body: missing ones from the URL
        obj.setdefault("kind", KIND)
        if (obj.get("apiVersion"), obj.get("kind")) != (API_VERSION, KIND):
            return 400, status_body(400, "BadRequest", f"the body is a {obj.get('kind')} of "
                                    f"{obj.get('apiVersion')}, not a {KIND} of {API_VERSION}")
        return None

    def _conflict(self, name: str) -> Answer:
        return 409, status_body(409, "Conflict", f'Operation cannot be fulfilled on resourceslices.resource.k8s.io '
                                f'"{name}": the object has been modified; please apply your changes to the latest '
                                "version and try again")

    def _refuse(self, name: str, causes: Causes) -> Answer:
        code, body = _invalid(name, causes)
        self.invalid.append(body["message"])
        return code, body

    def _store(self, obj: dict[str, Any], event: str, code: int) -> Answer:
        """Validate, then keep ``obj`` (the lock held) under a new resourceVersion; the answer."""
        stored = copy.deepcopy(obj)
        if self.drop_taints:
            spec = stored.get("spec")
            for device in (spec.get("devices") if isinstance(spec, dict) else None) or []:
                if isinstance(device, dict):
                    device.pop("taints", None)
        name = str(stored["metadata"].get("name") or "")
        causes = problems(stored)
        if not causes and self.validate and SCHEMA is not None:
            try:
                SCHEMA.validate(stored, "1.34", strict=True)
            except SCHEMA.ValidationError as exc:  # the schema's message, at the path it names
                causes = [(".".join(map(str, exc.absolute_path)) or "<root>", str(exc.message))]
        if causes:
            return self._refuse(name, causes)
        for device in stored["spec"].get("devices") or []:  # the server stamps each taint, as the real one does
            for taint in device.get("taints") or []:
                taint.setdefault("timeAdded", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._version += 1
        stored["metadata"]["resourceVersion"] = str(self._version)
        self._slices[name] = stored
        self._event(event, stored)
        return code, copy.deepcopy(stored)

    def _remove(self, name: str) -> dict[str, Any] | None:
        """Delete slice ``name`` (the lock held); a copy of it, or None when there was none."""
        found = self._slices.pop(name, None)
        if found is not None:
            self._event("DELETED", found)
        return copy.deepcopy(found)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._version += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._version)}}
        self._history.append((self._version, kind, copy.deepcopy(obj)))
        if len(self._history) > MAX_HISTORY:
            self._forgotten = self._history.pop(0)[0]
        self._cond.notify_all()


def read_body(data: bytes) -> Any:
    """The JSON of a request body; BadRequest naming the problem when it is not JSON."""
    try:
        return json.loads(data or b"null")
    except ValueError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from exc
