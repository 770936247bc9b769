"""Settings precedence (flag > env > file), and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from multidp.config.sections import convert_section, driver_section
from multidp.config.settings import load_settings, parse_bool
from multidp.errors import ConfigError
from multidp.testing import SampleConfig


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults():
    settings = load_settings({}, {})
    assert str(settings.plugin_dir) == "/var/lib/kubelet/device-plugins"
    assert str(settings.kubelet_socket_path) == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert settings.drivers is None and not settings.strict and settings.metrics_address is None
    assert str(settings.cdi_dir) == "/var/run/cdi"


def test_flag_beats_env_beats_file(tmp_path):
    config = write(tmp_path, "pluginDir: /from/file\ncdiDir: /cdi/file\nlogFormat: json\nstrict: true\n")
    env = {"MULTIDP_CONFIG": config, "MULTIDP_PLUGIN_DIR": "/from/env", "MULTIDP_CDI_DIR": "/cdi/env"}
    settings = load_settings({"plugin_dir": "/from/flag"}, env)
    assert str(settings.plugin_dir) == "/from/flag"
    assert str(settings.cdi_dir) == "/cdi/env"
    assert settings.log_format == "json" and settings.strict is True
    assert str(settings.kubelet_socket_path) == "/from/flag/kubelet.sock"


@pytest.mark.parametrize("text", ["1", "true", "YES", "On"])
def test_booleans_true(text):
    assert parse_bool(text, "X") is True


@pytest.mark.parametrize("text", ["0", "false", "No", "OFF"])
def test_booleans_false(text):
    assert parse_bool(text, "X") is False


def test_bad_boolean_names_the_variable():
    with pytest.raises(ConfigError, match=r"MULTIDP_STRICT: 'maybe' is not a boolean"):
        load_settings({}, {"MULTIDP_STRICT": "maybe"})


def test_drivers_list_and_all():
    assert load_settings({}, {"MULTIDP_DRIVERS": "nvidia, rdma"}).drivers == ["nvidia", "rdma"]
    assert load_settings({}, {"MULTIDP_DRIVERS": "all"}).drivers is None


@pytest.mark.parametrize(("text", "message"), [
    ("pluginDir: [1, 2]", r"pluginDir: Expected `str \| null`, got `array`"),
    ("timeouts:\n  allocate: -1\n", r"timeouts must be positive, allocate is -1"),
    ("bogus: 1\n", r"Object contains unknown field `bogus`"),
    ("drivers:\n  rdma:\n    enabled: maybe\n", r"drivers.rdma.enabled: must be true or false"),
    ("- just\n- a list\n", r"the top level must be a mapping"),
    ("a: [unclosed\n", r"not valid YAML"),
])
def test_config_file_errors_name_the_key_and_the_file(tmp_path, text, message):
    config = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings({"config": config}, {})
    assert config in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="cannot read config file: No such file"):
        load_settings({"config": "/nonexistent/multidp.yaml"}, {})


def test_metrics_address_is_checked():
    assert load_settings({"metrics_address": ":9400"}, {}).metrics_address == "0.0.0.0:9400"
    with pytest.raises(ConfigError, match="is not host:port"):
        load_settings({"metrics_address": "9400"}, {})


def test_driver_section_with_env_overrides_matched_to_declared_keys():
    section = {"pollInterval": 2, "enabled": True}
    env = {"MULTIDP_SAMPLE_POLL_INTERVAL": "0.5", "MULTIDP_SAMPLE_PRE_START": "true", "MULTIDP_SAMPLE_ENABLED": "no",
           "MULTIDP_OTHER_POLL_INTERVAL": "9"}
    enabled, own = driver_section("sample", section, env, SampleConfig)
    assert enabled is False
    assert own == {"pollInterval": 0.5, "preStart": True}
    config = convert_section("sample", own, SampleConfig, None)
    assert config.poll_interval == 0.5 and config.pre_start is True


def test_driver_section_errors_name_the_driver_key():
    with pytest.raises(ConfigError, match=r"drivers.sample.pollInterval: Expected `float`, got `str`"):
        convert_section("sample", {"pollInterval": "fast"}, SampleConfig, "/etc/multidp.yaml")
    with pytest.raises(ConfigError, match=r"drivers.sample: Object contains unknown field `pollinterval`"):
        convert_section("sample", {"pollinterval": 1}, SampleConfig, None)


def test_driver_without_a_config_type_gets_a_plain_dict():
    assert convert_section("x", {"a": 1}, None, None) == {"a": 1}


@pytest.mark.parametrize(("env", "variable", "words"), [
    ({"MULTIDP_SAMPLE_COLOUR": "blue"}, "MULTIDP_SAMPLE_COLOUR", "unknown field `colour` (sets drivers.sample.colour)"),
    ({"MULTIDP_SAMPLE_POLL_INTERVAL": "soon"}, "MULTIDP_SAMPLE_POLL_INTERVAL",
     "Expected `float`, got `str` (sets drivers.sample.pollInterval)"),
])
def test_a_bad_variable_is_named_not_only_its_key(env, variable, words):
    # A stray or mistyped MULTIDP_<DRIVER>_<KEY> fails the driver: the operator must learn which variable.
    from multidp.config.sections import convert_resolved, resolve_section

    resolved = resolve_section("sample", {}, env, SampleConfig)
    with pytest.raises(ConfigError) as caught:
        convert_resolved("sample", resolved, SampleConfig, None)
    assert caught.value.key == variable
    assert words in caught.value.message
