"""Names the kubelet checks, replica IDs, and short texts for messages (part of the driver API)."""

from __future__ import annotations

import re

REPLICA_SEPARATOR = "::"
LABEL_PREFIX = "multidp.io/"  # the node label multidp.io/<driver> turns a driver on or off
MAX_DEVICE_ID_BYTES = 1024
# Replicas one device may ask for. Neither NVIDIA's plugin nor Mellanox's has a cap, so the real bound
# is the kubelet's 4 MiB per ListAndWatch message, checked on the whole list (serving/resource.py) before
# any replica ID is made. This cap only keeps one number sane: 100,000 replicas of a short ID (a PCI
# address) still fit in one message; more never can.
MAX_REPLICAS = 100_000

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Use with fullmatch: "$" with match would also take a trailing newline.
DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
QUALIFIED_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # label values, label and resource names


def resource_name_problem(name: str) -> str | None:
    """Why the kubelet would refuse ``name`` as an extended resource name, or None.

    The rules are the kubelet's: exactly one ``/``; not in ``kubernetes.io/``;
    not starting with ``requests.``; the prefix a lowercase DNS-1123 subdomain
    (at most 244 characters, as "requests." + prefix must fit 253); the name part 1-63 characters of
    ``[A-Za-z0-9_.-]``, alphanumeric at both ends.
    """
    if name.count("/") != 1:
        return "must contain exactly one '/' (prefix/name)"
    prefix, _, short = name.partition("/")
    if "kubernetes.io/" in name:
        return "must not be in the kubernetes.io/ namespace"
    if name.startswith("requests."):
        return "must not start with 'requests.'"
    # The kubelet checks "requests." + name as a qualified name: 253 bytes at most.
    if not prefix or len(prefix) > 244 or not DNS1123_SUBDOMAIN.fullmatch(prefix):
        return f"prefix {prefix!r} is not a lowercase DNS-1123 subdomain"
    if not short:
        return "the part after '/' is empty"
    if len(short) > 63:
        return f"the part after '/' is {len(short)} characters long (at most 63)"
    if not QUALIFIED_NAME_PART.fullmatch(short):
        return (
            f"the part after '/' ({short!r}) may hold only letters, digits, '-', '_' "
            "and '.', and must start and end with a letter or digit"
        )
    return None


def replica_id(device_id: str, index: int) -> str:
    """The advertised ID of replica ``index`` of a shared device (``GPU-1``, 3 → ``GPU-1::3``)."""
    return f"{device_id}{REPLICA_SEPARATOR}{index}"


def base_id(advertised_id: str) -> str:
    """The device behind a replica ID (``GPU-1::3`` → ``GPU-1``); any other ID as it is."""
    base, sep, index = advertised_id.rpartition(REPLICA_SEPARATOR)
    return base if sep and index.isdigit() else advertised_id


def shorten(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters for a log line or error message."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def list_some(items: list[str], limit: int = 3) -> str:
    """A few items, shortened, and how many more there are."""
    shown = ", ".join(shorten(i) for i in items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown
