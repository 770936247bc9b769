"""DRA names for the host's resources and the drivers' devices.

A DRA device name is a DNS label (at most 63 lower-case letters, digits and '-'), while drivers' IDs
are GPU UUIDs, PCI addresses and the like. A driver ID that already is a DNS label is its own name;
any other is lower-cased, every other character made '-', and a hash of the whole ID appended, so
that the name depends on that ID alone (two IDs never meet in one name, whatever else the node has)
and a device keeps its name across restarts and reboots. Each resource is one pool, named
``<node>/<resource>`` (pool names are DNS subdomains joined by '/', unique per driver in a cluster), each
part that is not a DNS subdomain already named as a device would be; ``multidp.io/resource`` on every
device carries the resource name itself.
"""

from __future__ import annotations

import functools
import hashlib
import re

from multidp.names import DNS1123_SUBDOMAIN

MAX_NAME = 63
MAX_POOL = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_OTHER = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=1 << 16)  # every scan names every device again: hash each ID once
def device_name(driver_id: str) -> str:
    """The DNS-label name under which ``driver_id`` is a DRA device."""
    if _LABEL.fullmatch(driver_id):
        return driver_id
    digest = hashlib.sha256(driver_id.encode()).hexdigest()[:8]
    stem = _OTHER.sub("-", driver_id.lower()).strip("-")[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}" if stem else f"dev-{digest}"


def _pool_part(part: str) -> str:
    """One '/'-separated part of a pool name: kept when it is a DNS subdomain, else made one like a device name."""
    return part if len(part) <= MAX_NAME and DNS1123_SUBDOMAIN.fullmatch(part) else device_name(part)


@functools.lru_cache(maxsize=1024)
def pool_name(node: str, resource: str) -> str:
    """The pool of ``resource`` on ``node``: ``<node>/<resource>`` with each part a DNS subdomain (extended
    resource names may hold capitals and '_', as ``amd.com/MA35`` does; such a part gets a hash suffix)."""
    name = "/".join(_pool_part(part) for part in (node, *resource.split("/")))
    if len(name) <= MAX_POOL:
        return name
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]  # a long node and resource: the resource shrinks
    return f"{node}/{device_name(resource)[:MAX_POOL - len(node) - 10].rstrip('-')}-{digest}"
