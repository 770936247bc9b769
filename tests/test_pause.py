"""``pauseByLabel``: one rule or a list of them, parsed the same for ``multidp config check`` and the
node, and NVIDIA's mig-manager as it labels a node, through the host with the real label watcher."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from multidp.config.bylabel import with_host_keys
from multidp.config.pause import PauseByLabel, PauseRule, parse_pause_by_label
from multidp.config.sections import resolve_section
from multidp.config.settings import load_settings
from multidp.errors import ConfigError
from multidp.testing import FakeApiServer, KubeletStandIn, SampleConfig, SamplePlugin, running_host, wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
NODE = "node-1"
DEPLOY_LABEL = "nvidia.com/gpu.deploy.device-plugin"  # NVIDIA's plugin runs while it is true
STATE_LABEL = "nvidia.com/mig.config.state"  # mig-manager: pending, rebooting, success, failed
DRIVERS = {"alpha": {"resources": {WIDGET: {"count": 2}}}, "beta": {"resources": {GADGET: {"count": 3}}}}


@pytest.fixture
def api():
    server = FakeApiServer(NODE)
    yield server
    server.close()


def shipped_configs() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("multidp.yaml") if "pauseByLabel" in p.read_text())


def shipped_pause() -> Any:
    """The nvidia driver's pauseByLabel as deploy/base ships it."""
    return yaml.safe_load((DEPLOY / "base" / "multidp.yaml").read_text())["drivers"]["nvidia"]["pauseByLabel"]


def test_one_rule_or_a_list_and_the_first_match_is_the_reason():
    one = parse_pause_by_label({"label": DEPLOY_LABEL, "values": ["paused-for-mig-change"]}, "x")
    assert one == PauseByLabel((PauseRule(DEPLOY_LABEL, ("paused-for-mig-change",)),))
    two = parse_pause_by_label([{"label": DEPLOY_LABEL, "values": ["paused-for-mig-change"]},
                                {"label": STATE_LABEL, "values": ["pending", "rebooting"]}], "x")
    assert [rule.label for rule in two.rules] == [DEPLOY_LABEL, STATE_LABEL]
    pending = {DEPLOY_LABEL: "false", STATE_LABEL: "pending"}
    assert two.paused_by(pending) == f"paused by node label {STATE_LABEL}=pending"
    both = {DEPLOY_LABEL: "paused-for-mig-change", STATE_LABEL: "rebooting"}
    assert two.paused_by(both) == f"paused by node label {DEPLOY_LABEL}=paused-for-mig-change"
    assert two.paused_by({DEPLOY_LABEL: "false", STATE_LABEL: "success"}) is None
    assert two.paused_by({DEPLOY_LABEL: "false"}) is None and two.paused_by(None) is None
    assert one.paused_by({STATE_LABEL: "pending"}) is None  # a single rule is only that rule


GOOD = {"label": "a.example/x", "values": ["x"]}


@pytest.mark.parametrize(("pause", "message"), [
    ({"label": "a.example/x"}, "pauseByLabel.values: must be a non-empty list"),
    ({"label": "a b", "values": ["x"]}, "pauseByLabel.label: 'a b' is not a Kubernetes label key"),
    ({"label": "a.example/x", "values": ["x"], "when": 1}, "pauseByLabel.when: unknown key"),
    ("a.example/x", "pauseByLabel: must be a mapping with label and values, or a list of them, not str"),
    ([], "pauseByLabel: must have at least one {label, values} rule"),
    ([GOOD, {"label": "a.example/y"}], "pauseByLabel[1].values: must be a non-empty list"),
    ([GOOD, GOOD, {"values": ["x"]}], "pauseByLabel[2].label: is required"),
    ([{**GOOD, "values": ["-x"]}], "pauseByLabel[0].values: must be a non-empty list of label values"),
    ([GOOD, {**GOOD, "when": 1}], "pauseByLabel[1].when: unknown key"),
    (["a.example/x"], "pauseByLabel[0]: must be a mapping with label and values, not str"),
    ([GOOD, [GOOD]], "pauseByLabel[1]: must be a mapping with label and values, not list"),
])
def test_errors_name_the_key_and_the_rule(tmp_path, pause, message):
    """``load_settings`` is what ``multidp config check`` and the node both start with."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"drivers": {"alpha": {"pauseByLabel": pause}}}))
    with pytest.raises(ConfigError, match=re.escape(f"drivers.alpha.{message}")):
        load_settings({"config": str(config)}, {})


def test_the_node_resolves_a_list_and_a_variable_names_itself_in_errors():
    resolved = resolve_section("alpha", {"pollInterval": 2, "pauseByLabel": shipped_pause()}, {}, SampleConfig)
    assert resolved.own == {"pollInterval": 2} and resolved.pause is not None and len(resolved.pause.rules) == 2
    env = {"MULTIDP_ALPHA_PAUSE_BY_LABEL": "[{label: a.example/x, values: [x]}, {label: Bad/Key, values: [y]}]"}
    with pytest.raises(ConfigError, match=re.escape("MULTIDP_ALPHA_PAUSE_BY_LABEL[1].label: 'Bad/Key' is not")):
        resolve_section("alpha", {}, env, SampleConfig)


def test_the_schema_takes_one_rule_or_a_list():
    jsonschema = pytest.importorskip("jsonschema")
    schema = with_host_keys({"type": "object", "properties": {}, "additionalProperties": False}, {})
    jsonschema.validate({"pauseByLabel": GOOD}, schema)
    jsonschema.validate({"pauseByLabel": shipped_pause()}, schema)
    for bad in ([], [GOOD, {"label": "a.example/y"}], [{**GOOD, "values": ["-x"]}], {**GOOD, "when": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"pauseByLabel": bad}, schema)


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shipped_configs_pause_for_mig_manager_whatever_the_deploy_label(path):
    """mig-manager leaves gpu.deploy.device-plugin=false as it is, and a switch to multidp sets it
    there: mig.config.state must pause the driver then."""
    raw = yaml.safe_load(path.read_text())["drivers"]["nvidia"]["pauseByLabel"]
    pause = parse_pause_by_label(raw, f"{path}: drivers.nvidia.pauseByLabel")
    for deploy in ("true", "false", None):
        node = {DEPLOY_LABEL: deploy} if deploy else {}
        for state in ("pending", "rebooting"):
            assert pause.paused_by({**node, STATE_LABEL: state}), (deploy, state)
        for state in ("success", "failed", None):
            assert not pause.paused_by({**node, STATE_LABEL: state} if state else node), (deploy, state)
    assert pause.paused_by({DEPLOY_LABEL: "paused-for-mig-change", STATE_LABEL: "success"})


def plugins() -> dict[str, SamplePlugin]:
    return {"alpha": SamplePlugin(), "beta": SamplePlugin()}


def settle(host: Any, api: FakeApiServer, kubelet: KubeletStandIn, labels: dict[str, str | None]) -> None:
    """Set ``labels`` and return once the host has acted on them: after it has seen them, turn beta
    over; the host applies label changes one at a time, so beta's turn showing means the apply that
    saw ``labels`` is over."""
    api.set_labels(labels)
    wait_until(lambda: all((host.node.labels or {}).get(k) == v for k, v in labels.items()), what=f"{labels} seen")
    beta_off = (host.node.labels or {}).get("multidp.io/beta") != "false"
    api.set_labels({"multidp.io/beta": "false" if beta_off else "true"})
    kubelet.wait_devices(GADGET, (lambda v: v.capacity == 0) if beta_off else (lambda v: v.capacity == 3),
                         what="beta turned over")


def test_a_deploy_label_alone_pauses_and_false_does_not(kubelet, api, tmp_path):
    """NVIDIA's mig-manager: paused-for-mig-change means let go of the GPUs; false (the GPU Operator's
    own plugin turned off) is no reason to."""
    pause = {"label": DEPLOY_LABEL, "values": ["paused-for-mig-change"]}
    plugins_ = plugins()
    drivers = {"alpha": {**DRIVERS["alpha"], "pauseByLabel": pause}, "beta": DRIVERS["beta"]}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins_, drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        settle(host, api, kubelet, {DEPLOY_LABEL: "false", "multidp.io/alpha": "true"})
        assert host.statuses["alpha"].state == "running" and kubelet.resources[WIDGET].capacity == 2
        first = plugins_["alpha"].drivers[-1]
        api.set_labels({DEPLOY_LABEL: "paused-for-mig-change"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, what="alpha withdrawn for the MIG change")
        reason = f"paused by node label {DEPLOY_LABEL}=paused-for-mig-change"
        wait_until(lambda: host.statuses["alpha"].reason == reason, what="the status says why")
        assert first.closed and GADGET in kubelet.resources  # closed (NVML let go); beta untouched
        api.set_labels({DEPLOY_LABEL: None})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="alpha back after the change")


def test_mig_manager_on_a_node_switched_to_multidp(kubelet, api, tmp_path):
    """The shipped rules, with gpu.deploy.device-plugin=false as the operator guide has it: mig-manager
    leaves that label alone, and mig.config.state pauses the driver from pending to success."""
    api.set_labels({DEPLOY_LABEL: "false", STATE_LABEL: "success", "multidp.io/alpha": "true"})
    plugins_ = plugins()
    drivers = {"alpha": {**DRIVERS["alpha"], "pauseByLabel": shipped_pause()}, "beta": DRIVERS["beta"]}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins_, drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="false alone: alpha serves")
        first = plugins_["alpha"].drivers[-1]
        api.set_labels({STATE_LABEL: "pending"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, what="alpha withdrawn while pending")
        wait_until(lambda: host.statuses["alpha"].reason == f"paused by node label {STATE_LABEL}=pending",
                   what="the status names the state label")
        assert first.closed and host.statuses["alpha"].state == "disabled"
        settle(host, api, kubelet, {STATE_LABEL: "rebooting"})
        assert kubelet.resources[WIDGET].capacity == 0 and len(plugins_["alpha"].drivers) == 1
        api.set_labels({STATE_LABEL: "success"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="alpha back on success")
        assert len(plugins_["alpha"].drivers) == 2 and host.statuses["alpha"].state == "running"


def test_mig_manager_where_the_deploy_label_is_true(kubelet, api, tmp_path):
    """mig-manager's order where NVIDIA's plugin would run: pending, paused-for-mig-change, the change,
    the deploy label back to true, then success. The driver stays off until both rules let it go."""
    api.set_labels({DEPLOY_LABEL: "true", "multidp.io/alpha": "true"})
    drivers = {"alpha": {**DRIVERS["alpha"], "pauseByLabel": shipped_pause()}, "beta": DRIVERS["beta"]}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        api.set_labels({STATE_LABEL: "pending"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, what="alpha withdrawn while pending")
        settle(host, api, kubelet, {DEPLOY_LABEL: "paused-for-mig-change"})
        settle(host, api, kubelet, {DEPLOY_LABEL: "true"})  # restored before the state says success
        assert kubelet.resources[WIDGET].capacity == 0 and host.statuses["alpha"].state == "disabled"
        api.set_labels({STATE_LABEL: "success"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="alpha back on success")
