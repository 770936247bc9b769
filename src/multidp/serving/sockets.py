"""The names of the kubelet's socket and of multidp's own sockets in the plugin dir."""

from __future__ import annotations

import hashlib

API_VERSION = "v1beta1"
KUBELET_SOCKET_NAME = "kubelet.sock"
SOCKET_PREFIX = "multidp-"
PRIVATE_DIR_PREFIX = ".mdp-"  # an endpoint's 0700 directory, where its spare server's socket is bound


def socket_name(driver: str, resource: str) -> str:
    """The stable socket file name of one resource's endpoint.

    Short whatever the resource name (unix socket paths stop at 107 bytes):
    ``multidp-<driver>-<first 8 hex of sha256(resource)>.sock``.
    """
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    return f"{SOCKET_PREFIX}{driver}-{digest}.sock"
