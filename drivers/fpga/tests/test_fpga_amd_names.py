"""MA35 transcoders and DeviceNameCustomize / NameCustomize.json, built from AMD's source.

Reference (AMD's plugin has no tests): Xilinx/FPGA_as_a_Service k8s-device-plugin at cac8e91, fpga.go
GetAMADevices (bus_id, device_info, "MA35"), server.go NewFPGADevicePlugin, getMatchKey and
getModifiedDSAtype (the table's keys, '*', the 6-character uuid, '+' and quotes, the 60-character cut).
"""

from __future__ import annotations

import json
import logging

import pytest
from multidp import ConfigError, Health
from multidp.testing import check_config, create_driver

import multidp_fpga.plugin
from fpga_helpers import U200, U200_RES, allocate, by_id, ids, nodes_of
from multidp_fpga.amdnames import Facts, amd_name, load_name_table
from multidp_fpga.fakesys import U30_SHELL

UUID = "0b2c0ff4e0a1b2c3d4e5f60718293a4b"  # fakesys writes it to logic_uuids: AMD keeps "293a4b"
NAME_FILE = "/opt/xilinx/device-plugin-configmap/NameCustomize.json"


def make(node, environ=None, **section):
    return create_driver(multidp_fpga.plugin, {"intel": False, **section}, name="fpga", sysfs_root=node.sys,
                         dev_root=node.dev, environ=environ or {})


def table_file(tmp_path, rules) -> str:
    path = tmp_path / "NameCustomize.json"
    path.write_text(rules if isinstance(rules, str) else json.dumps(rules))
    return str(path)


# MA35 ----------------------------------------------------------------------------------------------


def test_an_ma35_is_served_by_its_bus_id_with_its_node(node):
    node.ma35("0000:c1:00.0", numa=1)
    driver = make(node)
    inventory = driver.scan()
    assert ids(inventory) == {"amd.com/MA35": ["0000:c1:00.0"]}
    assert by_id(inventory)["0000:c1:00.0"][1].numa_nodes == (1,)
    assert nodes_of(allocate(driver, "amd.com/MA35", "0000:c1:00.0")) == [("/dev/ama_transcoder0", "rwm")]


def test_ma35_shares_and_a_missing_node(node):
    node.ma35("0000:c1:00.0")
    (node.dev / "ama_transcoder0").unlink()
    inventory = make(node, {"VirtualDev": "True", "VirtualNum": "2"}).scan()
    assert ids(inventory) == {"amd.com/MA35": ["0000:c1:00.0-0", "0000:c1:00.0-1"]}
    assert all(d.health is Health.UNHEALTHY for d in inventory["amd.com/MA35"])


def test_an_ma35_without_a_product_name_is_left_out_with_a_log_line(node, caplog):
    # AMD's plugin would serve it as "amd.com/-0" (no board name), which the kubelet refuses.
    node.ma35("0000:c1:00.0", product=None)
    with caplog.at_level(logging.WARNING):
        assert make(node).scan() == {}
    assert any("no 'Product name' line" in r.getMessage() for r in caplog.records)


# NameCustomize.json --------------------------------------------------------------------------------

# (rules, resource for an Alveo U200 card, resource for an MA35): as AMD's server.go names them.
X40 = "x" * 40
RULES = [
    ({"u200-xilinx_u200_xdma_201830_2-1561465320": "'alveo-'+deviceType"}, "amd.com/alveo-u200", "amd.com/MA35-0"),
    ({"*-*-293a4b": "'by-uuid'"}, "amd.com/by-uuid", "amd.com/MA35-0"),
    ({"U200-*-*": "shellVer+'-'+SN"}, "amd.com/xilinx_u200_xdma_201830_2-S1", "amd.com/MA35-0"),
    # An MA35's timestamp is "0"; its uuid "ma35" is not 6 characters, so AMD never matches it.
    ({"MA35-MA35-ma35": "'never'", "MA35-MA35-0": "'transcoder'", "*-*-*": "'any'"}, "amd.com/any",
     "amd.com/transcoder"),
    ({"*-*-*": "deviceID+'-'+SN"}, "amd.com/0x5001-S1", "amd.com/0x5070-MA35D0001"),
    ({"*-*-*": "'" + "n" * 61 + "'"}, U200_RES, "amd.com/MA35-0"),  # over 60 characters: AMD's default name
    ({}, U200_RES, "amd.com/MA35-0"),  # no rule matches: <shell>-<timestamp>, even for an MA35
]


@pytest.mark.parametrize(("rules", "alveo", "ma35"), RULES)
def test_name_rules(node, tmp_path, rules, alveo, ma35):
    node.alveo_card("0000:65:00", *U200, serial="S1")
    node.ma35("0000:c1:00.0")
    driver = make(node, {"DeviceNameCustomize": "True"}, amdNameCustomizeFile=table_file(tmp_path, rules))
    found = {d.id: resource for resource, devices in driver.scan().items() for d in devices}
    assert found == {"0000:65:00.1": alveo, "0000:c1:00.0": ma35}


def test_a_name_the_kubelet_would_refuse_is_left_out_with_a_log_line(node, tmp_path, caplog):
    node.alveo_card("0000:65:00", *U200)
    driver = make(node, amdNameCustomize=True, amdNameCustomizeFile=table_file(tmp_path, {"*-*-*": "'a-'+DBDF"}))
    with caplog.at_level(logging.WARNING):
        assert driver.scan() == {}
    assert any("'amd.com/a-0000:65:00.1' is not valid" in r.getMessage() for r in caplog.records)


def test_one_name_for_every_card(node, tmp_path):
    node.alveo_card("0000:65:00", *U200)
    node.ma35("0000:c1:00.0")
    driver = make(node, amdNameCustomize=True, amdNameCustomizeFile=table_file(tmp_path, {"*-*-*": f"'{X40}'"}))
    assert ids(driver.scan()) == {f"amd.com/{X40}": ["0000:c1:00.0", "0000:65:00.1"]}


def test_common_u30_names_win_over_the_table(node, tmp_path):
    node.u30_card(("0000:17:00", "0000:18:00"), serial="X")
    driver = make(node, {"DeviceNameCustomize": "True"},
                  amdNameCustomizeFile=table_file(tmp_path, {"*-*-*": "'mine'"}))
    assert ids(driver.scan()) == {"amd.com/ama_u30": ["0000:17:00.1"]}


def test_first_matching_rule_in_file_order_wins():
    table = load_name_table_from({"*-*-*": "'first'", "u200-*-*": "'second'"})
    facts = Facts("xilinx_u200_xdma_201830_2", "1561465320")
    assert amd_name(facts, True, table, False) == ("amd.com/first", "")


def load_name_table_from(rules, tmp_path=None):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "n.json"
        path.write_text(json.dumps(rules))
        return load_name_table(path, str(path), "drivers.fpga.amdNameCustomizeFile")


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "is not JSON"),
    ('["a"]', "JSON object"),
    ('{"u200-xilinx_u200": "x"}', "<deviceType>-<shellVer>-<timestamp"),
    ('{"a-b-c": 3}', "non-empty string"),
    ('{"a-b-c": "index"}', "uses 'index'"),
    ('{"a-b-c": "shellVer+bogus"}', "'bogus'"),
    # server.go json.Unmarshal's a flat map; deep nesting must be a refusal, not a RecursionError.
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_tables_are_refused_naming_the_file_and_key(node, tmp_path, content, words):
    path = table_file(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        make(node, {"DeviceNameCustomize": "True"}, amdNameCustomizeFile=path)
    assert words in str(caught.value) and path in str(caught.value)


def test_a_missing_table_is_refused(node, tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        make(node, amdNameCustomize=True, amdNameCustomizeFile=str(tmp_path / "absent.json"))


def test_the_table_is_not_read_while_customisation_is_off(node, tmp_path):
    node.alveo_card("0000:65:00", *U200)
    assert ids(make(node, amdNameCustomizeFile=str(tmp_path / "absent.json")).scan()) == {U200_RES: ["0000:65:00.1"]}


# config check: the file at its pod path, read from a local copy, no sysfs touched --------------------


def test_config_check_reads_the_table_at_its_local_copy(tmp_path):
    good = table_file(tmp_path, {"*-*-*": "'ok'"})
    assert check_config(multidp_fpga.plugin, {"amdNameCustomize": True}, name="fpga",
                        files={NAME_FILE: good}) == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"only-two": "x"}')
    with pytest.raises(ConfigError, match="only-two"):
        check_config(multidp_fpga.plugin, {}, name="fpga", environ={"DeviceNameCustomize": "True"},
                     files={NAME_FILE: bad})


def test_config_check_reports_amds_variables_as_warnings():
    found = check_config(multidp_fpga.plugin, {}, name="fpga", environ={"U30AllocUnit": "Cards", "VirtualNum": "0"})
    assert any("U30AllocUnit" in w for w in found) and any("VirtualNum" in w for w in found)


def test_u30_shell_type_is_u30_under_both_conventions():
    assert Facts("ama_u30", "1").deviceType == "u30"
    assert Facts(U30_SHELL, "1").deviceType == "u30"
    assert Facts("MA35", "0").deviceType == "MA35"
