"""Selectors of an incumbent's file, matched as that incumbent matches them: exact strings.

Both incumbents compare a selector value with what they read from sysfs by plain string equality
(``contains`` in sriov-network-device-plugin pkg/resources/deviceSelectors.go and in
k8s-rdma-shared-dev-plugin pkg/resources/device_selectors.go); only the SR-IOV plugin's ``pfNames`` and
``rootDevices`` compare in any case (``getItem``: ``strings.EqualFold``). So ``0x15b3``, ``3b:00.0``
or ``eth`` select nothing there, and nothing here. multidp's own ``pools`` keep their normalised
matching (``poolconfig.Selection``).
"""

from __future__ import annotations

import re

from multidp_rdma.inventory import RdmaDevice
from multidp_rdma.poolconfig import LINK_TYPE_ALIASES, Rules, Selection, Selectors, normal_pci_address


def exact_selection(*, vendors: list[str] | None = None, device_ids: list[str] | None = None,
                    drivers: list[str] | None = None, pci_addresses: list[str] | None = None,
                    link_types: list[str] | None = None, if_names: list[str] | None = None,
                    pf_names: list[str] | None = None, root_devices: list[str] | None = None,
                    pfs_with_vfs: bool | None = None) -> Selection:
    """A Selection holding the file's strings as they are; an empty or absent list is no constraint (len > 0)."""
    def as_set(values: list[str] | None) -> frozenset[str] | None:
        return frozenset(values) if values else None

    return Selection(vendors=as_set(vendors), device_ids=as_set(device_ids), drivers=as_set(drivers),
                     pci_addresses=as_set(pci_addresses), link_types=as_set(link_types), if_names=as_set(if_names),
                     pf_items=tuple(pf_names) if pf_names else None,
                     root_items=tuple(root_devices) if root_devices else None, pfs_with_vfs=pfs_with_vfs, exact=True)


def exact_of(selectors: Selectors) -> Selection:
    """The exact Selection of an incumbent's selector object (already checked by Selectors)."""
    return exact_selection(vendors=selectors.vendors, device_ids=selectors.device_ids, drivers=selectors.drivers,
                           pci_addresses=selectors.pci_addresses, link_types=selectors.link_types,
                           if_names=selectors.if_names, pf_names=selectors.pf_names,
                           root_devices=selectors.root_devices, pfs_with_vfs=selectors.pfs_with_vfs)


def _canonical(key: str, value: str) -> str | None:
    """What sysfs gives for the value ``value`` means (None: it means nothing recognisable)."""
    text = value.strip()
    if key in ("vendors", "devices", "deviceIDs"):
        digits = text.lower().removeprefix("0x")
        return digits.zfill(4) if re.fullmatch(r"[0-9a-f]{1,4}", digits) else None
    if key == "pciAddresses":
        return normal_pci_address(text)
    if key == "linkTypes":
        return LINK_TYPE_ALIASES.get(text.lower())
    return text


def inexact_notes(values: dict[str, list[str] | None], at: str, incumbent: str) -> list[str]:
    """A line for each value the incumbent compares as written and so never finds (``0x15b3``, ``eth``)."""
    notes = []
    for key, listed in values.items():
        for index, value in enumerate(listed or ()):
            name, _, indices = value.partition("#") if key in ("pfNames", "rootDevices") else (value, "", "")
            canonical = (normal_pci_address(name) if key == "rootDevices" else _canonical(key, name))
            if canonical is None:
                continue
            same = canonical.casefold() == name.casefold() if key in ("pfNames", "rootDevices") else canonical == name
            if not same:
                wanted = canonical + (f"#{indices}" if indices else "")
                notes.append(f"{at}.{key}[{index}]: {value!r} selects no device in {incumbent}, which compares the "
                             f"string as written with what it reads ({wanted!r}); it selects none here either")
    return notes


def get_item(items: tuple[str, ...], needle: str) -> str:
    """The first item whose name (before ``#``) equals ``needle`` in any case; "" if none (getItem)."""
    for item in items:
        if item.split("#")[0].casefold() == needle.casefold():
            return item
    return ""


def _atoi(text: str) -> int | None:
    # strconv.Atoi: an optional sign, then decimal digits only.
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isascii() and digits.isdigit() else None


def is_selected(index: int, item: str) -> bool:
    """Whether function ``index`` is in ``item``'s ``#a-b,c`` list (isSelected; a bad list selects nothing)."""
    if "#" not in item:
        return True
    fields = item.split("#")
    if len(fields) != 2:
        return False
    for entry in fields[1].split(","):
        if "-" in entry:
            bounds = entry.split("-")
            if len(bounds) != 2:
                return False
            first, last = _atoi(bounds[0]), _atoi(bounds[1])
            if first is None or last is None:
                return False
            if first <= index <= last:
                return True
        else:
            number = _atoi(entry)
            if number is None:
                return False
            if index == number:
                return True
    return False


def _link_type(device: RdmaDevice, rules: Rules) -> str:
    pci = device.pci
    assert pci is not None
    if pci.netdevs:
        return pci.link_type
    # SR-IOV: a function without netdev takes the link type of its PF name (GenNetDevice, pkg/devices/gen_net.go);
    # Mellanox: none, so no linkTypes value matches it (NewPciNetDevice, pkg/resources/pci_net_device.go).
    return pci.pf_link_type if rules.sriov_pf and pci.is_vf and pci.pf_netdevs else ""


def exact_matches(selection: Selection, device: RdmaDevice, rules: Rules) -> bool:
    """``matches`` for an incumbent's file: only PCI functions, every value compared as there."""
    pci = device.pci
    if pci is None:  # both incumbents enumerate PCI devices only
        return False
    if_name = pci.netdevs[0] if pci.netdevs else ""  # GetNetNames(pci)[0], "" without netdev
    for wanted, value in ((selection.vendors, pci.vendor), (selection.device_ids, pci.device),
                          (selection.drivers, pci.driver), (selection.pci_addresses, pci.address),
                          (selection.if_names, if_name)):
        if wanted is not None and value not in wanted:
            return False
    if selection.pf_items is not None:
        # GetPfName: a VF's PF's first netdev (ReadDir order); a PF has none and is never selected.
        pf_name = pci.pf_netdevs[0] if pci.is_vf and pci.pf_netdevs else ""
        item = get_item(selection.pf_items, pf_name) if pf_name else ""
        if not item or not is_selected(_vf_id(device), item):
            return False
    if selection.root_items is not None:
        item = get_item(selection.root_items, pci.pf_address) if pci.pf_address else ""
        if not item or not is_selected(_vf_id(device), item):
            return False
    if selection.pfs_with_vfs is False and not pci.is_vf and (pci.vf_count or 0) > 0:
        return False
    return selection.link_types is None or _link_type(device, rules) in selection.link_types


def _vf_id(device: RdmaDevice) -> int:
    # GetVFID: the N of the PF's virtfnN that leads here; -1 for a PF or when not found.
    index = device.pci.vf_index if device.pci else None
    return -1 if index is None else index
