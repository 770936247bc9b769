"""The incumbents' config files read as they are: the same pools as the native config, and clear refusals."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from multidp import ConfigError
from multidp.testing import driver_config
from rdma_helpers import LOGGER, create_driver, health, multidp_command

import multidp_rdma.plugin
from multidp_rdma.config import RdmaConfig, resolve_pools
from multidp_rdma.faketree import FakeRdmaNode

# As Mellanox documents k8s-rdma-shared-dev-plugin's config.json (ConfigMap rdma-devices).
MELLANOX = """\
{
  "periodicUpdateInterval": 300,
  "configList": [
    {
      "resourceName": "hca_shared_devices_a",
      "rdmaHcaMax": 1000,
      "selectors": {
        "vendors": ["15b3"],
        "linkTypes": ["infiniband"]
      }
    },
    {
      "resourceName": "hca_shared_devices_b",
      "resourcePrefix": "example.com",
      "rdmaHcaMax": 500,
      "devices": ["ens5f0"]
    }
  ]
}
"""
MELLANOX_NATIVE = {"rescanInterval": 300, "pools": [
    {"resourceName": "hca_shared_devices_a", "resourcePrefix": "rdma", "mode": "shared", "rdmaHcaMax": 1000,
     "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]}},
    {"resourceName": "hca_shared_devices_b", "resourcePrefix": "example.com", "mode": "shared", "rdmaHcaMax": 500,
     "selectors": {"ifNames": ["ens5f0"]}},
]}

# As the SR-IOV network device plugin documents /etc/pcidp/config.json (ConfigMap sriovdp-config):
# a plain netdevice pool, an RDMA pool (isRdma in selectors), and an older entry with isRdma beside them.
SRIOV = """\
{
    "resourceList": [{
            "resourceName": "intel_sriov_netdevice",
            "selectors": {
                "vendors": ["8086"],
                "devices": ["154c", "10ed"],
                "drivers": ["iavf", "ixgbevf"]
            }
        },
        {
            "resourceName": "mlnx_sriov_rdma",
            "resourcePrefix": "mellanox.com",
            "selectors": {
                "vendors": ["15b3"],
                "devices": ["1018"],
                "drivers": ["mlx5_core"],
                "isRdma": true
            }
        },
        {
            "resourceName": "infiniband_rdma_netdevs",
            "isRdma": true,
            "selectors": {
                "linkTypes": ["infiniband"]
            }
        }
    ]
}
"""
SRIOV_NATIVE = {"pools": [
    {"resourceName": "mlnx_sriov_rdma", "resourcePrefix": "mellanox.com",
     "selectors": {"vendors": ["15b3"], "deviceIDs": ["1018"], "drivers": ["mlx5_core"], "pfsWithVfs": False}},
    {"resourceName": "infiniband_rdma_netdevs", "resourcePrefix": "intel.com",
     "selectors": {"linkTypes": ["infiniband"], "pfsWithVfs": False}},
]}


def _config(**section: Any) -> RdmaConfig:
    config = driver_config(multidp_rdma.plugin, section, name="rdma")
    assert isinstance(config, RdmaConfig)
    return config


def _file(tmp_path: Path, text: str, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_mellanox_file_gives_the_native_pools(tmp_path: Path) -> None:
    loaded = _config(configFile=_file(tmp_path, MELLANOX))
    native = _config(**MELLANOX_NATIVE)
    assert resolve_pools(loaded) == resolve_pools(native)
    assert loaded.rescan_seconds == native.rescan_seconds == 300


def test_mellanox_keys_pasted_inline_give_the_same_pools() -> None:
    inline = _config(**json.loads(MELLANOX))
    assert resolve_pools(inline) == resolve_pools(_config(**MELLANOX_NATIVE))
    assert inline.rescan_seconds == 300


def test_sriov_file_gives_the_native_pools_and_skips_plain_netdevices(tmp_path: Path, caplog) -> None:
    path = _file(tmp_path, SRIOV)
    with caplog.at_level(logging.WARNING, LOGGER):
        loaded = _config(configFile=path)
    assert resolve_pools(loaded) == resolve_pools(_config(**SRIOV_NATIVE))
    assert loaded.rescan_seconds == 30
    skipped = [r.getMessage() for r in caplog.records]
    assert skipped == [f"{path}: resourceList[0] (intel.com/intel_sriov_netdevice) is skipped: it does not ask "
                       "for RDMA (isRdma); it stays with the SR-IOV plugin"]


def test_sriov_file_serves_what_the_sriov_plugin_would(tmp_path: Path, standard: FakeRdmaNode) -> None:
    inventory = create_driver(standard, configFile=_file(tmp_path, SRIOV)).scan()
    assert set(health(inventory, "mellanox.com/mlnx_sriov_rdma")) == {"0000:86:00.2", "0000:86:00.3"}
    assert set(health(inventory, "intel.com/infiniband_rdma_netdevs")) == {"0000:3b:00.0", "0000:5e:00.0"}
    assert set(inventory) == {"mellanox.com/mlnx_sriov_rdma", "intel.com/infiniband_rdma_netdevs"}


def test_sriov_selector_list_ignored_keys_and_skipped_objects(tmp_path: Path, standard: FakeRdmaNode,
                                                             caplog) -> None:
    path = _file(tmp_path, """{"resourceList": [
        {"resourceName": "vfs", "resourcePrefix": "example.com", "excludeTopology": true,
         "selectors": [{"pfNames": ["ens5f0#1"], "isRdma": true, "needVhostNet": true},
                       {"rootDevices": ["0000:86:00.0#0"], "isRdma": false},
                       {"pciAddresses": ["0000:3b:00.0"], "isRdma": true, "needVhostNet": true}]},
        {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": {"auxTypes": ["sf"], "isRdma": true}}
    ]}""")
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = create_driver(standard, configFile=path)
    assert set(health(driver.scan(), "example.com/vfs")) == {"0000:86:00.3", "0000:3b:00.0"}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: resourceList[0].selectors[1] (example.com/vfs) is skipped: it does not ask for RDMA (isRdma)",
        f"{path}: resourceList[1] (intel.com/sf) is skipped: deviceType auxNetDevice is not served by this driver; "
        "it stays with the SR-IOV plugin",
        f"{path}: excludeTopology is accepted and not applied: NUMA nodes are always reported here",
        f"{path}: needVhostNet is accepted and not applied: no /dev/vhost-net is handed out here",
    ]


@pytest.mark.parametrize(
    ("periodic", "rescan", "logged"),
    [(10, 10, None), (0, 3600, "periodicUpdateInterval 0 (no periodic update"),
     (7200, 3600, "periodicUpdateInterval 7200 s is above 3600 s")],
)
def test_periodic_update_interval_becomes_the_rescan_interval(periodic: int, rescan: float, logged: str | None,
                                                             tmp_path: Path, caplog) -> None:
    text = MELLANOX.replace('"periodicUpdateInterval": 300', f'"periodicUpdateInterval": {periodic}')
    with caplog.at_level(logging.WARNING, LOGGER):
        assert _config(configFile=_file(tmp_path, text)).rescan_seconds == rescan
    messages = [r.getMessage() for r in caplog.records]
    assert (messages == []) if logged is None else (len(messages) == 1 and messages[0].startswith(logged))


def test_rescan_interval_given_beside_periodic_update_interval_wins(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        assert _config(configFile=_file(tmp_path, MELLANOX), rescanInterval=5).rescan_seconds == 5
        assert _config(periodicUpdateInterval=20).rescan_seconds == 20
    assert [r.getMessage() for r in caplog.records] == [
        "rescanInterval 5 s is set, so periodicUpdateInterval 300 is not used"]


def _refusal(tmp_path: Path, text: str | None, **section: Any) -> str:
    path = str(tmp_path / "missing.json") if text is None else _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        _config(configFile=path, **section)
    assert caught.value.key == "drivers.rdma"
    return caught.value.message.replace(path, "FILE")


def test_a_file_that_is_no_regular_file_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # reading it would block for ever
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ConfigError) as caught:
            _config(configFile=path)
        assert f"{path}: cannot read config file: not a regular file" in caught.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "configFile: FILE: cannot read config file: No such file or directory"),
        ("[" * 20_000, "configFile: FILE: not valid JSON: nested too deeply to read"),
        ("{}" + " " * (1 << 20), "configFile: FILE: cannot read config file: over the limit of 1 MiB"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5,\n  "selectors": {"vendors": ["15b3"]},}]}',
         "configFile: FILE: not valid JSON: Expecting property name enclosed in double quotes at line 2 column 38"),
        ("[]", "configFile: FILE: the top level must be a JSON object, not list"),
        ('{"resources": []}', "configFile: FILE: has neither configList (Mellanox's k8s-rdma-shared-dev-plugin) nor "
                              "resourceList (the SR-IOV network device plugin); keys found: resources"),
        ('{"configList": [], "resourceList": []}', "configFile: FILE: has both configList"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "selector": {"vendors": ["15b3"]}}]}',
         "configFile: FILE: configList[0]: Object contains unknown field `selector`"),
        ('{"resourceList": [{"resourceName": "a", "selectors": {"isRDMA": true}}]}',
         "configFile: FILE: resourceList[0].selectors: Object contains unknown field `isRDMA`"),
        ('{"periodicUpdateInterval": "300", "configList": []}',
         "configFile: FILE: periodicUpdateInterval: Expected `int | null`, got `str`"),
        ('{"periodicUpdateInterval": -1, "configList": []}',
         "configFile: FILE: periodicUpdateInterval: must be 0 (no periodic update) or more seconds, not -1"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib0"],'
         ' "selectors": {"vendors": ["15b3"]}}]}',
         "configFile: FILE: configList[0]: give selectors or devices, not both"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "selectors": {}}]}',
         "configFile: FILE: configList[0]: give selectors or devices"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 0, "devices": ["ib0"]}]}',
         "configFile: FILE: configList[0]: rdmaHcaMax: must be between 1 and 100000, not 0"),
        ('{"configList": [{"resourceName": "a b", "rdmaHcaMax": 5, "devices": ["ib0"]}]}',
         "configFile: FILE: configList[0]: resourceName: resource name 'rdma/a b'"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib0"]},'
         ' {"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib1"]}]}',
         "configFile: FILE: configList[1]: resource 'rdma/a' is already the resource of FILE: configList[0]"),
        ('{"resourceList": [{"resourceName": "a", "selectors": {"devices": ["cx6"], "isRdma": true}}]}',
         "configFile: FILE: resourceList[0].selectors: devices[0]: 'cx6' is not a hexadecimal PCI ID"),
        ('{"resourceList": [{"resourceName": "a", "selectors": []}]}',
         "configFile: FILE: resourceList[0].selectors: an empty list (the SR-IOV plugin refuses it too)"),
        ('{"resourceList": [{"resourceName": "a", "selectors": [{"isRdma": true}, {"pKeys": ["0x8001"], '
         '"isRdma": true}]}]}', "configFile: FILE: resourceList[0].selectors[1]: pKeys: selecting by InfiniBand "
                                "partition key is not supported by this driver"),
        ('{"resourceList": [{"resourceName": "a", "deviceType": "vfio", "selectors": {"isRdma": true}}]}',
         "configFile: FILE: resourceList[0].deviceType: Invalid enum value 'vfio'"),
    ],
)
def test_bad_file_is_refused_naming_file_and_key(tmp_path: Path, text: str | None, words: str) -> None:
    assert words in _refusal(tmp_path, text)


def test_config_file_with_pools_or_config_list_is_refused(tmp_path: Path) -> None:
    assert _refusal(tmp_path, MELLANOX, pools=[]).startswith("pools and configFile: give only one of them")
    assert _refusal(tmp_path, MELLANOX, configList=[]).startswith("configFile and configList: give only one")


def test_config_check_reports_a_bad_file_like_any_rdma_config_error(tmp_path: Path) -> None:
    bad = _file(tmp_path, '{"resourceList": [{"resourceName": "a", "selectors": {"isRdma": true, "vendor": []}}]}')
    config = tmp_path / "multidp.yaml"
    config.write_text(f"drivers:\n  rdma:\n    configFile: {bad}\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 2
    assert (f"driver rdma: bad config: drivers.rdma: configFile: {bad}: resourceList[0].selectors: Object contains "
            f"unknown field `vendor` (in {config})") in result.stderr
    config.write_text(f"drivers:\n  rdma:\n    configFile: {_file(tmp_path, MELLANOX, 'good.json')}\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 0, result.stderr
