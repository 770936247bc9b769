"""NodePrepareResources and NodeUnprepareResources for one DRA driver, claim by claim.

Prepare reads the claim (:mod:`multidp.dra.claims`), maps its devices to the driver's IDs, refuses a
device another claim holds, records the claim ``preparing``, asks the driver for one answer per claim
request (through the same runner, deadline and isolation as Allocate), turns the answers into CDI
device IDs (:mod:`multidp.dra.claimspecs`) and records the claim ``prepared``. A claim prepared before
answers from the checkpoint; after a reboot, or when its spec file is gone, the answers are derived
again from the stored device IDs. Unprepare needs the checkpoint alone; an unknown claim is success.
Claims are handled one at a time, as the kubelet's Go helper does by default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from multidp.dra.checkpoint import (
    PREPARED,
    PREPARING,
    Checkpoint,
    CheckpointCorrupt,
    Contents,
    PreparedClaim,
    PreparedDevice,
)
from multidp.dra.claims import AllocatedDevice, ClaimProblem, ClaimReader, ClaimRef
from multidp.dra.claimspecs import (
    AnswerRefused,
    SpecRefused,
    claim_kind,
    edits_of,
    remove_spec_files,
    spec_path,
    write_claim_spec,
)
from multidp.errors import DriverCallError
from multidp.model import AllocationRequest, CDIDeviceSpec
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], "tuple[str, str] | None"]  # (pool, device name) -> (resource, driver ID)
Declared = Callable[[str, str], "tuple[str, ...]"]  # (pool, device name) -> the CDI names the device declares


@dataclass(frozen=True)
class PrepareResult:
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class Failed(Exception):
    """One claim cannot be prepared; the message is what the kubelet is told."""


class ClaimPreparer:
    """The prepared claims of one DRA driver, and the work of preparing and unpreparing them."""

    def __init__(self, driver: str, dra_name: str, checkpoint: Checkpoint, boot_id: str, cdi: CDIRegistry,
                 reader: ClaimReader, runner: DriverRunner | None, lookup: Lookup, allocate_timeout: float,
                 declared: Declared = lambda pool, name: ()) -> None:
        self.driver, self.dra_name, self.checkpoint, self.boot_id = driver, dra_name, checkpoint, boot_id
        self.cdi, self.reader, self.runner, self.lookup = cdi, reader, runner, lookup
        self.allocate_timeout, self.declared = allocate_timeout, declared
        self.stopped = ""  # why the driver does not run (runner None): only Unprepare is served
        self.on_empty: Callable[[], None] | None = None  # called when an Unprepare leaves no claim
        self._lock = threading.Lock()
        self.broken: str | None = None  # why the checkpoint cannot be trusted
        self.contents = Contents()
        try:
            self.contents = checkpoint.load()
        except CheckpointCorrupt as exc:
            self.broken = str(exc)
            log.error("driver %s: %s; Prepare is refused until it is moved away (claims of running pods would "
                      "otherwise be handed out twice)", driver, exc)
        self._clean_half_prepared()

    def _clean_half_prepared(self) -> None:
        """Claims a host died preparing: their spec files go, and the kubelet's retry starts afresh."""
        stale = [c for c in self.contents.claims.values() if c.state == PREPARING]
        for claim in stale:
            log.warning("driver %s: claim %s/%s (%s) was left half-prepared; cleaning it up", self.driver,
                        claim.namespace, claim.name, claim.uid)
            remove_spec_files(claim.spec_files)
            del self.contents.claims[claim.uid]
        if stale:
            self._save_or_log()

    @property
    def claims(self) -> list[PreparedClaim]:
        with self._lock:
            return list(self.contents.claims.values())

    # Prepare ---------------------------------------------------------------------------

    def prepare(self, claim: ClaimRef) -> PrepareResult:
        """Prepare one claim; the result's ``error`` says why not.

        The claim is read from the API server outside the lock (other claims go on meanwhile); the
        rest, checkpoint writes included, runs one claim at a time.
        """
        try:
            if self.runner is None:
                raise Failed(f"claim {claim}: driver {self.driver} does not run on this node now ({self.stopped}); "
                             "claims it prepared can still be unprepared")
            with self._lock:
                known = self._known(claim)
            if known is not None:
                return PrepareResult(known)
            try:
                allocated = self.reader.read(claim, self.dra_name)
            except ClaimProblem as exc:
                raise Failed(str(exc)) from None
            with self._lock:
                known = self._known(claim)  # prepared by a call that overtook this one
                return PrepareResult(known if known is not None else self._prepare_new(claim, allocated))
        except Failed as exc:
            log.error("driver %s: %s", self.driver, exc)
            return PrepareResult(error=str(exc))

    def _known(self, claim: ClaimRef) -> tuple[PreparedDevice, ...] | None:
        """A claim prepared before: its devices (derived again when needed); None for a new claim."""
        if self.broken:
            raise Failed(self.broken)
        stored = self.contents.claims.get(claim.uid)
        if stored is None or stored.state != PREPARED:
            return None
        if stored.boot_id == self.boot_id and all(Path(f).exists() for f in stored.spec_files):
            return stored.devices
        for device in stored.devices:
            if self.lookup(device.pool, device.device) != (device.resource, device.driver_id):
                raise Failed(f"claim {claim}: device {device.pool}/{device.device} it was prepared with is no "
                             "longer on this node")
        why = "after a reboot" if stored.boot_id != self.boot_id else "its CDI spec file is gone"
        log.info("driver %s: claim %s prepared before; deriving its answers again (%s)", self.driver, claim, why)
        return self._derive(claim, stored.devices, stored)

    def _prepare_new(self, claim: ClaimRef, allocated: list[AllocatedDevice]) -> tuple[PreparedDevice, ...]:
        devices = []
        for result in allocated:
            found = self.lookup(result.pool, result.device)
            if found is None:
                raise Failed(f"claim {claim}: device {result.pool}/{result.device} is not a device of DRA driver "
                             f"{self.dra_name} on this node")
            devices.append(PreparedDevice(result.request, result.pool, result.device, *found))
        self._refuse_held(claim, devices)
        return self._derive(claim, tuple(devices), None)

    def _refuse_held(self, claim: ClaimRef, devices: list[PreparedDevice]) -> None:
        wanted = {(d.resource, d.driver_id): d for d in devices}
        for other in self.contents.claims.values():
            if other.uid == claim.uid:
                continue
            for held in other.devices:
                if (held.resource, held.driver_id) in wanted:
                    raise Failed(f"claim {claim}: device {held.pool}/{held.device} is already prepared for claim "
                                 f"{other.namespace}/{other.name} ({other.uid})")

    def _derive(self, claim: ClaimRef, devices: tuple[PreparedDevice, ...],
                stored: PreparedClaim | None) -> tuple[PreparedDevice, ...]:
        """Ask the driver for the answers, write the claim's spec, record it prepared."""
        path = spec_path(self.cdi.directory, self.dra_name, claim.uid)
        record = PreparedClaim(claim.uid, claim.namespace, claim.name, PREPARING, devices, (str(path),), self.boot_id)
        self._save(record)
        try:
            prepared, edits = self._answers(claim, devices)
            spec_files: tuple[str, ...] = ()
            if edits:
                spec_files = (str(write_claim_spec(self.cdi.directory, self.dra_name, claim.uid, edits)),)
        except (Failed, SpecRefused, OSError) as exc:
            remove_spec_files([str(path)])
            self._undo(claim.uid, stored)
            if isinstance(exc, Failed):
                raise
            raise Failed(f"claim {claim}: cannot write its CDI spec: {exc}") from None
        self._save(replace(record, state=PREPARED, devices=prepared, spec_files=spec_files))
        return prepared

    def _answers(self, claim: ClaimRef, devices: tuple[PreparedDevice, ...]
                 ) -> tuple[tuple[PreparedDevice, ...], list[tuple[str, CDIDeviceSpec]]]:
        """One driver answer per (request, resource); the devices with their CDI IDs, and the edits to write."""
        groups: dict[tuple[str, str], list[PreparedDevice]] = {}
        for device in devices:
            groups.setdefault((device.request, device.resource), []).append(device)
        cdi_ids: dict[tuple[str, str, str], tuple[str, ...]] = {}  # (request, resource, device) -> IDs
        edits: list[tuple[str, CDIDeviceSpec]] = []
        for (request, resource), members in groups.items():
            ids = tuple(dict.fromkeys(d.driver_id for d in members))
            asked = AllocationRequest(resource, ids, ids, claim_uid=claim.uid, request_name=request)
            runner = self.runner
            if runner is None:
                raise Failed(f"claim {claim}: driver {self.driver} stopped ({self.stopped})")
            try:
                answer = runner.call("allocate", runner.driver.allocate, asked, timeout=self.allocate_timeout)
                own = edits_of(answer, self.driver)
            except (DriverCallError, AnswerRefused) as exc:
                raise Failed(f"claim {claim}, request {request}: {exc}") from None
            names = list(getattr(answer, "cdi_devices", []))
            if problem := self.cdi.problem(self.driver, names):
                raise Failed(f"claim {claim}, request {request}: {problem}")
            if own is not None:
                device_name = f"{claim.uid}-{len(edits)}"
                edits.append((device_name, own))
                names.append(f"{claim_kind(self.dra_name)}={device_name}")
            if not names:
                raise Failed(f"claim {claim}, request {request}: driver {self.driver} answered nothing a container "
                             "could use (no CDI devices, device nodes, mounts or variables)")
            cdi_ids.update(self._spread(request, resource, members, names))
        return tuple(replace(d, cdi_ids=cdi_ids[(d.request, d.resource, d.device)]) for d in devices), edits

    def _spread(self, request: str, resource: str, members: list[PreparedDevice], names: list[str]
                ) -> dict[tuple[str, str, str], tuple[str, ...]]:
        """Each CDI name on the device that declares it (``Device.cdi_devices``), the rest on the first
        device: the kubelet hands the runtime every device's IDs, and a name given twice is injected twice."""
        owner = {name: d.device for d in members for name in self.declared(d.pool, d.device)}
        spread: dict[str, list[str]] = {d.device: [] for d in members}
        for name in names:
            spread[owner.get(name, members[0].device)].append(name)
        return {(request, resource, device): tuple(ids) for device, ids in spread.items()}

    def _undo(self, uid: str, stored: PreparedClaim | None) -> None:
        """A failed Prepare leaves no trace, except that a claim prepared before keeps its devices held."""
        if stored is None:
            self.contents.claims.pop(uid, None)
        else:
            self.contents.claims[uid] = stored
        self._save_or_log()

    def _save(self, claim: PreparedClaim) -> None:
        previous = self.contents.claims.get(claim.uid)
        self.contents.claims[claim.uid] = claim
        try:
            self.checkpoint.save(self.contents)
        except OSError as exc:
            if previous is None:
                del self.contents.claims[claim.uid]
            else:
                self.contents.claims[claim.uid] = previous
            raise Failed(f"cannot write the DRA checkpoint {self.checkpoint.path}: {exc}") from None

    def _save_or_log(self) -> None:
        try:
            self.checkpoint.save(self.contents)
        except OSError as exc:
            log.error("driver %s: cannot write the DRA checkpoint %s: %s", self.driver, self.checkpoint.path, exc)

    # Unprepare -------------------------------------------------------------------------

    def unprepare(self, claim: ClaimRef) -> str:
        """Unprepare one claim from the checkpoint alone; an error message, or "" for success."""
        with self._lock:
            if self.broken:
                log.warning("driver %s: unpreparing claim %s with a checkpoint that cannot be trusted: nothing to "
                            "undo is known; answered as done", self.driver, claim)
                return ""
            stored = self.contents.claims.pop(claim.uid, None)
            if stored is None:
                return ""
            try:
                self.checkpoint.save(self.contents)
            except OSError as exc:
                self.contents.claims[claim.uid] = stored
                return f"cannot write the DRA checkpoint {self.checkpoint.path}: {exc}"
            remove_spec_files(stored.spec_files)
            log.info("driver %s: claim %s unprepared", self.driver, claim)
            empty = not self.contents.claims
        if empty and self.on_empty is not None:
            self.on_empty()
        return ""
