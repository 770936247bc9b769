"""Writing drivers' CDI specs, and checking allocations against them.

A driver describes its CDI devices (:class:`multidp.model.CDISpec`); the host
writes one JSON spec file per kind into the CDI directory, atomically, and
remembers which fully qualified names it holds. An allocation that names a CDI
device of one of its kinds that no written spec holds is refused with a
message that says why, so a container never fails later on a missing spec;
drivers that name no CDI devices are never affected by a CDI problem. Subscribers
hear when a driver's specs fail or are written again (the host marks devices then).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from multidp.model import CDI_HOOK_NAMES, CDIHook, CDISpec, DeviceNode, Mount

log = logging.getLogger(__name__)

# 0.5.0 brought hostPath on device nodes; hooks are older (0.3.0) and need no newer version.
CDI_VERSION = "0.6.0"
ANNOTATION_PREFIX = "cdi.k8s.io/"
# CDI's own rules (cncf-tags/container-device-interface: pkg/parser/parser.go and
# api/producer/identifiers.go, validator-default.go): a kind's vendor and class start with a
# letter, end with a letter or digit, and hold letters, digits, '_', '-' and '.' (the vendor we
# keep to a lowercase DNS-like name); a device name holds letters, digits, '_', '-', '.' and ':'
# and starts and ends with a letter or digit; a spec names each device once; an env entry is
# KEY=value with a KEY. A runtime refuses a whole spec file that breaks one of them.
_KIND = re.compile(r"[a-z]([-a-z0-9.]*[a-z0-9])?/[A-Za-z]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?")


class SpecRefused(ValueError):
    """A driver's CDI spec breaks CDI's rules or ours; the message names the device and the field."""


def _text(where: str, value: object) -> str:
    # Paths, names and values go into the spec as they are: no NUL (cut short by C code) and no
    # newline (a second line in the runtime's logs and tools).
    if not isinstance(value, str):
        raise SpecRefused(f"{where} is a {type(value).__name__}, not a string")
    if "\0" in value or "\n" in value:
        raise SpecRefused(f"{where} {value!r} holds a NUL or newline")
    return value


def _absolute(where: str, value: object) -> None:
    if not _text(where, value).startswith("/"):
        raise SpecRefused(f"{where} {value!r} is not an absolute path")


def _check_env(where: str, env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not _text(f"{where} key {key!r}", key) or "=" in key:
            raise SpecRefused(f"{where} key {key!r} is not a variable name")
        _text(f"{where}[{key!r}]", value)


def _check_edits(nodes: Sequence[DeviceNode], env: Mapping[str, str], mounts: Sequence[Mount],
                 hooks: Sequence[CDIHook]) -> None:
    for i, node in enumerate(nodes):
        _absolute(f"device_nodes[{i}].container_path", node.container_path)
        _absolute(f"device_nodes[{i}].host_path", node.host_path)
        if not set(_text(f"device_nodes[{i}].permissions", node.permissions)) <= set("rwm"):
            raise SpecRefused(f"device_nodes[{i}].permissions {node.permissions!r} is not made of r, w and m")
    _check_env("env", env)
    for i, mount in enumerate(mounts):
        _absolute(f"mounts[{i}].container_path", mount.container_path)
        _absolute(f"mounts[{i}].host_path", mount.host_path)
    for i, hook in enumerate(hooks):
        _absolute(f"hooks[{i}].path", hook.path)
        for j, arg in enumerate(hook.args):
            _text(f"hooks[{i}].args[{j}]", arg)
        _check_env(f"hooks[{i}].env", hook.env)


def check_spec(spec: CDISpec) -> None:
    """Raise SpecRefused, naming the device and the field, if ``spec`` must not be written."""
    if not isinstance(spec, CDISpec):
        raise SpecRefused(f"a {type(spec).__name__} is not a CDISpec")
    if not _KIND.fullmatch(_text("kind", spec.kind)):
        raise SpecRefused(f"kind {spec.kind!r} is not vendor/class as CDI defines them (letters, digits, "
                          "'_', '-', '.'; each starting with a letter and ending with a letter or digit)")
    try:
        _check_edits(spec.common_device_nodes, spec.common_env, spec.common_mounts, spec.common_hooks)
    except SpecRefused as exc:
        raise SpecRefused(f"common edits: {exc}") from None
    seen: set[str] = set()
    for device in spec.devices:
        name = device.name
        where = f"device {name!r}"
        if not _DEVICE_NAME.fullmatch(_text(f"{where}: name", name)):
            raise SpecRefused(f"{where}: name must be letters, digits, '_', '-', '.' and ':', starting and "
                              "ending with a letter or digit")
        if name in seen:
            raise SpecRefused(f"{where}: name is listed twice")
        seen.add(name)
        try:
            _check_edits(device.device_nodes, device.env, device.mounts, device.hooks)
        except SpecRefused as exc:
            raise SpecRefused(f"{where}: {exc}") from None


def _hook(hook: CDIHook) -> dict[str, Any]:
    """One hook in CDI's shape; a hook the runtime would refuse is refused here, by name."""
    if hook.hook_name not in CDI_HOOK_NAMES:
        raise ValueError(f"CDI hook {hook.path!r}: hook name {hook.hook_name!r} is not one of "
                         f"{', '.join(CDI_HOOK_NAMES)}")
    if not hook.path.startswith("/"):
        raise ValueError(f"CDI hook path {hook.path!r} must be absolute")
    if hook.timeout is not None and (isinstance(hook.timeout, bool) or not isinstance(hook.timeout, int)
                                     or hook.timeout <= 0):
        raise ValueError(f"CDI hook {hook.path!r}: timeout must be a positive number of seconds, "
                         f"not {hook.timeout!r}")
    bad_env = [k for k in hook.env if not k or "=" in k]
    if bad_env:
        raise ValueError(f"CDI hook {hook.path!r}: bad environment variable name {bad_env[0]!r}")
    entry: dict[str, Any] = {"hookName": hook.hook_name, "path": hook.path}
    if hook.args:
        entry["args"] = list(hook.args)
    if hook.env:
        entry["env"] = [f"{k}={v}" for k, v in hook.env.items()]
    if hook.timeout is not None:
        entry["timeout"] = hook.timeout
    return entry


def _edits(nodes: Sequence[DeviceNode], env: dict[str, str], mounts: Sequence[Mount],
           hooks: Sequence[CDIHook] = ()) -> dict[str, Any]:
    edits: dict[str, Any] = {}
    if nodes:
        edits["deviceNodes"] = [
            {"path": n.container_path, "hostPath": n.host_path, "permissions": n.permissions} for n in nodes
        ]
    if env:
        edits["env"] = [f"{k}={v}" for k, v in env.items()]
    if mounts:
        edits["mounts"] = [
            {
                "hostPath": m.host_path,
                "containerPath": m.container_path,
                "options": ["ro" if m.read_only else "rw", "nosuid", "nodev", "bind"],
            }
            for m in mounts
        ]
    if hooks:
        edits["hooks"] = [_hook(h) for h in hooks]
    return edits


def spec_document(spec: CDISpec) -> dict[str, Any]:
    """The CDI JSON document for one spec."""
    doc: dict[str, Any] = {
        "cdiVersion": CDI_VERSION,
        "kind": spec.kind,
        "devices": [
            {"name": d.name, "containerEdits": _edits(d.device_nodes, dict(d.env), d.mounts, d.hooks)}
            for d in spec.devices
        ],
    }
    common = _edits(spec.common_device_nodes, dict(spec.common_env), spec.common_mounts, spec.common_hooks)
    if common:
        doc["containerEdits"] = common
    return doc


def checked_documents(driver: str, specs: Sequence[CDISpec]) -> list[tuple[CDISpec, dict[str, Any]]]:
    """Each spec with its CDI document; SpecRefused, naming driver, kind, device and field, if one is refused."""
    documents: list[tuple[CDISpec, dict[str, Any]]] = []
    for spec in specs:
        kind = getattr(spec, "kind", None)
        try:
            check_spec(spec)
            if any(spec.kind == other.kind for other, _ in documents):
                raise SpecRefused("that kind is given twice")
            documents.append((spec, spec_document(spec)))
        except (SpecRefused, ValueError, TypeError) as exc:  # spec_document's checks raise ValueError
            raise SpecRefused(f"driver {driver}: CDI spec of kind {kind!r} refused: {exc}") from None
    return documents


def unwritable(directory: Path) -> str | None:
    """Why specs could not be written into ``directory`` now, or None (a look for ``multidp devices``)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the host makes the missing folders
    if not existing.is_dir():
        return f"cannot write CDI spec to {directory}: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write CDI spec to {directory}: {existing} is not writable"
    return None


class CDIRegistry:
    """The CDI specs written for each driver, and the names they hold."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._names: dict[str, set[str]] = {}  # driver -> qualified names written
        self._kinds: dict[str, set[str]] = {}  # driver -> kinds written
        self._errors: dict[str, str] = {}  # driver -> why its specs are missing
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(driver)`` whenever :meth:`error` of ``driver`` changes (outside the lock)."""
        self._listeners.append(listener)

    def error(self, driver: str) -> str | None:
        """Why ``driver``'s specs are not written, or None when its last specs were."""
        with self._lock:
            return self._errors.get(driver)

    def _changed(self, driver: str) -> None:
        for listener in self._listeners:
            try:
                listener(driver)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the others or the caller
                log.exception("driver %s: passing on a change of its CDI state failed", driver)

    def file_for(self, driver: str, kind: str) -> Path:
        return self.directory / f"multidp-{driver}-{kind.replace('/', '_')}.json"

    def publish(self, driver: str, specs: Sequence[CDISpec]) -> None:
        """Write ``specs`` for ``driver``; record the names or the reason it failed.

        Every spec is checked before any is written: one that breaks CDI's rules (or holds
        a relative path, a NUL or a newline) is refused with the driver, kind, device and
        field named, nothing is written, and allocations naming the driver's CDI devices
        fail until it gives good specs. No specs at all clear an earlier failure.
        """
        try:
            documents = checked_documents(driver, specs)
        except SpecRefused as exc:
            self.fail(driver, str(exc))
            return
        names: set[str] = set()
        try:
            for spec, document in documents:
                self._write(self.file_for(driver, spec.kind), document)
                names.update(spec.qualified_name(d.name) for d in spec.devices)
        except (OSError, ValueError, TypeError) as exc:
            self.fail(driver, f"cannot write CDI spec to {self.directory}: {exc}")
            return
        with self._lock:
            self._names[driver] = names
            self._kinds[driver] = {spec.kind for spec in specs}
            recovered = self._errors.pop(driver, None) is not None
        if recovered:
            log.info("driver %s: CDI specs %s again; its devices that name CDI devices are no longer held "
                     "Unhealthy for them", driver, f"written to {self.directory}" if documents else "not needed")
            self._changed(driver)

    def fail(self, driver: str, reason: str) -> None:
        """Record why ``driver``'s specs are not written: allocations naming its CDI devices are refused."""
        with self._lock:
            new = self._errors.get(driver) != reason
            if new:  # "driver %s" first: the JSON logs' driver field
                log.error("driver %s: %s; allocations that use CDI devices will fail, and devices that name them are "
                          "Unhealthy, until its specs are written (tried again after each scan)", driver,
                          reason.removeprefix(f"driver {driver}: "))
            self._errors[driver] = reason
            self._names.pop(driver, None)
        if new:
            self._changed(driver)

    def problem(self, driver: str, names: Sequence[str]) -> str | None:
        """Why ``names`` cannot be handed out, or None when the specs hold them all."""
        with self._lock:
            if driver in self._errors:
                return self._errors[driver]
            known = self._names.get(driver, set())
            kinds = self._kinds.get(driver, set())
        # Names of kinds this driver did not publish come from specs written by
        # others (e.g. the NVIDIA container toolkit's); those are not ours to check.
        missing = [n for n in names if n.partition("=")[0] in kinds and n not in known]
        if missing:
            return f"no CDI spec written by multidp holds {', '.join(missing[:3])}"
        return None

    @staticmethod
    def _write(path: Path, document: dict[str, Any]) -> None:
        write_spec_file(path, document)


def write_spec_file(path: Path, document: dict[str, Any]) -> None:
    """Write one CDI spec file atomically (readable by the runtime: 0644), making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".multidp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o644)  # on the open file: no path, no symlink to follow
            json.dump(document, out, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
