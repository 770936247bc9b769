"""NodePrepareResources and NodeUnprepareResources for one DRA driver, claim by claim.

Prepare reads the claim (:mod:`multidp.dra.claims`) outside the lock, so the claims of one call are read
at the same time. The rest runs one claim at a time, checkpoint writes included:
- map the claim's devices to the driver's IDs, refusing a device another claim holds (admin access
  excepted);
- record the claim ``preparing``;
- ask the driver for the answers (:mod:`multidp.dra.answers`) and write the per-claim CDI spec;
- record the claim ``prepared``.

A claim prepared before answers from the checkpoint. After a reboot, or when its spec file is gone,
its answers are derived again from the stored device IDs. Unprepare needs the checkpoint alone; an
unknown claim is success. An Unprepare that overtakes a Prepare still at work (the kubelet gave up
waiting) wins: that Prepare records nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from multidp.dra.answers import Answering, Declared, Failed, answers
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
from multidp.dra.claimspecs import SpecRefused, remove_spec_files, spec_path, write_claim_spec
from multidp.plugins.runner import DriverRunner
from multidp.serving.cdi import CDIRegistry

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], "tuple[str, str] | None"]  # (pool, device name) -> (resource, driver ID)


class PrepareResult(msgspec.Struct, frozen=True):
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class ClaimPreparer:
    """The prepared claims of one DRA driver, and the work of preparing and unpreparing them."""

    def __init__(self, driver: str, dra_name: str, checkpoint: Checkpoint, boot_id: str, cdi: CDIRegistry,
                 reader: ClaimReader, runner: DriverRunner | None, lookup: Lookup, allocate_timeout: float,
                 declared: Declared = lambda pool, name: (),
                 blocked: Callable[[str, str], str | None] = lambda pool, name: None) -> None:
        self.driver, self.dra_name, self.checkpoint, self.boot_id = driver, dra_name, checkpoint, boot_id
        self.cdi, self.reader, self.runner, self.lookup = cdi, reader, runner, lookup
        self.allocate_timeout, self.declared, self.blocked = allocate_timeout, declared, blocked
        self.stopped = ""  # why the driver does not run (runner None): only Unprepare is served
        self.on_empty: Callable[[], None] | None = None  # called when an Unprepare leaves no claim
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}  # claim UID -> Prepares at work on it
        self._epochs: dict[str, int] = {}  # claim UID -> Unprepares since those began
        self.broken: str | None = None  # why the checkpoint cannot be trusted
        self.contents = Contents()
        self._load()

    def _load(self) -> None:
        try:
            self.contents, self.broken = self.checkpoint.load(), None
        except CheckpointCorrupt as exc:
            if self.broken != str(exc):
                log.error("driver %s: %s; Prepare is refused until it is moved away (claims of running pods would "
                          "otherwise be handed out twice)", self.driver, exc)
            self.broken = str(exc)
            return
        stale = [c for c in self.contents.claims.values() if c.state == PREPARING]
        for claim in stale:  # a host died preparing them: the kubelet's retry starts afresh
            log.warning("driver %s: claim %s/%s (%s) was left half-prepared; cleaning it up", self.driver,
                        claim.namespace, claim.name, claim.uid)
            remove_spec_files(claim.spec_files)
            del self.contents.claims[claim.uid]
        if stale:
            self._save_or_log()

    @property
    def claims(self) -> list[PreparedClaim]:
        """The claims prepared (a copy, taken without waiting for a Prepare at work)."""
        return list(dict(self.contents.claims).values())

    # Prepare ---------------------------------------------------------------------------

    def prepare(self, claim: ClaimRef) -> PrepareResult:
        """Prepare one claim; the result's ``error`` says why not (never raises)."""
        with self._lock:
            self._inflight[claim.uid] = self._inflight.get(claim.uid, 0) + 1
            epoch = self._epochs.get(claim.uid, 0)
        try:
            return PrepareResult(self._prepare(claim, epoch))
        except Failed as exc:
            log.error("driver %s: %s", self.driver, exc)
            return PrepareResult(error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one claim's surprise must not fail the others
            log.exception("driver %s: preparing claim %s failed", self.driver, claim)
            return PrepareResult(error=f"claim {claim}: internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._inflight[claim.uid] -= 1
                if not self._inflight[claim.uid]:
                    del self._inflight[claim.uid]
                    self._epochs.pop(claim.uid, None)

    def _prepare(self, claim: ClaimRef, epoch: int) -> tuple[PreparedDevice, ...]:
        if self.runner is None:
            raise Failed(f"claim {claim}: driver {self.driver} does not run on this node now ({self.stopped}); "
                         "claims it prepared can still be unprepared")
        with self._lock:
            known = self._known(claim, epoch)
        if known is not None:
            return known
        try:
            allocated = self.reader.read(claim, self.dra_name)
        except ClaimProblem as exc:
            raise Failed(str(exc)) from None
        with self._lock:
            known = self._known(claim, epoch)  # prepared by a call that overtook this one
            return known if known is not None else self._prepare_new(claim, allocated)

    def _known(self, claim: ClaimRef, epoch: int) -> tuple[PreparedDevice, ...] | None:
        """A claim prepared before: its devices (derived again when needed); None for a new claim."""
        if self.broken:
            self._load()  # moved away meanwhile?
            if self.broken:
                raise Failed(self.broken)
        if self._epochs.get(claim.uid, 0) != epoch:
            raise Failed(f"claim {claim}: unprepared while this Prepare was at work; not prepared")
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
            if (why := self.blocked(result.pool, result.device)) is not None:
                raise Failed(f"claim {claim}: device {result.pool}/{result.device} {why}")
            devices.append(PreparedDevice(result.request, result.pool, result.device, *found, admin=result.admin,
                                          share_id=result.share_id))
        self._refuse_held(claim, devices)
        return self._derive(claim, tuple(devices), None)

    def _refuse_held(self, claim: ClaimRef, devices: list[PreparedDevice]) -> None:
        wanted = {(d.resource, d.driver_id) for d in devices if not d.admin}
        for other in self.contents.claims.values():
            if other.uid == claim.uid:
                continue
            for held in other.devices:
                if not held.admin and (held.resource, held.driver_id) in wanted:
                    raise Failed(f"claim {claim}: device {held.pool}/{held.device} is already prepared for claim "
                                 f"{other.namespace}/{other.name} ({other.uid})")

    def _derive(self, claim: ClaimRef, devices: tuple[PreparedDevice, ...],
                stored: PreparedClaim | None) -> tuple[PreparedDevice, ...]:
        """Ask the driver, write the claim's spec, record it prepared; on any failure leave no trace (a claim
        prepared before keeps its record, and is derived again next time)."""
        path = str(spec_path(self.cdi.directory, self.dra_name, claim.uid))
        record = PreparedClaim(claim.uid, claim.namespace, claim.name, PREPARING, devices, (path,), self.boot_id)
        if stored is None:
            self._save(record)  # a new claim is recorded before the driver is asked: a crash leaves it cleanable
        how = Answering(self.driver, self.dra_name, self.runner, self.cdi, self.declared, self.allocate_timeout,
                        self.stopped)
        try:
            prepared, edits = answers(how, claim, devices)
            spec_files: tuple[str, ...] = ()
            if edits:
                spec_files = (str(write_claim_spec(self.cdi.directory, self.dra_name, claim.uid, edits)),)
            else:
                remove_spec_files([path])  # one left by an earlier answer that had edits
            self._save(msgspec.structs.replace(record, state=PREPARED, devices=prepared, spec_files=spec_files))
        except BaseException as exc:
            remove_spec_files([path])
            self._undo(claim.uid, stored)
            if isinstance(exc, (Failed, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, (SpecRefused, OSError)):
                raise Failed(f"claim {claim}: cannot write its CDI spec: {exc}") from None
            raise
        return prepared

    def _undo(self, uid: str, stored: PreparedClaim | None) -> None:
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
        """Unprepare one claim from the checkpoint alone; an error message, or "" for success (never raises)."""
        with self._lock:
            if claim.uid in self._inflight:  # a Prepare at work on it must not record it afterwards
                self._epochs[claim.uid] = self._epochs.get(claim.uid, 0) + 1
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
            empty = not self.contents.claims
        remove_spec_files(stored.spec_files)
        log.info("driver %s: claim %s unprepared", self.driver, claim)
        if empty and self.on_empty is not None:
            self.on_empty()
        return ""
