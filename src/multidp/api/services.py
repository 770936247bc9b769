"""The kubelet's DRA service names, and the message classes each is served with.

The v1beta1 DRA service and the v1alpha1 / v1beta1 health services carry the
same messages as their v1 successors (v1beta1's Device lacks ``share_id``, which
an older kubelet skips as an unknown field), so one set of generated classes
serves and calls every version under its own full service name.
"""

from __future__ import annotations

REGISTRATION_SERVICE = "pluginregistration.Registration"
DRA_PLUGIN_TYPE = "DRAPlugin"  # PluginInfo.type of a DRA driver

DRA_V1 = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
DRA_V1BETA1 = "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
HEALTH_V1 = "v1.DRAResourceHealth"
HEALTH_V1BETA1 = "v1beta1.DRAResourceHealth"
HEALTH_V1ALPHA1 = "v1alpha1.DRAResourceHealth"

# Newest first: the order a kubelet prefers them in, and the order GetInfo lists them.
DRA_SERVICES = (DRA_V1, DRA_V1BETA1)
HEALTH_SERVICES = (HEALTH_V1, HEALTH_V1BETA1, HEALTH_V1ALPHA1)

PREPARE = "NodePrepareResources"
UNPREPARE = "NodeUnprepareResources"
WATCH = "NodeWatchResources"


def method_path(service: str, method: str) -> str:
    """The gRPC path of ``method`` of ``service`` (``/<service>/<method>``)."""
    return f"/{service}/{method}"
