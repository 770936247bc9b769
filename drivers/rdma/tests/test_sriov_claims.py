"""An SR-IOV file's devices go to the first selector object that selects them, served here or not.

k8snetworkplumbingwg/sriov-network-device-plugin (commit 40b6f507e74c) cmd/sriovdp/manager.go:
``initServers`` walks ``configList`` and each entry's ``SelectorObjs`` in order, and
``excludeAllocatedDevices`` keeps a device out of every later object once one has taken it,
whether or not that object asks for RDMA. The SR-IOV plugin keeps serving the entries multidp
skips, so a device such an entry takes must never be served here too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from rdma_helpers import LOGGER

from multidp_rdma.faketree import FakeRdmaNode

VFS = ["0000:86:00.2", "0000:86:00.3"]  # the standard node's VFs (device 1018); the PF has VFs: never taken
RDMA = {"isRdma": True, "devices": ["1018"]}


def _file(tmp_path: Path, entries: list[dict[str, Any]]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"resourceList": entries}))
    return str(path)


def _served(driver: Any) -> dict[str, list[str]]:
    return {name: sorted(d.id for d in devices) for name, devices in driver.scan().items()}


@pytest.mark.parametrize(
    ("entries", "served"),
    [
        # A plain netdevice entry first takes both VFs: the RDMA entry after it gets none.
        ([{"resourceName": "eth", "selectors": {"devices": ["1018"]}}, {"resourceName": "r", "selectors": RDMA}],
         {}),
        # ... one VF only: the other is served.
        ([{"resourceName": "eth", "selectors": {"pciAddresses": [VFS[0]]}}, {"resourceName": "r", "selectors": RDMA}],
         {"intel.com/r": [VFS[1]]}),
        # After the RDMA entry, it takes nothing from it.
        ([{"resourceName": "r", "selectors": RDMA}, {"resourceName": "eth", "selectors": {"devices": ["1018"]}}],
         {"intel.com/r": VFS}),
        # Inside one entry: a non-RDMA object before the RDMA one takes its devices first ...
        ([{"resourceName": "r", "selectors": [{"pciAddresses": [VFS[1]]}, RDMA]}], {"intel.com/r": [VFS[0]]}),
        # ... after it, nothing.
        ([{"resourceName": "r", "selectors": [RDMA, {"pciAddresses": [VFS[1]]}]}], {"intel.com/r": VFS}),
        # A non-RDMA object that selects nothing here takes nothing (its vendor as sysfs writes it: exact).
        ([{"resourceName": "eth", "selectors": {"vendors": ["8086"]}}, {"resourceName": "r", "selectors": RDMA}],
         {"intel.com/r": VFS}),
        # Accelerator and auxNetDevice entries take other devices (class 0x12, auxiliary devices).
        ([{"resourceName": "acc", "deviceType": "accelerator", "selectors": {"devices": ["1018"]}},
          {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": {"devices": ["1018"]}},
          {"resourceName": "r", "selectors": RDMA}], {"intel.com/r": VFS}),
        # An entry whose selectors do not decode is not in the plugin's configList: it takes nothing.
        ([{"resourceName": "bad", "selectors": {"devices": "1018"}}, {"resourceName": "r", "selectors": RDMA}],
         {"intel.com/r": VFS}),
    ],
)
def test_devices_go_to_the_first_selector_object_in_file_order(entries: list[dict[str, Any]],
                                                               served: dict[str, list[str]], tmp_path: Path,
                                                               standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard, configFile=_file(tmp_path, entries), deviceInfoDir="off")
    assert _served(driver) == served


@pytest.mark.parametrize("key", ["pKeys", "ddpProfiles", "acpiIndexes", "vdpaType"])
def test_an_object_multidp_cannot_evaluate_is_taken_to_claim_what_its_others_select(
        key: str, tmp_path: Path, standard: FakeRdmaNode, make_driver, caplog) -> None:
    value: Any = "virtio" if key == "vdpaType" else ["x"]
    entries = [{"resourceName": "eth", "selectors": {"pciAddresses": [VFS[0]], key: value}},
               {"resourceName": "r", "selectors": RDMA}]
    with caplog.at_level(logging.WARNING, LOGGER):
        driver = make_driver(standard, configFile=_file(tmp_path, entries), deviceInfoDir="off")
    assert _served(driver) == {"intel.com/r": [VFS[1]]}
    assert any(f"resourceList[0] (intel.com/eth).selectors: multidp cannot evaluate {key}; it assumes the SR-IOV "
               "plugin takes every device" in r.getMessage() for r in caplog.records)
