"""An incumbent's selectors match as that incumbent matches them: exact strings (gomatch.py).

Sources, at the commits the other tables cite:
- k8snetworkplumbingwg/sriov-network-device-plugin pkg/resources/deviceSelectors.go: ``contains`` (exact),
  ``getItem`` (the first pfNames/rootDevices item with that name, ``strings.EqualFold``), ``isSelected``
  (a list it cannot parse selects nothing); pkg/utils/utils.go ``GetPfName`` (a VF's PF's first netdev;
  a PF has none); pkg/devices/gen_net.go ``NewGenNetDevice`` (link type: the first netdev's EncapType,
  else the PF name's).
- Mellanox/k8s-rdma-shared-dev-plugin pkg/resources/device_selectors.go ``contains`` (exact);
  pkg/resources/pci_net_device.go ``NewPciNetDevice`` (ifName and link type from the first netdev only:
  a function without netdev has link type "").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from rdma_helpers import LOGGER

from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.gomatch import exact_selection
from multidp_rdma.incumbents import MELLANOX_RULES, SRIOV_RULES
from multidp_rdma.inventory import PciFunction, Port, RdmaDevice
from multidp_rdma.poolconfig import Rules, Selectors
from multidp_rdma.pools import matches


def _device(*, address: str = "0000:86:00.2", netdevs: tuple[str, ...] = ("ens5f0v0",), link_type: str = "ether",
            pf_address: str | None = "0000:86:00.0", pf_netdevs: tuple[str, ...] = ("ens5f0",),
            pf_link_type: str = "ether", vf_index: int | None = 0, port: str = "Ethernet") -> RdmaDevice:
    pci = PciFunction(address, vendor="15b3", device="1018", driver="mlx5_core", netdevs=netdevs,
                      pf_address=pf_address, pf_netdevs=pf_netdevs, vf_index=vf_index, link_type=link_type,
                      pf_link_type=pf_link_type)
    return RdmaDevice("mlx5_2", Path("/x"), pci=pci, ports=(Port(1, Path("/x"), link_layer=port),),
                      netdevs=netdevs)


SRIOV_CASES = [
    ({"vendors": ["15b3"]}, {}, True),
    ({"vendors": ["0x15b3"]}, {}, False),
    ({"vendors": ["15B3"]}, {}, False),
    ({"device_ids": ["1018"]}, {}, True),
    ({"device_ids": ["0x1018"]}, {}, False),
    ({"drivers": [" mlx5_core"]}, {}, False),
    ({"pci_addresses": ["0000:86:00.2"]}, {}, True),
    ({"pci_addresses": ["86:00.2"]}, {}, False),
    ({"pci_addresses": ["0000:86:00.2 "]}, {}, False),
    ({"link_types": ["ether"]}, {}, True),
    ({"link_types": ["eth"]}, {}, False),
    ({"link_types": ["roce"]}, {}, False),
    ({"link_types": ["Ether"]}, {}, False),
    # The first netdev's link type, not the port's.
    ({"link_types": ["infiniband"]}, {"link_type": "infiniband", "port": "Ethernet"}, True),
    # No netdev: the PF name's link type.
    ({"link_types": ["ether"]}, {"netdevs": (), "link_type": ""}, True),
    ({"link_types": ["infiniband"]}, {"netdevs": (), "link_type": "", "pf_link_type": "ether"}, False),
    ({"root_devices": ["0000:86:00.0"]}, {}, True),
    ({"root_devices": ["86:00.0"]}, {}, False),
    ({"root_devices": ["0000:86:0A.0"]}, {"pf_address": "0000:86:0a.0"}, True),  # EqualFold
    ({"root_devices": ["0000:86:00.0#1"]}, {}, False),
    # getItem: only the first item naming the PF counts.
    ({"pf_names": ["ens5f0#1", "ens5f0#0"]}, {}, False),
    ({"pf_names": ["ens5f0#0", "ens5f0#1"]}, {}, True),
    ({"pf_names": ["ENS5F0#0"]}, {}, True),  # EqualFold
    # isSelected: an index list it cannot parse selects nothing.
    ({"pf_names": ["ens5f0#x"]}, {}, False),
    ({"pf_names": ["ens5f0#0#1"]}, {}, False),
    ({"pf_names": ["ens5f0#0-1-2"]}, {}, False),
    ({"pf_names": ["ens5f0#+0"]}, {}, True),  # strconv.Atoi takes a sign
    # GetPfName: the PF's first netdev only; a PF has no PF name.
    ({"pf_names": ["ens5f0np0"]}, {"pf_netdevs": ("ens5f0", "ens5f0np0")}, False),
    ({"pf_names": ["ens5f0"]}, {"pf_netdevs": ("ens5f0", "ens5f0np0")}, True),
    ({"pf_names": ["ens5f0"]}, {"pf_address": None, "netdevs": ("ens5f0",), "pf_netdevs": ("ens5f0",),
                                "vf_index": None}, False),
]


@pytest.mark.parametrize(("selectors", "device", "kept"), SRIOV_CASES)
def test_sriov_selectors_compare_as_the_sriov_plugin_does(selectors: dict[str, Any], device: dict[str, Any],
                                                          kept: bool) -> None:
    assert matches(exact_selection(**selectors), _device(**device), SRIOV_RULES) is kept


MELLANOX_CASES = [
    ({"vendors": ["15b3"]}, {}, True),
    ({"vendors": ["0x15b3"]}, {}, False),
    ({"device_ids": ["0x1018"]}, {}, False),
    ({"if_names": ["ens5f0v0"]}, {}, True),
    ({"if_names": ["ens5f0v0 "]}, {}, False),
    ({"link_types": ["ether"]}, {}, True),
    ({"link_types": ["eth"]}, {}, False),
    ({"link_types": ["ib"]}, {"link_type": "infiniband"}, False),
    ({"link_types": ["infiniband"]}, {"link_type": "infiniband"}, True),
    # No netdev: link type "", whatever the port or the PF says.
    ({"link_types": ["ether"]}, {"netdevs": (), "link_type": ""}, False),
    ({"link_types": ["infiniband"]}, {"netdevs": (), "link_type": "", "port": "InfiniBand"}, False),
]


@pytest.mark.parametrize(("selectors", "device", "kept"), MELLANOX_CASES)
def test_mellanox_selectors_compare_as_mellanox_does(selectors: dict[str, Any], device: dict[str, Any],
                                                     kept: bool) -> None:
    assert matches(exact_selection(**selectors), _device(**device), MELLANOX_RULES) is kept


@pytest.mark.parametrize("selectors", [{"vendors": ["0x15b3"]}, {"link_types": ["eth"]},
                                       {"pci_addresses": ["86:00.2"]}, {"pf_names": ["ens5f0np0"]}])
def test_multidps_own_pools_keep_normalising(selectors: dict[str, Any]) -> None:
    device = _device(pf_netdevs=("ens5f0", "ens5f0np0"))
    assert matches(Selectors(**selectors).selection(), device, Rules())


def test_discovery_reads_each_netdevs_link_type(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    driver.scan()
    pci = {d.name: d.pci for d in driver._discovery.devices}
    assert (pci["mlx5_0"].link_type, pci["mlx5_2"].link_type, pci["mlx5_2"].pf_link_type) == (
        "infiniband", "ether", "ether")


def _write(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize(
    ("doc", "resource", "words"),
    [
        ({"resourceList": [{"resourceName": "r", "selectors": {"isRdma": True, "vendors": ["0x15b3"]}}]},
         "intel.com/r", "resourceList[0] (intel.com/r): selectors.vendors[0]: '0x15b3' selects no device in the "
         "SR-IOV plugin, which compares the string as written with what it reads ('15b3'); it selects none here"),
        ({"resourceList": [{"resourceName": "r", "selectors": {"isRdma": True, "linkTypes": ["eth"]}}]},
         "intel.com/r", "selectors.linkTypes[0]: 'eth' selects no device in the SR-IOV plugin"),
        ({"configList": [{"resourceName": "r", "rdmaHcaMax": 2, "selectors": {"vendors": ["0x15b3"]}}]},
         "rdma/r", "configList[0].selectors.vendors[0]: '0x15b3' selects no device in Mellanox's plugin"),
        ({"configList": [{"resourceName": "r", "rdmaHcaMax": 2, "selectors": {"linkTypes": ["ib"]}}]},
         "rdma/r", "configList[0].selectors.linkTypes[0]: 'ib' selects no device in Mellanox's plugin, which "
         "compares the string as written with what it reads ('infiniband')"),
    ],
)
def test_a_value_the_incumbent_never_finds_selects_nothing_and_says_so(
        doc: dict[str, Any], resource: str, words: str, tmp_path: Path, standard: FakeRdmaNode, make_driver,
        caplog) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = make_driver(standard, configFile=_write(tmp_path, doc), deviceInfoDir="off")
        assert not driver.scan().get(resource)
    assert any(words in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
