"""Every setting of the two incumbent FPGA plugins, and what multidp does with it.

Keys are ``(vendor, kind, name)``. The list of settings is taken from the incumbents' sources
(``tests/incumbent_settings.txt`` names each file); a test checks that every one of them is here
and that ``docs/drop-in/fpga.md`` gives each the same verdict.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["honoured", "refused", "n/a"]


class Verdict(msgspec.Struct, frozen=True):
    kind: Kind
    how: str


def _h(how: str) -> Verdict:
    return Verdict("honoured", how)


def _r(how: str) -> Verdict:
    return Verdict("refused", how)


def _na(how: str) -> Verdict:
    return Verdict("n/a", how)


_FIELD = "a NameCustomize.json name may use it, as AMD's does"

TABLE: dict[tuple[str, str, str], Verdict] = {
    # AMD/Xilinx: k8s-device-plugin/main.go (variables, flag), server.go (name file), fpga.go.
    ("amd", "env", "U30NameConvention"): _h(
        "drivers.fpga.amdU30Names (common or exact) beats it; ExactName / CommonName read case-insensitively; "
        "any other value: a warning naming it, then CommonName as AMD does"),
    ("amd", "env", "U30AllocUnit"): _h(
        "drivers.fpga.amdU30AllocUnit (card or device) beats it; Card / Device; any other value: a warning, then Card"),
    ("amd", "env", "DeviceNameCustomize"): _h(
        "drivers.fpga.amdNameCustomize beats it; True / False; any other value: a warning, then False"),
    ("amd", "env", "VirtualDev"): _h(
        "drivers.fpga.amdVirtualDev beats it; IDs <PCI address>-<i>; a container gets the devices it was "
        "allocated, not every AMD device of the node (AMD's plugin gives all of them)"),
    ("amd", "env", "VirtualNum"): _h(
        "drivers.fpga.amdVirtualNum beats it; below 1 or not a number: 1 with a warning, as AMD does; "
        "over 100000: refused with 'VirtualNum: AMD's variable VirtualNum=... is over multidp's limit'"),
    ("amd", "flag", "-log-level"): _na(
        "multidp's own MULTIDP_LOG_LEVEL / logLevel; AMD's DaemonSet args are not passed to multidp"),
    ("amd", "file", "/opt/xilinx/device-plugin-configmap/NameCustomize.json"): _h(
        "read at drivers.fpga.amdNameCustomizeFile (this path by default) when name customisation is on; "
        "a missing or malformed file, or a rule AMD could not use, is refused naming the file and the key"),
    ("amd", "file", "/opt/xilinx/k8s-device-plugin/version_num"): _na(
        "AMD's plugin only logs its own version from it"),
    ("amd", "name-field", "shellVer"): _h(_FIELD),
    ("amd", "name-field", "deviceType"): _h(_FIELD),
    ("amd", "name-field", "uuid"): _h(_FIELD),
    ("amd", "name-field", "timestamp"): _h(_FIELD),
    ("amd", "name-field", "DBDF"): _h(_FIELD),
    ("amd", "name-field", "deviceID"): _h(_FIELD),
    ("amd", "name-field", "Healthy"): _h(_FIELD),
    ("amd", "name-field", "SN"): _h(_FIELD),
    ("amd", "name-field", "index"): _r(
        "a rule using it is refused: 'uses 'index', the order of a device in AMD's scan: it changes when a "
        "card comes or goes'"),
    # Intel: cmd/fpga_plugin/fpga_plugin.go (flags, CDI hook), mode.go (annotation), cmd/fpga_crihook.
    ("intel", "flag", "-mode"): _h("drivers.fpga.mode (MULTIDP_FPGA_MODE); per node with configByLabel"),
    ("intel", "flag", "-node-name"): _na("multidp reads NODE_NAME itself"),
    ("intel", "env", "NODE_NAME"): _h("the host reads it to find the node's labels (configByLabel, multidp.io/fpga)"),
    ("intel", "flag", "-kubeconfig"): _na("the host uses the pod's service account, else KUBECONFIG"),
    ("intel", "flag", "-master"): _na("the host uses the pod's service account, else KUBECONFIG"),
    ("intel", "annotation", "fpga.intel.com/device-plugin-mode"): _h(
        "configByLabel.annotation: fpga.intel.com/device-plugin-mode picks drivers.fpga.mode per node, live "
        "(deploy/overlays/fpga-region does)"),
    ("intel", "annotation", "com.intel.fpga.mode"): _h(
        "set on region-mode allocations to fpga.intel.com/region, as Intel's PostAllocate does"),
    ("intel", "file", "/opt/intel/fpga-sw/intel-fpga-crihook"): _h(
        "drivers.fpga.intelHook: the createRuntime hook of each region-mode CDI device "
        "intel.cdi.k8s.io/fpga=<FME>; deploy/overlays/fpga-region installs it with Intel's init container"),
    ("intel", "env", "FPGA_REGION_<N>"): _na(
        "set in pods by Intel's admission webhook and read by Intel's CRI hook: both stay Intel's"),
    ("intel", "env", "FPGA_AFU_<N>"): _na(
        "set in pods by Intel's admission webhook and read by Intel's CRI hook: both stay Intel's"),
}
