"""The incumbents' config files read as they are: the same pools as the native config, and clear refusals."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidp import ConfigError, Driver, DriverContext
from multidp.testing import driver_config
from rdma_helpers import LOGGER, health, multidp_command

import multidp_rdma.plugin
from multidp_rdma.config import Pool, RdmaConfig, Rules, resolve_pools
from multidp_rdma.driver import RdmaDriver
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
# a plain netdevice pool, an RDMA pool (isRdma in selectors), and an entry with isRdma beside its
# selectors, where releases before 2020 read it: today's plugin has no such key (pkg/types/types.go
# ResourceConfig), so it serves that entry as a plain netdevice pool, and so multidp leaves it to it.
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
    {"resourceName": "mlnx_sriov_rdma", "resourcePrefix": "mellanox.com", "includeIssm": True,
     "selectors": {"vendors": ["15b3"], "deviceIDs": ["1018"], "drivers": ["mlx5_core"], "pfsWithVfs": False}},
]}


def _config(**section: Any) -> RdmaConfig:
    config = driver_config(multidp_rdma.plugin, section, name="rdma")
    assert isinstance(config, RdmaConfig)
    return config


def _file(tmp_path: Path, text: str, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _pools(driver: RdmaDriver) -> list[Pool]:
    # The rules are compared apart; so are the selections: an incumbent's match its exact strings (gomatch.py).
    return [msgspec.structs.replace(pool, rules=Rules(), selections=()) for pool in driver.pools]


def test_mellanox_file_gives_the_native_pools(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    loaded = make_driver(standard, configFile=_file(tmp_path, MELLANOX))
    native = make_driver(standard, **MELLANOX_NATIVE)
    assert _pools(loaded) == _pools(native)
    assert loaded.config.rescan_seconds == native.config.rescan_seconds == 300
    assert {p.rules for p in loaded.pools} == {Rules(origin="mellanox", overlap=True, first_netdev=True,
                                                     index_ids=True, devinfo=False)}
    assert {p.rules for p in native.pools} == {Rules()}


def test_mellanox_keys_pasted_inline_give_the_same_pools_and_rules() -> None:
    inline = _config(**json.loads(MELLANOX))
    native = _config(**MELLANOX_NATIVE)
    assert [msgspec.structs.replace(p, rules=Rules(), selections=()) for p in resolve_pools(inline)] == [
        msgspec.structs.replace(p, selections=()) for p in resolve_pools(native)]
    assert {p.rules.origin for p in resolve_pools(inline)} == {"mellanox"}
    assert {s.exact for p in resolve_pools(inline) for s in p.selections} == {True}
    assert {s.exact for p in resolve_pools(native) for s in p.selections} == {False}
    assert inline.rescan_seconds == 300


def test_shared_ids_can_be_chosen() -> None:
    assert {p.rules.index_ids for p in resolve_pools(_config(**json.loads(MELLANOX), sharedIds="replicas"))} == {
        False}
    assert {p.rules.index_ids for p in resolve_pools(_config(**MELLANOX_NATIVE, sharedIds="index"))} == {True}


def test_sriov_file_gives_the_native_pools_and_skips_the_others(tmp_path: Path, standard: FakeRdmaNode,
                                                              make_driver, caplog) -> None:
    path = _file(tmp_path, SRIOV)
    with caplog.at_level(logging.WARNING, LOGGER):
        loaded = make_driver(standard, configFile=path)
    assert _pools(loaded) == _pools(make_driver(standard, **SRIOV_NATIVE))
    assert {p.rules for p in loaded.pools} == {Rules(origin="sriov", sriov_pf=True)}
    assert loaded.config.rescan_seconds == 30
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: resourceList[0] (intel.com/intel_sriov_netdevice) is skipped: it does not ask for RDMA (isRdma); "
        "it stays with the SR-IOV plugin, which takes the devices it selects before any later entry can",
        f"{path}: resourceList[2]: 'isRdma' is not a key of the SR-IOV plugin's config; it ignores them and so "
        "does multidp (check the spelling)",
        f"{path}: resourceList[2] (intel.com/infiniband_rdma_netdevs) is skipped: it does not ask for RDMA (isRdma); "
        "it stays with the SR-IOV plugin, which takes the devices it selects before any later entry can"]


def test_sriov_file_serves_what_the_sriov_plugin_would(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    inventory = make_driver(standard, configFile=_file(tmp_path, SRIOV)).scan()
    assert set(health(inventory, "mellanox.com/mlnx_sriov_rdma")) == {"0000:86:00.2", "0000:86:00.3"}
    assert set(inventory) == {"mellanox.com/mlnx_sriov_rdma"}


def test_sriov_resource_prefix_flag(tmp_path: Path, standard: FakeRdmaNode, make_driver) -> None:
    text = SRIOV.replace('"resourcePrefix": "mellanox.com",', "")
    inventory = make_driver(standard, configFile=_file(tmp_path, text), sriovResourcePrefix="example.org").scan()
    assert set(inventory) == {"example.org/mlnx_sriov_rdma"}


def test_sriov_selector_list_ignored_keys_and_skipped_objects(tmp_path: Path, standard: FakeRdmaNode,
                                                             make_driver, caplog) -> None:
    path = _file(tmp_path, """{"resourceList": [
        {"resourceName": "vfs", "resourcePrefix": "example.com", "excludeTopology": true,
         "selectors": [{"pfNames": ["ens5f0#1"], "isRdma": true, "needVhostNet": true},
                       {"rootDevices": ["0000:86:00.0#0"], "isRdma": false},
                       {"pciAddresses": ["0000:3b:00.0"], "isRdma": true, "needVhostNet": true}]},
        {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": {"auxTypes": ["sf"], "isRdma": true}}
    ]}""")
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = make_driver(standard, configFile=path)
    assert set(health(driver.scan(), "example.com/vfs")) == {"0000:86:00.3", "0000:3b:00.0"}
    label = f"{path}: resourceList[0] (example.com/vfs)"
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == [
        f"{label}: selectors[1] do(es) not ask for RDMA (isRdma): those devices stay with the SR-IOV plugin, which "
        "serves them under the same name example.com/vfs, while multidp serves the RDMA ones: two plugins registering "
        "one resource name replace each other at the kubelet; give those selectors a resource of their own",
        f"{label}: excludeTopology is accepted and not applied: NUMA nodes are always reported here",
        f"{label}: needVhostNet is accepted and not applied: no /dev/vhost-net is handed out here",
    ]
    assert f"{path}: resourceList[1] (intel.com/sf) is skipped: deviceType auxNetDevice is not served by this " \
           "driver; it stays with the SR-IOV plugin" in messages


def _check(section: dict[str, Any], files: dict[str, Path] | None = None) -> Driver:
    """The driver as `multidp config check` creates it (checking: validate, touch no hardware)."""
    context = DriverContext(name="rdma", config=_config(**section), sysfs_root=Path("/nonexistent/sys"),
                            checking=True, files=files or {})
    return multidp_rdma.plugin.multidp_create_driver(context=context)


@pytest.mark.parametrize(
    ("periodic", "rescan", "logged"),
    [(10, 10, None), (0, 3600, "periodicUpdateInterval 0 (no periodic update"),
     (7200, 3600, "periodicUpdateInterval 7200 s is above 3600 s")],
)
def test_periodic_update_interval_becomes_the_rescan_interval(periodic: int, rescan: float, logged: str | None,
                                                             tmp_path: Path, caplog) -> None:
    text = MELLANOX.replace('"periodicUpdateInterval": 300', f'"periodicUpdateInterval": {periodic}')
    section: dict[str, Any] = {"configFile": _file(tmp_path, text)}
    with caplog.at_level(logging.WARNING, LOGGER):
        _check(section)
    messages = [r.getMessage() for r in caplog.records]
    assert (messages == []) if logged is None else (len(messages) == 1 and messages[0].startswith(logged))
    config = _config(**section)
    multidp_rdma.plugin.multidp_create_driver(context=DriverContext(name="rdma", config=config, checking=True))
    assert config.rescan_seconds == rescan


def test_rescan_interval_given_beside_periodic_update_interval_wins(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        config = _config(configFile=_file(tmp_path, MELLANOX), rescanInterval=5)
        multidp_rdma.plugin.multidp_create_driver(context=DriverContext(name="rdma", config=config, checking=True))
        assert config.rescan_seconds == 5
        assert _config(periodicUpdateInterval=20).rescan_seconds == 20
    assert [r.getMessage() for r in caplog.records] == [
        "rescanInterval 5 s is set, so periodicUpdateInterval 300 is not used"]


@pytest.mark.parametrize("text", [MELLANOX, '{"resourceList": [{"resourceName": "r", "selectors": {"isRdma": true}}]}'])
def test_periodic_update_interval_inline_wins_over_the_files(text: str, tmp_path: Path, caplog) -> None:
    config = _config(configFile=_file(tmp_path, text), periodicUpdateInterval=120)
    with caplog.at_level(logging.INFO, "multidp.driver"):
        multidp_rdma.plugin.multidp_create_driver(context=DriverContext(name="rdma", config=config, checking=True))
    assert config.rescan_seconds == 120
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    said = "drivers.rdma.periodicUpdateInterval 120 is set, so the file's periodicUpdateInterval 300 is not used"
    assert (said in messages) is (text == MELLANOX)


def test_checking_reads_the_local_copy_of_a_pod_path_and_touches_no_hardware(tmp_path: Path, caplog) -> None:
    local = Path(_file(tmp_path, MELLANOX))
    driver = _check({"configFile": "/etc/rdma/config.json"}, {"/etc/rdma": tmp_path})
    assert type(driver) is Driver  # nothing that scans or watches
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(local.read_text().replace('"rdmaHcaMax": 500', '"rdmaHcaMax": -1'))
    with pytest.raises(ConfigError) as caught:
        _check({"configFile": "/etc/rdma/config.json"}, {"/etc/rdma/config.json": bad / "config.json"})
    assert (caught.value.key, caught.value.source) == ("drivers.rdma.configFile", "/etc/rdma/config.json")
    assert caught.value.message == "configList[1].rdmaHcaMax: Invalid value for rdmaHcaMax < 0: -1"


def _refusal(tmp_path: Path, text: str | None, **section: Any) -> str:
    path = str(tmp_path / "missing.json") if text is None else _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        _check({"configFile": path, **section})
    assert caught.value.key == "drivers.rdma.configFile"
    assert caught.value.source == path
    return caught.value.message.replace(path, "FILE")


def test_a_file_that_is_no_regular_file_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # reading it would block for ever
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ConfigError) as caught:
            _check({"configFile": path})
        assert "cannot read config file: not a regular file" in caught.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "cannot read config file: No such file or directory"),
        ("[" * 20_000, "not valid JSON: nested too deeply to read"),
        ("{}" + " " * (1 << 20), "cannot read config file: over the limit of 1 MiB"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5,\n  "selectors": {"vendors": ["15b3"]},}]}',
         "not valid JSON: Expecting property name enclosed in double quotes at line 2 column 38"),
        ("[]", "the top level must be a JSON object, not list"),
        ('{"resources": []}', "has neither configList (Mellanox's k8s-rdma-shared-dev-plugin) nor "
                              "resourceList (the SR-IOV network device plugin); keys found: resources"),
        ('{"ConfigList": [], "resourcelist": []}', "has both configList"),
        # Go's decoder fails the whole file on a value of the wrong type, in both plugins.
        ('{"periodicUpdateInterval": "300", "configList": []}',
         "periodicUpdateInterval: a JSON string where Go's decoder needs an integer"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": "5", "devices": ["ib0"]}]}',
         "configList[0].rdmaHcaMax: a JSON string where Go's decoder needs an integer"),
        ('{"resourceList": [{"resourceName": 7, "selectors": {"isRdma": true}}]}',
         "resourceList[0].resourceName: a JSON number where Go's decoder needs a string"),
        # Mellanox's ValidateConfigs, in its words (pkg/resources/resources_manager.go).
        ('{"periodicUpdateInterval": -1, "configList": []}',
         'periodicUpdateInterval: invalid "periodicUpdateInterval" configuration "-1"'),
        ('{"configList": []}', "configList: no resources configuration found"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib0"],'
         ' "selectors": {"vendors": ["15b3"]}}]}',
         'configList[0]: configuration mismatch. Cannot specify both "selectors" and "devices" fields'),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "selectors": {}}]}',
         'configList[0]: error: configuration missmatch. neither "selectors" nor "devices" fields exits'),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": -100, "devices": ["ib0"]}]}',
         "configList[0].rdmaHcaMax: Invalid value for rdmaHcaMax < 0: -100"),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 100001, "devices": ["ib0"]}]}',
         "configList[0].rdmaHcaMax: 100001 is above 100000, the most IDs multidp advertises for one resource"),
        ('{"configList": [{"resourceName": "test_config$$", "rdmaHcaMax": 5, "devices": ["ib0"]}]}',
         'configList[0].resourceName: error: resource name "test_config$$" contains invalid characters'),
        # Go's RE2 "$" is the end of the text; Python's also matches before a final newline.
        ('{"configList": [{"resourceName": "a\\n", "rdmaHcaMax": 5, "devices": ["ib0"]}]}',
         'configList[0].resourceName: error: resource name "a\n" contains invalid characters'),
        ('{"resourceList": [{"resourceName": "b\\n", "selectors": {"isRdma": true}}]}',
         'resourceList[0].resourceName: resource name "b\n" contains invalid characters'),
        ('{"configList": [{"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib0"]},'
         ' {"resourceName": "a", "rdmaHcaMax": 5, "devices": ["ib1"]}]}',
         'configList[1].resourceName: error: resource name "a" already exists (also configList[0])'),
        # The SR-IOV plugin's readConfig and validConfigs (cmd/sriovdp/manager.go), for entries served here.
        ('{"resourceList": [{"resourceName": "a", "selectors": {"devices": ["cx6"], "isRdma": true}}]}',
         "resourceList[0].selectors: devices[0]: 'cx6' is not a hexadecimal PCI ID"),
        ('{"resourceList": [{"resourceName": "a", "selectors": [{"isRdma": true}, {"pKeys": ["0x8001"], '
         '"isRdma": true}]}]}', "resourceList[0].selectors[1].pKeys: selecting by InfiniBand partition key is not "
                                "supported by this driver"),
        ('{"resourceList": [{"resourceName": "a", "selectors": {"ddpProfiles": ["GTPv1-C/U IPv4/IPv6 payload"], '
         '"isRdma": true}}]}', "resourceList[0].selectors.ddpProfiles: selecting by Intel DDP profile (read with the "
                               "SR-IOV plugin's ddptool) is not supported by this driver; ignoring it would widen"),
        ('{"resourceList": [{"resourceName": "a", "deviceType": "vfio", "selectors": {"isRdma": true}}]}',
         'resourceList[0].deviceType: unsupported deviceType:  "vfio"'),
        ('{"resourceList": [{"resourceName": "invalid.name", "selectors": {"isRdma": true}}]}',
         'resourceList[0].resourceName: resource name "invalid.name" contains invalid characters'),
        ('{"resourceList": [{"resourceName": "d", "selectors": {"isRdma": true}},'
         ' {"resourceName": "d", "selectors": {"isRdma": true}}]}',
         'resourceList[1].resourceName: resource name "intel.com/d" already exists (resourceList[0])'),
        ('{"resourceList": [{"resourceName": "wrong_config", "selectors": {"isRdma": true, "vdpaType": "virtio"}}]}',
         "resourceList[0].selectors: invalid config: VdpaType and IsRdma are mutually exclusive options"),
        ('{"resourceList": [{"resourceName": "mixed_config", "selectors": [{"vdpaType": "virtio"},'
         ' {"isRdma": true, "vdpaType": "virtio"}]}]}',
         "resourceList[0].selectors[1]: invalid config: VdpaType and IsRdma are mutually exclusive options"),
    ],
)
def test_bad_file_is_refused_naming_file_and_key(tmp_path: Path, text: str | None, words: str) -> None:
    assert words in _refusal(tmp_path, text)


def test_config_file_with_pools_or_config_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pools and configFile: give only one of them"):
        _config(configFile="x.json", pools=[])
    with pytest.raises(ConfigError, match="configFile and configList: give only one"):
        _config(configFile="x.json", configList=[{"resourceName": "a", "rdmaHcaMax": 1, "devices": ["ib0"]}])


def test_a_pasted_config_list_is_strict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"configList\[0\]: unknown key\(s\) selectors.vendor"):
        _config(configList=[{"resourceName": "a", "rdmaHcaMax": 1, "selectors": {"vendor": ["15b3"]}}])


def test_config_check_reports_a_bad_file_like_any_rdma_config_error(tmp_path: Path) -> None:
    bad = _file(tmp_path, '{"resourceList": [{"resourceName": "a b", "selectors": {"isRdma": true}}]}')
    config = tmp_path / "multidp.yaml"
    config.write_text(f"drivers:\n  rdma:\n    configFile: {bad}\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 2
    assert (f'drivers.rdma.configFile: resourceList[0].resourceName: resource name "a b" contains invalid '
            f"characters (in {bad})") in result.stderr
    config.write_text(f"drivers:\n  rdma:\n    configFile: {_file(tmp_path, MELLANOX, 'good.json')}\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 0, result.stderr
