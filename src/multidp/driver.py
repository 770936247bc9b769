"""What a driver is: the object a plugin's ``multidp_create_driver`` hook returns.

The hooks in :mod:`multidp.hookspecs` only create objects; every call the
kubelet causes lands on a :class:`Driver` method, for that driver's own
resources only. The host runs each call under a deadline in the driver's own
threads, so a driver that raises or hangs costs only its own resources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from multidp.model import (
    AllocationRequest,
    CDISpec,
    ContainerAllocation,
    Device,
    PreferenceRequest,
)

Notify = Callable[[], None]


class Simulation:
    """Simulated hardware a driver builds for ``--simulate`` and ``multidp demo``.

    A driver's ``multidp_simulate`` hook returns one; the host passes it back
    in :attr:`DriverContext.simulation`. ``sysfs_root`` and ``dev_root``, when
    set, replace the host's roots for this driver. The demo calls
    :meth:`inject_fault` and :meth:`clear_fault` to show a health change that
    travels the same path a real one would (a file rewritten, an event sent).
    """

    sysfs_root: Path | None = None
    dev_root: Path | None = None

    def inject_fault(self) -> str:
        """Make one device unhealthy; return a sentence saying which and how."""
        raise NotImplementedError

    def clear_fault(self) -> str:
        """Undo :meth:`inject_fault`; return a sentence saying what recovered."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the simulation holds (temporary files stay with the host)."""


@dataclass(frozen=True)
class DriverContext:
    """Everything a driver is given when the host creates it.

    ``config`` is the driver's section of the config file (``drivers.<name>``,
    without ``enabled``), with ``MULTIDP_<NAME>_<KEY>`` variables applied and,
    when the plugin declares a config type, converted to that type. ``sysfs_root``
    and ``dev_root`` are where to read sysfs and look for device nodes; answers
    to the kubelet still name host paths (``/dev/...``). ``environ`` is the
    process environment (tests pass their own): a driver may honour its
    incumbent's variables from it, below multidp's own settings.

    ``checking`` is true when ``multidp config check`` or ``multidp drivers``
    creates the driver only to validate its config (driver API 1.1): read and
    validate every file the config names, raise :class:`multidp.errors.ConfigError`
    for what is wrong, log a warning for what the node would only warn about,
    and touch no hardware; the driver is closed without a scan. Read each such
    file at :meth:`local_path`, which maps the paths an operator gave with
    ``config check --file POD_PATH=LOCAL_PATH`` (``files``).

    ``frontend`` (driver API 1.3) says how the host serves this driver's devices:
    ``"device-plugin"`` (the kubelet's Device Plugin API) or ``"dra"`` (Dynamic
    Resource Allocation). Pods served through DRA do not run under a vendor's
    container runtime, so in DRA mode every :meth:`Driver.allocate` answer must
    be complete as CDI: CDI device names from the driver's own
    :meth:`Driver.cdi_specs`, or device nodes, mounts and environment variables
    that the host writes into a per-claim CDI spec. An answer that also sets
    ``annotations`` cannot be expressed and is refused; an answer that needs a
    vendor runtime to act on its variables gives a container nothing, so the
    driver must answer with CDI devices instead (or refuse its config).
    """

    name: str
    config: Any
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    simulation: Simulation | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("multidp.driver"))
    checking: bool = False
    files: Mapping[str, Path] = field(default_factory=dict)
    frontend: str = "device-plugin"

    def local_path(self, path: str | Path) -> Path:
        """Where to read ``path``, a file (or a file in a folder) the driver's config names.

        On a node that is ``path`` itself. ``files`` maps a path, or a folder and
        everything under it, to a copy elsewhere, so that a workstation can check
        files that exist only inside the pod; the longest match wins.
        """
        wanted = PurePosixPath(path)
        for inside in sorted(self.files, key=len, reverse=True):
            try:
                rest = wanted.relative_to(PurePosixPath(inside))
            except ValueError:
                continue
            return Path(self.files[inside]) / rest if rest.parts else Path(self.files[inside])
        return Path(path)


class Driver:
    """Base class for drivers. Override :meth:`scan` and :meth:`allocate`.

    Threading: the host calls :meth:`scan` from one thread at a time; it may
    call :meth:`allocate`, :meth:`preferred_allocation` and :meth:`pre_start`
    from other threads at the same time as a scan, so keep shared state behind
    a lock or immutable.
    """

    #: Seconds between two scans. Sysfs attributes raise no file events on a
    #: real node, so a driver whose health lives in them polls (0.25-0.5 s is
    #: cheap for a few small reads); one that pushes events may poll rarely.
    poll_interval: float = 5.0

    def start(self, notify: Notify) -> None:
        """Start the driver's event sources (threads, watches).

        Call ``notify()`` from any thread whenever something changed; the host
        then scans at once instead of waiting for the next poll.
        """

    def scan(self) -> Mapping[str, Sequence[Device]]:
        """Every resource this driver serves on this node now, with its devices.

        Keys are extended resource names (``vendor.com/name``). A resource
        missing from the answer is withdrawn: the kubelet is told it has no
        devices, then its endpoint stops. Raise to say the scan failed: the host
        keeps the last known devices and marks them Unhealthy until a scan
        succeeds again.
        """
        raise NotImplementedError

    def allocate(self, request: AllocationRequest) -> ContainerAllocation:
        """What one container needs to use ``request.device_ids``.

        The host has already checked that every ID exists, folded duplicates
        and removed replica suffixes. Raise :class:`multidp.errors.AllocationRefused`
        to refuse a request by policy (the kubelet sees INVALID_ARGUMENT);
        anything else raised is reported as the driver's internal error.
        """
        raise NotImplementedError

    def preferred_allocation(self, request: PreferenceRequest) -> Sequence[str] | None:
        """The devices this driver would pick, or None to let the host pick by NUMA.

        The answer must contain ``request.must_include`` and ``request.size``
        IDs from ``request.available``; the host repairs an answer that does not.
        """
        return None

    def pre_start(self, resource: str, device_ids: Sequence[str]) -> None:
        """Prepare devices before a container starts (only if overridden).

        When a driver overrides this, its resources ask the kubelet for a
        PreStartContainer call before every container start (30 s limit).
        """

    def cdi_specs(self) -> Sequence[CDISpec]:
        """CDI specs the host should write for this driver's devices.

        Called after the first scan (before the endpoints start), after every
        scan that changed something, and after every scan while the specs could
        not be written. Raise if a spec cannot be built: allocations that name
        CDI devices then fail with a clear message, devices that declare them
        (``Device.cdi_devices``) are advertised Unhealthy with it, and
        everything else keeps working.
        """
        return ()

    def close(self) -> None:
        """Stop event sources and release handles (NVML, files)."""

    @property
    def has_pre_start(self) -> bool:
        """Whether this driver overrides :meth:`pre_start` (the host then asks the kubelet for PreStartContainer)."""
        return type(self).pre_start is not Driver.pre_start
