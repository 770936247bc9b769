"""Which pool each RDMA device goes to: selectors OR'ed within a key, AND'ed across, first pool wins."""

from __future__ import annotations

from collections.abc import Sequence

from multidp_rdma.config import PfName, Pool, Selection
from multidp_rdma.inventory import PciFunction, RdmaDevice


def _pf_matches(wanted: PfName, pci: PciFunction) -> bool:
    if wanted.name not in pci.pf_netdevs:
        return False
    if wanted.first is None:
        return True
    # "ens1f0#0-3" names VFs of ens1f0 by index; the PF itself is none of them.
    return pci.vf_index is not None and wanted.first <= pci.vf_index <= (wanted.last or wanted.first)


def matches(selection: Selection, device: RdmaDevice) -> bool:
    """Whether ``device`` passes every selector that is set."""
    pci = device.pci
    pci_checks = (
        (selection.vendors, lambda p: p.vendor in selection.vendors),
        (selection.device_ids, lambda p: p.device in selection.device_ids),
        (selection.drivers, lambda p: p.driver in selection.drivers),
        (selection.pci_addresses, lambda p: p.address in selection.pci_addresses),
        (selection.pf_names, lambda p: any(_pf_matches(w, p) for w in selection.pf_names or ())),
    )
    for wanted, check in pci_checks:
        if wanted is not None and (pci is None or not check(pci)):
            return False
    if selection.if_names is not None and not selection.if_names.intersection(device.netdevs):
        return False
    if selection.link_types is not None and not selection.link_types & device.link_types:
        return False
    return selection.rdma_devices is None or device.name in selection.rdma_devices


def assign(devices: Sequence[RdmaDevice], pools: Sequence[Pool]) -> dict[str, list[RdmaDevice]]:
    """Members of each pool, by resource name; a device goes to the first pool that takes it.

    The default pool (no pools configured) takes every device that has a uverbs
    entry in sysfs: one without cannot be used from a container at all.
    """
    members: dict[str, list[RdmaDevice]] = {pool.resource: [] for pool in pools}
    for device in devices:
        for pool in pools:
            if pool.default and device.uverbs is None:
                continue
            if matches(pool.selection, device):
                members[pool.resource].append(device)
                break
    return members
