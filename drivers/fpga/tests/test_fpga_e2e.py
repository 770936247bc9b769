"""The fpga driver in a real multidp host, over real unix sockets, against the kubelet stand-in."""

from __future__ import annotations

import json

from multidp.testing import preferred_request, socket_name

import multidp_fpga.plugin
from fpga_helpers import (
    AF_IFACE_AFU,
    AF_IFACE_AFU2,
    AFU,
    AFU2,
    ALL_F,
    IFACE,
    REGION_IFACE,
    U200,
    U200_RES,
    U250,
    U250_RES,
)
from multidp_fpga.naming import REGION_MODE_ANNOTATION

FAST = {"pollInterval": 0.1}


def start(multidp_host, node, config=None, environ=None):
    return multidp_host({"fpga": multidp_fpga.plugin}, drivers={"fpga": {**FAST, **(config or {})}},
                        sysfs_root=node.sys, dev_root=node.dev, environ=environ or {})


def devices_of(response):
    return sorted((d.host_path, d.container_path, d.permissions) for d in response.devices)


def test_registers_both_vendors_under_compatible_names_and_allocates(kubelet, multidp_host, node):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU2], numa=0)
    node.dfl_card("0000:af:00.0", IFACE, [AFU], numa=1)
    node.alveo_card("0000:65:00", *U200, numa=0)
    node.alveo_card("0000:d8:00", *U250, numa=1, mgmt=False)
    start(multidp_host, node)
    for resource in (AF_IFACE_AFU, AF_IFACE_AFU2, U200_RES, U250_RES):
        reg = kubelet.wait_registered(resource)
        assert reg.endpoint == socket_name("fpga", resource)
    assert kubelet.errors == []
    view = kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.capacity == 2)
    assert view.devices == {"dfl-port.0": ("Healthy", (0,)), "dfl-port.2": ("Healthy", (1,))}
    kubelet.wait_devices(AF_IFACE_AFU2, lambda v: v.capacity == 1)
    response = kubelet.allocate(AF_IFACE_AFU2, 1)
    assert devices_of(response) == [("/dev/dfl-port.1", "/dev/dfl-port.1", "rw")]
    kubelet.wait_devices(U200_RES, lambda v: v.capacity == 1)
    response = kubelet.allocate(U200_RES, 1)
    assert devices_of(response) == [("/dev/dri/renderD128", "/dev/dri/renderD128", "rwm"),
                                    ("/dev/xclmgmt25856", "/dev/xclmgmt25856", "rwm")]
    kubelet.wait_devices(U250_RES, lambda v: v.capacity == 1)
    assert devices_of(kubelet.allocate(U250_RES, 1)) == [("/dev/dri/renderD129", "/dev/dri/renderD129", "rwm")]


def test_all_f_afu_goes_unhealthy_and_comes_back_in_list_and_watch(kubelet, multidp_host, node):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU])
    start(multidp_host, node)
    kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.allocatable == 2)
    node.set_afu_id("dfl-port.0", ALL_F)
    view = kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.devices.get("dfl-port.0", ("",))[0] == "Unhealthy",
                                what="dfl-port.0 Unhealthy")
    assert view.capacity == 2 and view.allocatable == 1
    assert not any("ffffff" in name for name in kubelet.resources)  # no all-f resource was registered
    node.set_afu_id("dfl-port.0", AFU)
    kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.allocatable == 2, what="dfl-port.0 Healthy again")


def test_missing_render_node_travels_too(kubelet, multidp_host, node):
    node.alveo_card("0000:65:00", *U200)
    start(multidp_host, node)
    kubelet.wait_devices(U200_RES, lambda v: v.allocatable == 1)
    (node.dev / "dri/renderD128").unlink()
    kubelet.wait_devices(U200_RES, lambda v: v.allocatable == 0 and v.capacity == 1, what="card Unhealthy")
    node.node("dri/renderD128")
    kubelet.wait_devices(U200_RES, lambda v: v.allocatable == 1, what="card Healthy again")


def test_hot_plug_registers_new_resources_and_withdraws_gone_ones(kubelet, multidp_host, node):
    node.alveo_card("0000:65:00", *U200)
    start(multidp_host, node)
    kubelet.wait_devices(U200_RES, lambda v: v.capacity == 1)
    node.dfl_card("0000:5e:00.0", IFACE, [AFU])
    kubelet.wait_registered(AF_IFACE_AFU)
    kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.allocatable == 1)
    node.remove_card("0000:65:00.1")
    kubelet.wait_devices(U200_RES, lambda v: v.capacity == 0, what="U200 withdrawn")


def test_region_mode_through_the_environment(kubelet, multidp_host, node):
    node.dfl_card("0000:5e:00.0", IFACE, [AFU, AFU2])
    start(multidp_host, node, environ={"MULTIDP_FPGA_MODE": "region"})
    kubelet.wait_devices(REGION_IFACE, lambda v: v.capacity == 1)
    response = kubelet.allocate(REGION_IFACE, 1)
    assert devices_of(response) == [("/dev/dfl-port.0", "/dev/dfl-port.0", "rw"),
                                    ("/dev/dfl-port.1", "/dev/dfl-port.1", "rw")]
    assert dict(response.annotations) == {REGION_MODE_ANNOTATION: "fpga.intel.com/region"}
    # As Intel's Allocate: the CDI device named after the FME, whose spec runs Intel's CRI hook.
    assert response.cdi_devices == ["intel.cdi.k8s.io/fpga=dfl-fme.0"]
    spec = json.loads((kubelet.directory / "cdi" / "multidp-fpga-intel.cdi.k8s.io_fpga.json").read_text())
    assert spec["kind"] == "intel.cdi.k8s.io/fpga"
    assert spec["devices"] == [{"name": "dfl-fme.0", "containerEdits": {"hooks": [
        {"hookName": "createRuntime", "path": "/opt/intel/fpga-sw/intel-fpga-crihook"}]}}]


def test_amd_u30_card_and_ma35_with_shared_ids(kubelet, multidp_host, node):
    node.u30_card(("0000:17:00", "0000:18:00"), serial="XFL1ABCD0001")
    node.ma35("0000:c1:00.0")
    start(multidp_host, node, environ={"VirtualDev": "True", "VirtualNum": "2"})
    view = kubelet.wait_devices("amd.com/ama_u30", lambda v: v.capacity == 2)
    assert set(view.devices) == {"0000:17:00.1-0", "0000:17:00.1-1"}
    response = kubelet.allocate("amd.com/ama_u30", 1)
    assert [d[0] for d in devices_of(response)] == ["/dev/dri/renderD128", "/dev/dri/renderD129",
                                                    "/dev/xclmgmt5888", "/dev/xclmgmt6144"]
    kubelet.wait_devices("amd.com/MA35", lambda v: v.capacity == 2)
    assert devices_of(kubelet.allocate("amd.com/MA35", 1)) == [
        ("/dev/ama_transcoder0", "/dev/ama_transcoder0", "rwm")]


def test_preferred_allocation_packs_by_numa(kubelet, multidp_host, node):
    for i, numa in enumerate((0, 1, 0, 1)):
        node.dfl_card(f"0000:{0x5e + i:02x}:00.0", IFACE, [AFU], numa=numa)
    start(multidp_host, node)
    view = kubelet.wait_devices(AF_IFACE_AFU, lambda v: v.capacity == 4)
    request = preferred_request(list(view.devices), 2)
    answer = kubelet.stub(AF_IFACE_AFU).GetPreferredAllocation(request, timeout=5)
    picked = list(answer.container_responses[0].deviceIDs)
    assert len(picked) == 2
    assert len({view.devices[i][1] for i in picked}) == 1, picked  # both on one NUMA node
