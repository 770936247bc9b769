"""Node labels with the real lightkube client against a local API server: drivers turned on and off,
and per-node configs chosen by a label (``configByLabel``)."""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any

import pytest
import yaml

from multidp.cli.commands import driver_report
from multidp.config.bylabel import merge, parse_config_by_label, select
from multidp.config.sections import resolve_section
from multidp.config.settings import load_settings
from multidp.driver import Driver, DriverContext
from multidp.errors import ConfigError
from multidp.hookspecs import hookimpl
from multidp.host.labels import overrides_from
from multidp.plugins.registry import PluginRegistry
from multidp.testing import FakeApiServer, KubeletStandIn, SampleConfig, SamplePlugin, running_host, wait_until
from multidp.testing.host import make_settings

WIDGET = "example.com/widget"
GADGET = "example.com/gadget"
NODE = "node-1"


@pytest.fixture
def api():
    server = FakeApiServer(NODE)
    yield server
    server.close()


def plugins() -> dict[str, SamplePlugin]:
    return {"alpha": SamplePlugin(), "beta": SamplePlugin()}


DRIVERS = {"alpha": {"resources": {WIDGET: {"count": 2}}}, "beta": {"resources": {GADGET: {"count": 3}}}}


def test_overrides_from_labels(caplog):
    labels = {"multidp.io/alpha": "TRUE", "multidp.io/beta": "off", "other": "x"}
    assert overrides_from(labels, ["alpha", "beta", "gamma"]) == {"alpha": True, "beta": None, "gamma": None}
    assert "multidp.io/beta='off' is neither true nor false: ignored" in caplog.text


def test_label_flips_start_and_stop_one_driver_while_the_other_streams(kubelet: KubeletStandIn, api, tmp_path):
    api.set_labels(multidp_io_beta="false")
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env) as host:
        alpha = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert GADGET not in kubelet.resources and host.statuses["beta"].state == "disabled"
        assert "node label multidp.io/beta=false" in host.statuses["beta"].reason
        updates, registrations = alpha.updates, len(kubelet.registrations)
        for _ in range(2):
            flipped = time.monotonic()
            api.set_labels(multidp_io_beta="true")
            kubelet.wait_devices(GADGET, lambda v: v.capacity == 3 and v.stream_open, timeout=5)
            on_s = time.monotonic() - flipped
            flipped = time.monotonic()
            api.set_labels(multidp_io_beta="False")
            kubelet.wait_devices(GADGET, lambda v: v.capacity == 0 and not v.stream_open, timeout=5)
            off_s = time.monotonic() - flipped
            assert on_s < 5 and off_s < 5  # generous bounds; the figures are for the log
            logging.getLogger("test").info("label on %.3f s, off %.3f s", on_s, off_s)
        # alpha was never touched: same stream, no re-registration, no extra list.
        assert alpha.stream_open and alpha.updates == updates
        assert [r.resource for r in kubelet.registrations[registrations:]] == [GADGET, GADGET]


def test_absent_label_falls_back_to_config(kubelet, api, tmp_path):
    drivers = {**DRIVERS, "beta": {**DRIVERS["beta"], "enabled": False}}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert host.statuses["beta"].reason == "disabled in config"
        api.set_labels(multidp_io_beta="true")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        api.set_labels(multidp_io_beta=None)
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, what="back to the config default (off)")


def test_drivers_default_turns_off_every_driver_the_config_does_not_name(kubelet, api, tmp_path):
    """The base config's rule: a driver added to the image later runs only where a label enables it."""
    drivers = {"default": {"enabled": False}, "alpha": {**DRIVERS["alpha"], "enabled": True},
               "beta": DRIVERS["beta"]}
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=drivers, environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert host.statuses["beta"].reason == "disabled in config" and GADGET not in kubelet.resources
        api.set_labels(multidp_io_beta="true")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)


@pytest.mark.parametrize(("text", "message"), [
    ("drivers:\n  default: {enabled: false, pollInterval: 3}\n",
     "drivers.default.pollInterval: is not a key of drivers.default (it takes only enabled"),
    ("drivers:\n  default: {enabled: maybe}\n", "drivers.default.enabled: must be true or false"),
    ("drivers:\n  default: [enabled]\n", "drivers.default: must be a mapping"),
])
def test_drivers_default_takes_only_enabled(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({"config": str(config)}, {})


def test_dropped_watch_is_resumed(kubelet, api, tmp_path, caplog):
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        watches = sum("watch=true" in r for r in api.requests)
        api.drop_watches()
        wait_until(lambda: sum("watch=true" in r for r in api.requests) > watches, what="a new watch")
        api.set_labels(multidp_io_beta="false")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, timeout=10)


def test_forbidden_keeps_config_defaults_and_says_why(kubelet, api, tmp_path, caplog):
    api.forbidden = True
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        wait_until(lambda: "HTTP 403" in caplog.text, what="the 403 in the log")
        assert "keeping the last known set" in caplog.text
        api.forbidden = False  # RBAC fixed: the next retry reads the labels
        api.set_labels(multidp_io_alpha="false")
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 0, timeout=10)


def test_unreachable_api_server_keeps_config_defaults(kubelet, tmp_path, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    server = FakeApiServer(NODE)
    config = server.kubeconfig(tmp_path)
    server.close()
    config.write_text(config.read_text().replace(server.url, f"http://127.0.0.1:{port}"))
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(config)}
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ=env):
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2)
        assert "cannot read or watch its labels" in caplog.text


def test_node_name_without_credentials_is_one_error_and_label_mode_off(kubelet, caplog):
    with running_host(kubelet.directory, plugins(), drivers=DRIVERS, environ={"NODE_NAME": NODE}) as host:
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        assert host._label_watcher is None
    errors = [r for r in caplog.records if "no Kubernetes credentials" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelname == "ERROR"


# Per-node config chosen by a node label (drivers.<name>.configByLabel) ------------------------------

CONFIG_LABEL = "example.com/widget-config"
GIZMO = "example.com/gizmo"
PER_NODE: dict[str, Any] = {
    "resources": {WIDGET: {"count": 1}},
    "configByLabel": {
        "label": CONFIG_LABEL,
        "default": "two",
        "configs": {
            "two": {"resources": {WIDGET: {"count": 2}}},
            "shared": {"resources": {WIDGET: {"count": 2, "replicas": 4}}},
            "more": {"resources": {GIZMO: {"count": 3}}},  # merged: the base's widget stays
            "broken": {"pollInterval": "soon"},
        },
    },
}


class RebuildingPlugin(SamplePlugin):
    """The sample driver whose "hardware" follows each new config (the sample keeps its first)."""

    @hookimpl
    def multidp_create_driver(self, context: DriverContext) -> Driver:
        self.hardware = None
        return super().multidp_create_driver(context)



def test_an_annotation_selects_the_per_node_config_live(kubelet: KubeletStandIn, api, tmp_path):
    """As Intel's plugin reads fpga.intel.com/device-plugin-mode: configByLabel.annotation."""
    by_annotation = {**PER_NODE, "configByLabel": {**PER_NODE["configByLabel"], "annotation": CONFIG_LABEL}}
    del by_annotation["configByLabel"]["label"]
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, {"alpha": RebuildingPlugin()}, drivers={"alpha": by_annotation},
                      environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="the default config 'two'")
        api.set_labels({CONFIG_LABEL: "shared"})  # a label of that key is not the annotation
        api.set_annotations({CONFIG_LABEL: "more"})
        kubelet.wait_devices(GIZMO, lambda v: v.capacity == 3, what="the config the annotation names")
        assert host.statuses["alpha"].reason == f"node annotation {CONFIG_LABEL}=more selects config 'more'"
        api.set_annotations({CONFIG_LABEL: None})
        kubelet.wait_devices(GIZMO, lambda v: v.capacity == 0, what="back to the default config")


@pytest.mark.parametrize(("by_label", "message"), [
    ({"label": "a.example/x", "annotation": "a.example/x", "configs": {"a": {}}},
     "configByLabel.annotation: give label or annotation, not both"),
    ({"annotation": "a.example/x y", "configs": {"a": {}}}, "configByLabel.annotation: 'a.example/x y' is not a "
     "Kubernetes annotation key"),
])
def test_config_by_annotation_errors_name_the_key(by_label, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config_by_label("alpha", by_label, "drivers.alpha.configByLabel")


def test_label_selects_the_per_node_config_live(kubelet: KubeletStandIn, api, tmp_path, caplog):
    alpha = RebuildingPlugin()
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    drivers = {**DRIVERS, "alpha": PER_NODE}
    with running_host(kubelet.directory, {"alpha": alpha, "beta": SamplePlugin()}, drivers=drivers,
                      environ=env) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="the default config 'two'")
        assert host.statuses["alpha"].reason == f"node label {CONFIG_LABEL} is not set; using the default config 'two'"
        gadget = kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        gadget_updates = gadget.updates

        api.set_labels({CONFIG_LABEL: "shared"})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 8, what="2 widgets x 4 replicas")
        assert host.statuses["alpha"].reason == f"node label {CONFIG_LABEL}=shared selects config 'shared'"
        api.set_labels({CONFIG_LABEL: "more"})
        kubelet.wait_devices(GIZMO, lambda v: v.capacity == 3, what="the resource the config adds")
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 1, what="the base section's widget")

        created = len(alpha.drivers)
        api.set_labels({CONFIG_LABEL: "typo"})  # a typo keeps the last good config: nothing withdrawn
        error = (f"driver alpha: node label {CONFIG_LABEL}='typo' names no config in drivers.alpha.configByLabel."
                 "configs (known: two, shared, more, broken); keeping the config 'more' it runs with")
        wait_until(lambda: error in caplog.text, what="the typo said loudly")
        assert host.statuses["alpha"].state == "running" and error.endswith(host.statuses["alpha"].reason)
        assert kubelet.resources[GIZMO].capacity == 3 and kubelet.resources[GIZMO].stream_open
        api.set_labels({"example.com/unrelated": "x"})  # no change for alpha: not built again, not logged again
        wait_until(lambda: "example.com/unrelated" in (host.node.labels or {}), what="the unrelated label seen")
        with host._apply_lock:  # that change is fully applied
            assert len(alpha.drivers) == created  # neither the typo nor this built it again
        errors = [r for r in caplog.records if r.getMessage() == error]
        assert len(errors) == 1 and errors[0].levelname == "ERROR"

        api.set_labels({CONFIG_LABEL: "broken"})  # a bad config keeps the driver as it was
        wait_until(lambda: "configs.broken.pollInterval: Expected `float`, got `str`" in caplog.text,
                   what="the bad config named")
        assert "keeping it running as it was" in caplog.text and host.statuses["alpha"].state == "running"
        api.set_labels({CONFIG_LABEL: None})
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == 2, what="back to the default config")

        # Widget stayed throughout: same registration, rebuilt drivers took over its endpoint.
        assert kubelet.registration_count(WIDGET) == 1 and kubelet.registration_count(GIZMO) == 1
        assert kubelet.resources[WIDGET].stream_open
        # beta was never touched.
        assert gadget.stream_open and gadget.updates == gadget_updates and kubelet.registration_count(GADGET) == 1


def test_label_present_at_start_is_used_from_the_first_scan(kubelet, api, tmp_path):
    api.set_labels({CONFIG_LABEL: "shared"})
    alpha = RebuildingPlugin()
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    with running_host(kubelet.directory, {"alpha": alpha}, drivers={"alpha": PER_NODE}, environ=env):
        view = kubelet.wait_devices(WIDGET, lambda v: v.capacity == 8)
        # Created once, with the label's config: no detour through the default config.
        assert len(alpha.drivers) == 1 and sorted(view.devices)[:2] == ["widget-0::0", "widget-0::1"]


@pytest.mark.parametrize(("by_label", "count"), [
    ({"default": "two"}, 2),  # the explicit default
    ({}, 1),  # no default: the base section
    ({"configs": {"default": {"resources": {WIDGET: {"count": 3}}}}}, 3),  # NVIDIA's "named" fallback
])
def test_without_node_name_the_default_config_applies(kubelet, by_label, count, caplog):
    section = {**PER_NODE, "configByLabel": {"label": CONFIG_LABEL, "configs": PER_NODE["configByLabel"]["configs"],
                                             **by_label}}
    with running_host(kubelet.directory, {"alpha": RebuildingPlugin()}, drivers={"alpha": section}) as host:
        kubelet.wait_devices(WIDGET, lambda v: v.capacity == count)
        assert host._label_watcher is None and "node labels are not known" in host.statuses["alpha"].reason


@pytest.mark.parametrize(("by_label", "key", "message"), [
    ({"label": "example.com/a/b", "configs": {"x": {}}}, "label", "is not a Kubernetes label key: has more than one"),
    ({"label": "Example.com/cfg", "configs": {"x": {}}}, "label", "prefix 'Example.com' is not a DNS subdomain"),
    ({"label": "example.com/-cfg", "configs": {"x": {}}}, "label", "name '-cfg' must be 1-63 characters"),
    ({"label": "multidp.io/alpha", "configs": {"x": {}}}, "label", "turns the driver on and off"),
    ({"configs": {"x": {}}}, "label", "is required"),
    ({"label": CONFIG_LABEL, "configs": ["two", "more"]}, "configs", "must be a mapping of names, not list"),
    ({"label": CONFIG_LABEL}, "configs", "must be a mapping of names, not nothing"),
    ({"label": CONFIG_LABEL, "configs": {}}, "configs", "is empty"),
    ({"label": CONFIG_LABEL, "configs": {"x": 3}}, "configs.x", "must be a mapping of the driver's keys, not int"),
    ({"label": CONFIG_LABEL, "configs": {"x y": {}}}, "configs.x y", "a config name must be a label value"),
    ({"label": CONFIG_LABEL, "configs": {"x": {"enabled": False}}}, "configs.x.enabled", "cannot be set per config"),
    ({"label": CONFIG_LABEL, "configs": {"x": {}}, "default": "big"}, "default", "'big' is not among configs "
     "(known: x)"),
    ({"label": CONFIG_LABEL, "configs": {"x": {}}, "defaults": "x"}, "defaults", "unknown key"),
])
def test_config_by_label_errors_name_the_key(tmp_path, by_label, key, message):
    config = tmp_path / "multidp.yaml"
    config.write_text(yaml.safe_dump({"drivers": {"alpha": {"configByLabel": by_label}}}))
    with pytest.raises(ConfigError) as err:
        load_settings({"config": str(config)}, {})
    assert err.value.key == f"drivers.alpha.configByLabel.{key}"
    assert message in err.value.message and err.value.source == str(config)


def test_config_by_label_must_be_a_mapping(tmp_path):
    config = tmp_path / "multidp.yaml"
    config.write_text("drivers:\n  alpha:\n    configByLabel: example.com/cfg\n")
    with pytest.raises(ConfigError, match=r"drivers.alpha.configByLabel: must be a mapping"):
        load_settings({"config": str(config)}, {})


def test_config_check_validates_every_per_node_config(tmp_path):
    settings = make_settings(tmp_path, {"alpha": PER_NODE})
    settings.drivers = ["alpha"]
    (entry,) = [e for e in driver_report(settings, PluginRegistry(extra={"alpha": SamplePlugin()}))
                if e["name"] == "alpha"]
    assert entry["status"] == "failed"
    assert "drivers.alpha.configByLabel.configs.broken.pollInterval: Expected `float`, got `str`" in entry["reason"]
    good = {**PER_NODE, "configByLabel": {**PER_NODE["configByLabel"], "configs": {"two": {"pollInterval": 2}}}}
    settings.driver_sections = {"alpha": {**good, "resources": {WIDGET: {"count": "one"}}}}
    (entry,) = [e for e in driver_report(settings, PluginRegistry(extra={"alpha": SamplePlugin()}))
                if e["name"] == "alpha"]
    assert "drivers.alpha.resources[...].count: Expected `int`, got `str`" in entry["reason"]


def test_merge_and_select():
    base = {"resources": {WIDGET: {"count": 1, "numaNodes": 2}}, "pollInterval": 1, "cdi": True, "list": [1, 2]}
    overlay = {"resources": {WIDGET: {"count": 4}, GIZMO: {"count": 1}}, "cdi": None, "list": [3]}
    assert merge(base, overlay) == {"resources": {WIDGET: {"count": 4, "numaNodes": 2}, GIZMO: {"count": 1}},
                                    "pollInterval": 1, "list": [3]}
    assert base["resources"][WIDGET] == {"count": 1, "numaNodes": 2} and base["cdi"] is True  # not changed
    by_label = parse_config_by_label("alpha", {"label": CONFIG_LABEL, "configs": {"default": {}, "ts": None}},
                                     "drivers.alpha.configByLabel")
    assert by_label.configs == {"default": {}, "ts": {}}
    assert select(by_label, {}).chosen == "default"  # named fallback
    assert select(by_label, {CONFIG_LABEL: ""}).chosen == "default"  # an empty value is no value
    assert select(by_label, {CONFIG_LABEL: "ts"}).chosen == "ts"
    unknown = select(by_label, {CONFIG_LABEL: "tx"})  # a typo at first start: the default applies
    assert unknown.unknown and unknown.chosen == "default" and not unknown.kept and unknown.known == ("default", "ts")
    kept = select(by_label, {CONFIG_LABEL: "tx"}, running="ts")  # later: the config it runs with stays
    assert kept.unknown and kept.kept and kept.chosen == "ts"
    assert select(by_label, {CONFIG_LABEL: "tx"}, running="").chosen is None  # its section alone stays too
    assert not select(by_label, None).followed
    explicit = parse_config_by_label("alpha", {"label": CONFIG_LABEL, "default": "ts", "configs": {"default": {},
                                                                                                  "ts": {}}}, "x")
    assert select(explicit, {}).chosen == "ts"


def test_section_with_per_node_config_then_variables():
    section = {"pollInterval": 2, "preStart": False, "configByLabel": {
        "label": CONFIG_LABEL, "configs": {"fast": {"pollInterval": 0.5, "preStart": True}}}}
    env = {"MULTIDP_ALPHA_PRE_START": "false"}
    resolved = resolve_section("alpha", section, env, SampleConfig, {CONFIG_LABEL: "fast"})
    assert resolved.own == {"pollInterval": 0.5, "preStart": False}  # the variable beats the file's config
    assert resolve_section("alpha", section, {}, SampleConfig, {}).own == {"pollInterval": 2, "preStart": False}
    # configByLabel itself may come from a variable (a YAML flow mapping).
    env = {"MULTIDP_ALPHA_CONFIG_BY_LABEL": "{label: example.com/pool, configs: {a: {pollInterval: 3}}}"}
    resolved = resolve_section("alpha", {"pollInterval": 2}, env, SampleConfig, {"example.com/pool": "a"})
    assert resolved.own == {"pollInterval": 3} and resolved.selection and resolved.selection.chosen == "a"
    with pytest.raises(ConfigError, match="MULTIDP_ALPHA_CONFIG_BY_LABEL.label: 'Bad/Key' is not a Kubernetes"):
        resolve_section("alpha", {}, {"MULTIDP_ALPHA_CONFIG_BY_LABEL": "{label: Bad/Key, configs: {a: {}}}"},
                        SampleConfig)


def test_config_by_annotation_names_its_own_key_in_errors():
    with pytest.raises(ConfigError, match=re.escape("configByLabel.annotation: is required, a string")):
        parse_config_by_label("alpha", {"annotation": 5, "configs": {"a": {}}}, "drivers.alpha.configByLabel")
    # an annotation cannot turn a driver on or off, so multidp.io/<driver> is a fine annotation key
    parsed = parse_config_by_label("alpha", {"annotation": "multidp.io/alpha", "configs": {"a": {}}}, "x")
    assert parsed.kind == "annotation" and parsed.label == "multidp.io/alpha"


def test_a_label_typo_keeps_the_last_good_state(kubelet, api, tmp_path, caplog):
    """multidp.io/beta=yes is no reason to withdraw devices pods use: the last good value holds."""
    env = {"NODE_NAME": NODE, "KUBECONFIG": str(api.kubeconfig(tmp_path))}
    drivers = {**DRIVERS, "beta": {**DRIVERS["beta"], "enabled": False}}
    with running_host(kubelet.directory, plugins(), drivers=drivers, environ=env) as host:
        api.set_labels(multidp_io_beta="true")
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 3)
        api.set_labels(multidp_io_beta="yes")
        wait_until(lambda: (host.node.labels or {}).get("multidp.io/beta") == "yes", what="the typo seen")
        assert host.statuses["beta"].state == "running" and kubelet.resources[GADGET].capacity == 3
        assert "multidp.io/beta='yes' is neither true nor false: ignored; the driver keeps its last good" \
            in caplog.text
        api.set_labels(multidp_io_beta=None)  # removed: the config (off) decides again
        kubelet.wait_devices(GADGET, lambda v: v.capacity == 0, what="back to the config's default")
