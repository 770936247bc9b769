"""The drivers.fpga config section: defaults, validation with key names, environment variables."""

from __future__ import annotations

import pytest
from multidp import ConfigError
from multidp.testing import driver_config

from multidp_fpga import plugin
from multidp_fpga.config import FpgaConfig, validate


def convert(section: dict, environ: dict | None = None) -> FpgaConfig:
    return validate(driver_config(plugin, section, name="fpga", environ=environ or {}, source="test.yaml"))


def test_defaults():
    config = convert({})
    assert (config.mode, config.intel, config.amd, config.amd_legacy_names) == ("af", True, True, False)
    assert config.names == {}
    assert 0.25 <= config.poll_interval <= 0.5


def test_camel_case_keys_and_environment_variables():
    config = convert({"amdLegacyNames": True}, {"MULTIDP_FPGA_MODE": "region", "MULTIDP_FPGA_AMD": "false"})
    assert config.mode == "region"
    assert config.amd is False
    assert config.amd_legacy_names is True


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"mode": "orchestrated"}, "drivers.fpga.mode", "orchestrated"),
        ({"intel": "maybe"}, "drivers.fpga.intel", "bool"),
        ({"colour": "blue"}, "drivers.fpga", "colour"),
        ({"pollInterval": 0}, "drivers.fpga.pollInterval", "between"),
        ({"intel": False, "amd": False}, "drivers.fpga", "enabled: false"),
        ({"names": {"amd.com/x-1": "amd.com/" + "u" * 64}}, "drivers.fpga.names['amd.com/x-1']", "63"),
        ({"names": {"amd.com/x-1": "no-slash"}}, "drivers.fpga.names['amd.com/x-1']", "'/'"),
        ({"names": {"amd.com/x-1": "kubernetes.io/fpga"}}, "drivers.fpga.names['amd.com/x-1']", "kubernetes.io"),
    ],
)
def test_bad_values_name_their_key(section, key, words):
    with pytest.raises(ConfigError) as caught:
        convert(section)
    assert caught.value.key.startswith(key), caught.value
    assert words in str(caught.value)


def test_valid_overrides_are_kept():
    config = convert({"names": {"amd.com/xilinx_u200_xdma_201830_2-1561465320": "amd.com/u200"}})
    assert config.names == {"amd.com/xilinx_u200_xdma_201830_2-1561465320": "amd.com/u200"}
