"""Which pool each RDMA device goes to (selectors OR'ed within a key, AND'ed across, a pool's selector
objects OR'ed; the first pool wins, except in Mellanox's files, where every pool filters all devices),
and which of a pool's devices a container should get (same NUMA node
first, then same PCI parent)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from multidp import PreferenceRequest, pack

from multidp_rdma.gomatch import exact_matches
from multidp_rdma.inventory import PciFunction, RdmaDevice
from multidp_rdma.poolconfig import Claim, PfName, Pool, Rules, Selection

_OWN = Rules()


def _pf_matches(wanted: PfName, pci: PciFunction, rules: Rules) -> bool:
    if rules.sriov_pf:  # the SR-IOV plugin: a PF has no PF name; names compare in any case (EqualFold)
        return pci.is_vf and any(wanted.name.casefold() == n.casefold() for n in pci.pf_netdevs) \
            and wanted.takes(pci.vf_index)
    return wanted.name in pci.pf_netdevs and wanted.takes(pci.vf_index)


def _root_matches(wanted: PfName, pci: PciFunction) -> bool:
    # As the SR-IOV plugin does now: a root device selects VFs of that PF, never the PF itself.
    return pci.pf_address == wanted.name and wanted.takes(pci.vf_index)


def _if_names(device: RdmaDevice, rules: Rules) -> tuple[str, ...]:
    if rules.first_netdev:  # Mellanox: GetNetNames(pci)[0], the function's first netdev by name
        return device.pci.netdevs[:1] if device.pci else ()
    return device.netdevs


def _within(wanted: frozenset[str] | None, value: str | None) -> bool:
    return wanted is None or (value is not None and value in wanted)


def matches(selection: Selection, device: RdmaDevice, rules: Rules = _OWN) -> bool:
    """Whether ``device`` passes every selector that is set (a device without PCI function fails PCI ones)."""
    if selection.exact:
        return exact_matches(selection, device, rules)
    pci = device.pci
    if not (_within(selection.vendors, pci.vendor if pci else None)
            and _within(selection.device_ids, pci.device if pci else None)
            and _within(selection.drivers, pci.driver if pci else None)
            and _within(selection.pci_addresses, pci.address if pci else None)
            and _within(selection.rdma_devices, device.name)):
        return False
    if selection.pf_names is not None and (
            pci is None or not any(_pf_matches(w, pci, rules) for w in selection.pf_names)):
        return False
    if selection.root_devices is not None and (
            pci is None or not any(_root_matches(w, pci) for w in selection.root_devices)):
        return False
    if selection.pfs_with_vfs is False and pci is not None and not pci.is_vf and (pci.vf_count or 0) > 0:
        return False
    if selection.if_names is not None and not selection.if_names.intersection(_if_names(device, rules)):
        return False
    return selection.link_types is None or bool(selection.link_types & device.link_types)


def assign(devices: Sequence[RdmaDevice], pools: Sequence[Pool],
           claims: Sequence[Claim] = ()) -> dict[str, list[RdmaDevice]]:
    """Members of each pool, by resource name; a device goes to the first pool that takes it, except
    that a pool with Mellanox's rules (``overlap``) takes every device it selects, as Mellanox's does.

    ``claims`` (an SR-IOV file): every selector object of the file in file order, served or not; a
    device goes to the first that selects it, so one the SR-IOV plugin keeps is never served here too.
    The default pool (no pools configured) takes every device that has a uverbs
    entry in sysfs: one without cannot be used from a container at all.
    """
    members: dict[str, list[RdmaDevice]] = {pool.resource: [] for pool in pools}
    if claims:
        for device in devices:
            claim = next((c for c in claims if matches(c.selection, device, c.rules)), None)
            if claim is not None and claim.resource is not None:
                members[claim.resource].append(device)
        return members
    for device in devices:
        taken = False
        for pool in pools:
            if (pool.default and device.uverbs is None) or (taken and not pool.rules.overlap):
                continue
            if any(matches(selection, device, pool.rules) for selection in pool.selections):
                members[pool.resource].append(device)
                taken = True
                if not pool.rules.overlap:
                    break
    return members


Key = Callable[[str], Hashable]


def numa_then_parent(request: PreferenceRequest, numa: Key, parent: Key) -> list[str]:
    """Pick NUMA groups as the host would; inside each, fill from as few PCI parents as possible.

    Packing by the pair (NUMA, parent) at once could leave a NUMA node's other
    parent unused and reach into another NUMA node for a request that one
    node could hold; two levels keep NUMA first.
    """
    by_numa = pack(request, numa)
    counts: dict[Hashable, int] = {}
    for device_id in by_numa:
        counts[numa(device_id)] = counts.get(numa(device_id), 0) + 1
    chosen: list[str] = []
    for group, count in counts.items():
        available = tuple(i for i in request.available if numa(i) == group)
        must = tuple(i for i in request.must_include if numa(i) == group)
        sub = PreferenceRequest(request.resource, available, must, count)
        chosen.extend(pack(sub, parent))
    return chosen
