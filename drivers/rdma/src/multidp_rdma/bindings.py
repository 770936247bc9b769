"""pyverbs for port state and device attributes, when the system provides it.

pyverbs (rdma-core's binding; Debian's ``python3-pyverbs``) is no dependency,
and every failure of it, at import or in a call, means "not available": the
driver works fully from sysfs without it. Only short, non-blocking calls are
made here (``Context``, ``query_port``, ``query_device``); ``get_async_event``
blocks while holding the GIL, so asynchronous events are read in a process of
their own (verbschild.py). libibverbs finds devices through netlink and the
real /dev, so verbs are used only when the driver reads the host's own /sys.
"""

from __future__ import annotations

import logging
from typing import Any

from multidp_rdma.inventory import RdmaDevice


class VerbsReader:
    """Open verbs contexts by device name; forget a device after its first failure until :meth:`reset`."""

    def __init__(self, device_module: Any, log: logging.Logger) -> None:
        self._device_module = device_module
        self._log = log
        self._contexts: dict[str, Any] = {}
        self._failed: set[str] = set()

    @classmethod
    def load(cls, log: logging.Logger) -> VerbsReader | None:
        """A reader when pyverbs imports, else None (with one log line saying why)."""
        try:
            import pyverbs.device as device_module  # type: ignore[import-not-found]
        except Exception as exc:  # noqa: BLE001 - any import failure means "no verbs"
            log.info("pyverbs is not available (%s: %s); port state comes from sysfs", type(exc).__name__, exc)
            return None
        log.info("pyverbs found: port state and device attributes come from verbs, sysfs as the fallback")
        return cls(device_module, log)

    def _context(self, name: str) -> Any:
        context = self._contexts.get(name)
        if context is None:
            context = self._device_module.Context(name=name)
            self._contexts[name] = context
        return context

    def _failure(self, name: str, exc: Exception) -> None:
        self._failed.add(name)
        context = self._contexts.pop(name, None)
        if context is not None:
            try:
                context.close()
            except Exception:  # noqa: BLE001 - closing a broken context may fail too
                pass
        self._log.info("pyverbs cannot read RDMA device %s (%s: %s); using sysfs for it",
                       name, type(exc).__name__, exc)

    def ports(self, device: RdmaDevice) -> dict[int, tuple[int, int]] | None:
        """(state, phys_state) per port, or None to fall back to sysfs."""
        if device.name in self._failed:
            return None
        try:
            context = self._context(device.name)
            result = {}
            for port in device.ports:
                attr = context.query_port(port.number)
                result[port.number] = (int(attr.state), int(attr.phys_state))
            return result
        except Exception as exc:  # noqa: BLE001 - every pyverbs error means "no verbs information"
            self._failure(device.name, exc)
            return None

    def attributes(self, device: RdmaDevice) -> dict[str, str]:
        """A few device attributes for ``multidp devices`` (empty when verbs cannot say)."""
        if device.name in self._failed:
            return {}
        try:
            attr = self._context(device.name).query_device()
            return {"fw": str(attr.fw_version).strip()} if getattr(attr, "fw_version", "") else {}
        except Exception as exc:  # noqa: BLE001 - every pyverbs error means "no verbs information"
            self._failure(device.name, exc)
            return {}

    def reset(self) -> None:
        """Close every context (devices may have been re-created) and try failed devices again."""
        for name, context in list(self._contexts.items()):
            try:
                context.close()
            except Exception as exc:  # noqa: BLE001 - a stale context may fail to close
                self._log.debug("closing verbs context of %s failed: %s", name, exc)
        self._contexts.clear()
        self._failed.clear()

    close = reset
