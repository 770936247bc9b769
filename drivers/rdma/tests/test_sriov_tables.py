"""The SR-IOV network device plugin's published tests, ported as tables, and its device-info files.

Each table cites the test it comes from in k8snetworkplumbingwg/sriov-network-device-plugin (commit
40b6f507e74c). Its selector tests run mock devices through one selector; here the same devices run
through this driver's matcher under the SR-IOV plugin's rules.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from multidp import AllocationRequest
from multidp.testing import create_driver as create_on_node
from rdma_helpers import LOGGER, multidp_command

import multidp_rdma.plugin
from multidp_rdma.devinfo import DEFAULT_DIR
from multidp_rdma.driver import RdmaDriver
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.incumbents import SRIOV_RULES
from multidp_rdma.inventory import PciFunction, Port, RdmaDevice
from multidp_rdma.poolconfig import Rules, Selectors
from multidp_rdma.pools import matches


def _vf(address: str = "0000:03:02.0", *, vendor: str = "15b3", device: str = "1018", driver: str = "mlx5_core",
        pf_name: str = "", pf_address: str | None = None, vf_index: int | None = None,
        link: str = "Ethernet") -> RdmaDevice:
    pci = PciFunction(address, vendor=vendor, device=device, driver=driver, pf_address=pf_address,
                      pf_netdevs=(pf_name,) if pf_name else (), vf_index=vf_index)
    return RdmaDevice("mlx5_9", Path("/x"), pci=pci, ports=(Port(1, Path("/x"), link_layer=link),))


def _selected(selectors: dict[str, Any], device: RdmaDevice, rules: Rules = SRIOV_RULES) -> bool:
    return matches(Selectors(**selectors).selection(), device, rules)


# pkg/resources/deviceSelectors_test.go: "vendor selector", "device selector", "driver selector",
# "pciAddress selector", "linkType selector" (each: the devices it keeps and drops).
@pytest.mark.parametrize(
    ("selectors", "device", "kept"),
    [
        ({"vendors": ["8086"]}, {"vendor": "8086"}, True),
        ({"vendors": ["8086"]}, {"vendor": "15b3"}, False),
        ({"device_ids": ["10ed"]}, {"device": "10ed"}, True),
        ({"device_ids": ["10ed"]}, {"device": "154c"}, False),
        ({"drivers": ["vfio-pci"]}, {"driver": "vfio-pci"}, True),
        ({"drivers": ["vfio-pci"]}, {"driver": "i40evf"}, False),
        ({"pci_addresses": ["0000:03:02.0", "0000:03:02.1"]}, {"address": "0000:03:02.0"}, True),
        ({"pci_addresses": ["0000:03:02.0", "0000:03:02.1"]}, {"address": "0000:03:02.1"}, True),
        ({"pci_addresses": ["0000:03:02.0", "0000:03:02.1"]}, {"address": "0000:03:02.2"}, False),
        ({"pci_addresses": ["0000:03:02.0", "0000:03:02.1"]}, {"address": "0000:03:02.3"}, False),
        ({"link_types": ["ether"]}, {"link": "Ethernet"}, True),
        ({"link_types": ["ether"]}, {"link": "InfiniBand"}, False),
    ],
)
def test_simple_selectors(selectors: dict[str, Any], device: dict[str, Any], kept: bool) -> None:
    assert _selected(selectors, _vf(**device)) is kept


# pkg/resources/deviceSelectors_test.go "pfName selector": ["ens0", "ens2f0#1", "ens2f1#0,3-5,7"] over
# (PF name, function index) → kept. Its mock dev0/dev1 (index -1) stand for VFs of ens0/eth0 here: a
# device with index -1 is a PF, which has no PF name in that plugin (utils.GetPfName) and so is never kept.
PF_NAMES = ["ens0", "ens2f0#1", "ens2f1#0,3-5,7"]
PF_CASES = [("ens0", 0, True), ("eth0", 0, False), ("ens2f0", 1, True), ("ens2f1", 0, True), ("ens2f1", 1, False),
            ("ens2f1", 2, False), ("ens2f1", 3, True), ("ens2f1", 4, True), ("ens2f1", 5, True),
            ("ens2f1", 6, False), ("ens2f1", 7, True), ("ENS2F1", 7, True)]  # EqualFold in getItem


@pytest.mark.parametrize(("pf_name", "index", "kept"), PF_CASES)
def test_pf_names_selector(pf_name: str, index: int, kept: bool) -> None:
    device = _vf(pf_name=pf_name, pf_address="0000:86:00.0", vf_index=index)
    assert _selected({"pf_names": PF_NAMES}, device) is kept


def test_pf_names_never_keep_a_pf_under_the_sriov_rules() -> None:
    pf = RdmaDevice("mlx5_1", Path("/x"), pci=PciFunction("0000:86:00.0", netdevs=("ens0",), pf_netdevs=("ens0",)))
    assert not _selected({"pf_names": ["ens0"]}, pf)
    assert _selected({"pf_names": ["ens0"]}, pf, Rules())  # multidp's own pools: a PF by its own name


# pkg/resources/deviceSelectors_test.go "rootDevice selector": ["0000:86:00.0", "0000:86:00.1#1",
# "0000:86:00.2#0-2,5,7"] over (PF address, function index) → kept.
ROOT_CASES = [("0000:86:00.0", 0, True), ("0000:a0:00.0", 0, False), ("0000:86:00.1", 1, True),
              ("0000:86:00.2", 0, True), ("0000:86:00.2", 1, True), ("0000:86:00.2", 2, True),
              ("0000:86:00.2", 3, False), ("0000:86:00.2", 4, False), ("0000:86:00.2", 5, True),
              ("0000:86:00.2", 6, False), ("0000:86:00.2", 7, True)]


@pytest.mark.parametrize(("pf_address", "index", "kept"), ROOT_CASES)
def test_root_devices_selector(pf_address: str, index: int, kept: bool) -> None:
    device = _vf(pf_address=pf_address, vf_index=index)
    assert _selected({"root_devices": ["0000:86:00.0", "0000:86:00.1#1", "0000:86:00.2#0-2,5,7"]}, device) is kept


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(text)
    return str(path)


def test_its_docs_own_spelling_is_read_with_warnings(tmp_path: Path, standard: FakeRdmaNode, make_driver,
                                                     caplog) -> None:
    # docs/config-file/README.md writes "IsRdma", "NeedVhostNet" and "SelectorObj": null; here with IsRdma true.
    path = _write(tmp_path, '{"resourceList":[{"resourceName":"sriovnics","selectors":{"pfNames":["ens5f0#0-4"],'
                            '"IsRdma":true,"NeedVhostNet":false},"SelectorObj":null}]}')
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = make_driver(standard, configFile=path)
    assert sorted(d.id for d in driver.scan()["intel.com/sriovnics"]) == ["0000:86:00.2", "0000:86:00.3"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: resourceList[0]: 'SelectorObj' is not a key of the SR-IOV plugin's config; it ignores them and "
        "so does multidp (check the spelling)"]


def test_an_entry_not_served_here_never_fails_the_others(tmp_path: Path, standard: FakeRdmaNode, make_driver,
                                                         caplog) -> None:
    path = _write(tmp_path, """{"resourceList": [
        {"resourceName": "bad.name", "selectors": {"vendors": ["8086"], "pKeys": ["0x1"], "ddpProfiles": ["x"]}},
        {"resourceName": "nosel"},
        {"resourceName": "empty", "selectors": []},
        {"resourceName": "typed", "selectors": {"isRdma": "yes"}},
        {"resourceName": "acc", "deviceType": "accelerator", "selectors": {"vendors": 5}},
        {"resourceName": "rdma", "selectors": {"isRdma": true, "vendors": ["15b3"], "devices": ["1018"]},
         "Colour": "blue"}]}""")
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = make_driver(standard, configFile=path)
    assert list(driver.scan()) == ["intel.com/rdma"]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for words in ("resourceList[0] (intel.com/bad.name) is skipped: it does not ask for RDMA",
                  "resourceList[1] (intel.com/nosel) is skipped: it has no selectors",
                  "resourceList[2] (intel.com/empty) is skipped: unable to get SelectorObj from selectors: error, "
                  "need at least one selector, got 0",
                  "resourceList[3] (intel.com/typed) is skipped: unable to get SelectorObj from selectors: "
                  "selectors.isRdma: a JSON string where Go's decoder needs true or false",
                  "resourceList[4] (intel.com/acc) is skipped: deviceType accelerator",
                  "resourceList[5]: 'Colour' is not a key"):
        assert words in messages


def test_a_pool_that_selects_nothing_is_warned_about(tmp_path: Path, standard: FakeRdmaNode, make_driver,
                                                      caplog) -> None:
    path = _write(tmp_path, '{"resourceList": [{"resourceName": "none", "selectors": {"isRdma": true, '
                            '"devices": ["abcd"]}}]}')
    with caplog.at_level(logging.WARNING, LOGGER):
        assert make_driver(standard, configFile=path).scan() == {}
    assert ("pool intel.com/none selects none of the 5 RDMA device(s) on this node: it is not served until one "
            "appears (check its selectors)") in [r.getMessage() for r in caplog.records]


def test_issm_is_handed_out_and_in_info_as_the_sriov_plugin_does(tmp_path: Path, node: FakeRdmaNode,
                                                                 make_driver) -> None:
    node.add_function("0000:3b:00.0", netdevs=["ib0"])
    node.add_rdma("mlx5_0", "0000:3b:00.0")
    path = _write(tmp_path, '{"resourceList": [{"resourceName": "ib", "selectors": {"isRdma": true}}]}')
    driver = make_driver(node, configFile=path, deviceInfoDir="off")
    driver.scan()
    answer = driver.allocate(AllocationRequest("intel.com/ib", ("0000:3b:00.0",), ("0000:3b:00.0",)))
    info = json.loads(answer.envs["PCIDEVICE_INTEL_COM_IB_INFO"])["0000:3b:00.0"]["rdma"]
    assert info == {"uverbs": "/dev/infiniband/uverbs0", "umad": "/dev/infiniband/umad0",
                    "issm": "/dev/infiniband/issm0", "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx5_0"}
    assert "/dev/infiniband/issm0" in {n.host_path for n in answer.device_nodes}


# pkg/netdevice/netResourcePool_test.go "StoreDeviceInfoFile": type pci, the PCI address, the RDMA
# device; network-attachment-definition-client pkg/utils/cniconfig.go: the path, the name, 0444.
def test_device_info_files_as_the_sriov_plugin_writes_them(tmp_path: Path, standard: FakeRdmaNode,
                                                          make_driver) -> None:
    devinfo = tmp_path / "devinfo"
    stale = devinfo / "dp" / "mellanox.com-mlnx_sriov_rdma-0000:86:00.3-device.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    path = _write(tmp_path, '{"resourceList": [{"resourceName": "mlnx_sriov_rdma", "resourcePrefix": '
                            '"mellanox.com", "selectors": {"isRdma": true, "devices": ["1018"]}}]}')
    driver = make_driver(standard, configFile=path, deviceInfoDir=str(devinfo))
    driver.scan()
    assert not stale.exists()  # removed when the pool is first served, as at the plugin's Start
    driver.allocate(AllocationRequest("mellanox.com/mlnx_sriov_rdma", ("0000:86:00.2",), ("0000:86:00.2",)))
    written = devinfo / "dp" / "mellanox.com-mlnx_sriov_rdma-0000:86:00.2-device.json"
    assert written.read_bytes() == (b'{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:86:00.2",'
                                    b'"rdma-device":"mlx5_2"}}')
    assert stat.S_IMODE(written.stat().st_mode) == 0o444
    driver.allocate(AllocationRequest("mellanox.com/mlnx_sriov_rdma", ("0000:86:00.2",), ("0000:86:00.2",)))
    assert written.exists()  # written again over the old one
    driver.close()
    assert not written.exists()  # removed when it stops serving, as at the plugin's Stop


def test_device_info_is_off_on_a_fake_tree_unless_asked(tmp_path: Path, standard: FakeRdmaNode,
                                                        make_driver) -> None:
    driver = make_driver(standard)
    driver.scan()
    driver.allocate(AllocationRequest("rdma/hca", ("0000:86:00.2",), ("0000:86:00.2",)))
    assert driver._devinfo is None


@pytest.mark.parametrize(("written", "folder"), [("off", None), ("no", None), ("'off'", None), ("on", DEFAULT_DIR),
                                                 ("auto", DEFAULT_DIR), ("/run/devinfo", "/run/devinfo")])
def test_an_unquoted_off_for_device_info_dir_means_off(tmp_path: Path, written: str, folder: str | None) -> None:
    # YAML 1.1 reads an unquoted off (or no) as false and on as true, in MULTIDP_RDMA_* as in the file.
    driver = create_on_node(multidp_rdma.plugin, {}, name="rdma", sysfs_root="/sys", dev_root=tmp_path,
                            environ={"MULTIDP_RDMA_DEVICE_INFO_DIR": written})
    try:
        assert isinstance(driver, RdmaDriver)
        assert (None if driver._devinfo is None else str(driver._devinfo.base)) == folder
    finally:
        driver.close()


def test_config_check_takes_an_unquoted_off_for_device_info_dir(tmp_path: Path) -> None:
    config = tmp_path / "multidp.yaml"
    config.write_text("drivers:\n  rdma:\n    deviceInfoDir: off\n    udev: off\n")
    result = multidp_command("config", "check", "--config", str(config), "--drivers", "rdma")
    assert result.returncode == 0, result.stderr
