"""The shipped DaemonSet's container, as something a container engine or a chroot can reproduce.

Read from deploy/base/daemonset.yaml itself, so that the image check follows the manifest: its mounts,
env, user, capabilities, read-only root, no-new-privileges and hostNetwork. Read-only host paths are the
host's own (/sys, /dev at /host/dev); every read-write host path (the kubelet's plugin dir, /var/run/cdi,
the devinfo dir) becomes a fresh folder under the check's scratch dir, so that the check never writes
into the machine's real kubelet or CDI folders. The ConfigMap becomes a folder holding the config file.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
FIELD_VALUES = {"spec.nodeName": "image-check-node", "metadata.name": "multidp-image-check"}
SIZE_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


@dataclasses.dataclass(frozen=True)
class Bind:
    source: Path
    target: str
    read_only: bool


@dataclasses.dataclass(frozen=True)
class Tmpfs:
    target: str
    size_bytes: int | None


@dataclasses.dataclass
class PodRun:
    """How one container of the DaemonSet runs: enough for ``podman run`` flags or a chroot."""

    binds: list[Bind]
    tmpfs: list[Tmpfs]
    env: dict[str, str]
    user: str
    read_only_root: bool
    cap_drop: list[str]
    cap_add: list[str]
    no_new_privileges: bool
    host_network: bool
    args: list[str]

    def bind_for(self, target: str) -> Bind:
        found = [b for b in self.binds if b.target == target]
        if len(found) != 1:
            raise ValueError(f"the DaemonSet mounts nothing at {target}")
        return found[0]

    def with_env(self, **extra: str) -> PodRun:
        return dataclasses.replace(self, env={**self.env, **extra})


def _size(text: str | None) -> int | None:
    if text is None:
        return None
    for suffix, factor in SIZE_UNITS.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def _env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field not in FIELD_VALUES:
            raise ValueError(f"env {item['name']}: cannot stand in for {item.get('valueFrom')}")
        env[item["name"]] = FIELD_VALUES[field]
    return env


def _binds(spec: dict[str, Any], container: dict[str, Any], scratch: Path, config: Path) -> tuple[
        list[Bind], list[Tmpfs]]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    binds, tmpfs = [], []
    for mount in container.get("volumeMounts", []):
        volume, target = volumes[mount["name"]], mount["mountPath"]
        read_only = bool(mount.get("readOnly", False))
        if "hostPath" in volume and read_only:
            binds.append(Bind(Path(volume["hostPath"]["path"]), target, True))
        elif "hostPath" in volume:
            folder = scratch / "host" / volume["hostPath"]["path"].strip("/").replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            binds.append(Bind(folder, target, False))
        elif "configMap" in volume:
            folder = scratch / "configmap" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(config, folder / config.name)
            binds.append(Bind(folder, target, True))
        elif "emptyDir" in volume:
            tmpfs.append(Tmpfs(target, _size(volume["emptyDir"].get("sizeLimit"))))
        else:
            raise ValueError(f"volume {mount['name']}: kind not modelled by the image check: {sorted(volume)}")
    return binds, tmpfs


def from_daemonset(daemonset: Path, scratch: Path, config: Path) -> PodRun:
    """The DaemonSet's only container, its read-write host paths under ``scratch``, ``config`` as its ConfigMap."""
    doc = yaml.safe_load(daemonset.read_text())
    spec = doc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    context = container.get("securityContext", {})
    if context.get("privileged"):
        raise ValueError("the DaemonSet runs privileged: the image check models unprivileged containers only")
    binds, tmpfs = _binds(spec, container, scratch, config)
    caps = context.get("capabilities", {})
    return PodRun(
        binds=binds,
        tmpfs=tmpfs,
        env=_env(container),
        user=f"{context.get('runAsUser', 0)}:{context.get('runAsGroup', 0)}",
        read_only_root=bool(context.get("readOnlyRootFilesystem", False)),
        cap_drop=list(caps.get("drop", [])),
        cap_add=list(caps.get("add", [])),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
        host_network=bool(spec.get("hostNetwork", False)),
        args=list(container.get("args", [])),
    )


def probe_port(config: Path) -> int:
    """The port of the config file's probeAddress (/healthz, /readyz)."""
    return int(str(yaml.safe_load(config.read_text())["probeAddress"]).rpartition(":")[2])
