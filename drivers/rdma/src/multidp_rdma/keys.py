"""Every key, flag and variable of the two incumbents, and what this driver does with it.

The table is the driver's own statement; ``tests/incumbent_keys.json`` lists what the incumbents'
sources define, a test fails when that list has a key this table lacks, and
``docs/drop-in/rdma.md`` carries :func:`markdown` verbatim (checked by a test too).
Statuses: ``honoured`` (works as there), ``refused`` (the driver stops, with the message given),
``warned`` (accepted, not applied, one warning naming it), ``not applicable`` (with why).
"""

from __future__ import annotations

from typing import Literal

Status = Literal["honoured", "refused", "warned", "not applicable"]
Incumbent = Literal["mellanox", "sriov"]

_GLOG = "a Go logging flag; multidp logs with --log-format and the logging of its own config"
_ANY_CASE = "; keys match in any case, as Go's decoder matches them"

KEYS: dict[tuple[Incumbent, str], tuple[Status, str]] = {
    # Mellanox's k8s-rdma-shared-dev-plugin: pkg/types/types.go, cmd/k8s-rdma-shared-dp/main.go.
    ("mellanox", "--config-file"): ("honoured", "drivers.rdma.configFile (MULTIDP_RDMA_CONFIG_FILE)"),
    ("mellanox", "--use-cdi"): ("honoured", "drivers.rdma.useCdi: CDI kind nvidia.com/net-rdma, one device per PCI "
                                            "address, answered in the annotation cdi.k8s.io/nvidia.com_net-rdma"),
    ("mellanox", "--version"): ("not applicable", "multidp --version prints multidp's"),
    ("mellanox", "-v"): ("not applicable", "the short --version; multidp --version prints multidp's"),
    ("mellanox", "periodicUpdateInterval"): ("honoured", "rescanInterval: 0 and values above 3600 become 3600, with "
                                                         "a warning; < 0 refused as there; drivers.rdma."
                                                         "periodicUpdateInterval, when set, wins over the file's (an "
                                                         "info line says so)" + _ANY_CASE),
    ("mellanox", "configList"): ("honoured", "one shared pool per entry; empty: refused, \"no resources "
                                             "configuration found\", as there"),
    ("mellanox", "configList[].resourceName"): ("honoured", "the same names; invalid characters or a repeated name "
                                                            "refused in Mellanox's words"),
    ("mellanox", "configList[].resourcePrefix"): ("honoured", "default rdma, as there"),
    ("mellanox", "configList[].rdmaHcaMax"): ("honoured", "IDs 0..rdmaHcaMax-1 (sharedIds: index); 0 or absent: "
                                                          "a placeholder pool with no devices (warned); < 0 refused "
                                                          "as there; above 100000 refused, naming both numbers"),
    ("mellanox", "configList[].devices"): ("honoured", "ifNames of the function's first netdev; with selectors: "
                                                       "refused as there"),
    ("mellanox", "configList[].selectors"): ("honoured", "filters over all devices: one HCA may be in several "
                                                         "pools; neither selectors nor devices: refused as there"),
    ("mellanox", "configList[].selectors.vendors"): ("honoured", "PCI vendor ID"),
    ("mellanox", "configList[].selectors.deviceIDs"): ("honoured", "PCI device ID"),
    ("mellanox", "configList[].selectors.drivers"): ("honoured", "the PCI function's driver"),
    ("mellanox", "configList[].selectors.ifNames"): ("honoured", "the function's first netdev only, as there"),
    ("mellanox", "configList[].selectors.linkTypes"): ("honoured", "ether or infiniband (the port's link layer)"),
    ("mellanox", "(any other key)"): ("warned", "ignored there; here named in a warning and ignored"),
    # The SR-IOV network device plugin: pkg/types/types.go, cmd/sriovdp/main.go, images/entrypoint.sh.
    ("sriov", "--config-file"): ("honoured", "drivers.rdma.configFile (MULTIDP_RDMA_CONFIG_FILE)"),
    ("sriov", "--resource-prefix"): ("honoured", "drivers.rdma.sriovResourcePrefix (default intel.com, as there)"),
    ("sriov", "--use-cdi"): ("honoured", "drivers.rdma.useCdi: CDI kind <prefix>/net-pci, one device per PCI "
                                         "address, answered in the annotation cdi.k8s.io/<prefix>_net-pci"),
    ("sriov", "--log-dir"): ("not applicable", "entrypoint.sh: multidp logs to stderr"),
    ("sriov", "--log-level"): ("not applicable", "entrypoint.sh: " + _GLOG),
    ("sriov", "-v"): ("not applicable", _GLOG),
    ("sriov", "--logtostderr"): ("not applicable", _GLOG),
    ("sriov", "--alsologtostderr"): ("not applicable", _GLOG),
    ("sriov", "--log_dir"): ("not applicable", _GLOG),
    ("sriov", "(any other glog flag)"): ("not applicable", "sriovdp run without images/entrypoint.sh (which refuses "
                                                        "any other flag) also takes glog's -vmodule, -stderrthreshold, "
                                                        "-log_backtrace_at, -log_link and the rest: " + _GLOG),
    ("sriov", "resourceList"): ("honoured", "entries whose selectors ask for RDMA become exclusive pools; the others "
                                            "are skipped with a warning and never fail the file; a device goes to the "
                                            "first selector object in file order that selects it, skipped or not, as "
                                            "there" + _ANY_CASE),
    ("sriov", "resourceList[].resourceName"): ("honoured", "the same names; of a served entry, invalid characters or "
                                                           "a repeated name are refused as there"),
    ("sriov", "resourceList[].resourcePrefix"): ("honoured", "default: sriovResourcePrefix"),
    ("sriov", "resourceList[].deviceType"): ("honoured", "netDevice served; accelerator and auxNetDevice skipped with "
                                                         "a warning; any other value refused, as there"),
    ("sriov", "resourceList[].excludeTopology"): ("warned", "NUMA nodes are always reported"),
    ("sriov", "resourceList[].additionalInfo"): ("warned", "no extra variables are written"),
    ("sriov", "resourceList[].selectors"): ("honoured", "an object or a list of objects; one that does not decode "
                                                        "skips its entry with a warning, as there"),
    ("sriov", "resourceList[].SelectorObjs"): ("warned", "the plugin's own field, rebuilt from selectors; no effect; "
                                                         "a value that is not a list or null refused, as there"),
    ("sriov", "selectors.vendors"): ("honoured", "PCI vendor ID"),
    ("sriov", "selectors.devices"): ("honoured", "PCI device ID"),
    ("sriov", "selectors.drivers"): ("honoured", "the PCI function's driver"),
    ("sriov", "selectors.pciAddresses"): ("honoured", "PCI address"),
    ("sriov", "selectors.pfNames"): ("honoured", "a VF's PF netdev in any case, #0,2-7 VF indices; never a PF"),
    ("sriov", "selectors.rootDevices"): ("honoured", "a VF's PF PCI address, #0-3 VF indices; never a PF"),
    ("sriov", "selectors.linkTypes"): ("honoured", "ether or infiniband"),
    ("sriov", "selectors.isRdma"): ("honoured", "true: served here (IsRdma and any other case too); false: skipped"),
    ("sriov", "selectors.needVhostNet"): ("warned", "no /dev/vhost-net is handed out"),
    ("sriov", "selectors.vdpaType"): ("refused", "with isRdma: \"invalid config: VdpaType and IsRdma are mutually "
                                                 "exclusive options\", as there"),
    ("sriov", "selectors.acpiIndexes"): ("refused", "on an RDMA selector: \"selecting by ACPI index is not supported "
                                                    "by this driver; ignoring it would widen the pool\""),
    ("sriov", "selectors.pKeys"): ("refused", "on an RDMA selector: \"selecting by InfiniBand partition key is not "
                                              "supported by this driver; ignoring it would widen the pool\""),
    ("sriov", "selectors.ddpProfiles"): ("refused", "on an RDMA selector: \"selecting by Intel DDP profile (read "
                                                    "with the SR-IOV plugin's ddptool) is not supported ...\""),
    ("sriov", "selectors.auxTypes"): ("not applicable", "auxNetDevice entries only, which stay with the SR-IOV "
                                                        "plugin; in a netDevice entry ignored there, warned here"),
    ("sriov", "(any other key)"): ("warned", "ignored there (\"SelectorObj\": null in its docs); here named in a "
                                             "warning and ignored"),
}


def markdown() -> str:
    """The table for docs/drop-in/rdma.md."""
    names = {"mellanox": "Mellanox k8s-rdma-shared-dev-plugin", "sriov": "SR-IOV network device plugin"}
    lines = ["| incumbent | key, flag or variable | multidp | how |", "|---|---|---|---|"]
    for (incumbent, key), (status, how) in KEYS.items():
        lines.append(f"| {names[incumbent]} | `{key}` | {status} | {how.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
