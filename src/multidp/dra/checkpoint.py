"""The prepared claims, on disk: atomic, versioned, checksummed, with the boot they were prepared in.

A claim is written ``preparing`` before the driver is asked anything and ``prepared`` once its CDI
specs exist, so a host that dies between the two finds it half-prepared and cleans it up (NVIDIA
dra-driver-gpu#840). The boot id tells a host restart (claims stay prepared as they are) from a
reboot (``/var/run/cdi`` is tmpfs and device numbers may change: the host derives the answers again
from the stored device IDs, never from stored device nodes).

A file that cannot be read or fails its checksum is never treated as empty: Prepare is refused, naming
the file, until an operator moves it away (the kubelet does not call Prepare again for claims of running
pods, so an empty checkpoint would hand their devices out twice; dra-example-driver#249).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)

KIND = "MultidpDRACheckpoint"
VERSION = 1
PREPARING, PREPARED = "preparing", "prepared"
MAX_BYTES = 64 << 20


class CheckpointCorrupt(Exception):
    """The checkpoint file exists but cannot be trusted; the message names the file and what is wrong."""


class PreparedDevice(msgspec.Struct, frozen=True):
    """One device of a prepared claim: where the claim's result points, and what the driver calls it."""

    request: str
    pool: str
    device: str
    resource: str
    driver_id: str
    cdi_ids: tuple[str, ...] = ()
    admin: bool = False  # adminAccess: reaches a device others may hold, and holds it for nobody
    share_id: str | None = None


class PreparedClaim(msgspec.Struct, frozen=True):
    """A claim this host prepared (or began to): its identity, state and devices."""

    uid: str
    namespace: str
    name: str
    state: str = PREPARED
    devices: tuple[PreparedDevice, ...] = ()
    spec_files: tuple[str, ...] = ()  # the per-claim CDI spec files written for it
    boot_id: str = ""  # the boot it was prepared in


class Contents(msgspec.Struct):
    """What a checkpoint holds: the claims by UID."""

    claims: dict[str, PreparedClaim] = msgspec.field(default_factory=dict)


def _checksum(data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _claim_from(uid: str, raw: Any) -> PreparedClaim:
    if not isinstance(raw, dict):
        raise ValueError(f"claim {uid} is not an object")
    devices = tuple(PreparedDevice(**{**d, "cdi_ids": tuple(d.get("cdi_ids", ()))}) for d in raw.get("devices", ()))
    state = raw.get("state")
    if state not in (PREPARING, PREPARED):
        raise ValueError(f"claim {uid} has state {state!r}")
    return PreparedClaim(uid, str(raw["namespace"]), str(raw["name"]), state, devices,
                         tuple(str(f) for f in raw.get("spec_files", ())), str(raw.get("boot_id", "")))


class Checkpoint:
    """The checkpoint file at ``path`` (its folder is created on the first save)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Contents:
        """The stored contents; empty when there is no file; CheckpointCorrupt when it cannot be trusted."""
        try:
            with self.path.open("rb") as source:
                raw = source.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return Contents()
        except OSError as exc:
            raise CheckpointCorrupt(f"DRA checkpoint {self.path} cannot be read: {exc}") from exc
        problem = f"DRA checkpoint {self.path} cannot be trusted"
        if len(raw) > MAX_BYTES:
            raise CheckpointCorrupt(f"{problem}: it is over {MAX_BYTES >> 20} MiB")
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise CheckpointCorrupt(f"{problem}: it is not JSON ({exc})") from exc
        if not isinstance(document, dict) or document.get("kind") != KIND:
            raise CheckpointCorrupt(f"{problem}: it is not a {KIND}")
        if document.get("version") != VERSION:
            raise CheckpointCorrupt(f"{problem}: version {document.get('version')!r}, this multidp reads {VERSION}")
        data = document.get("data")
        if not isinstance(data, dict) or document.get("checksum") != _checksum(data):
            raise CheckpointCorrupt(f"{problem}: its checksum does not match its contents")
        try:
            claims = {uid: _claim_from(uid, raw_claim) for uid, raw_claim in data.get("claims", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointCorrupt(f"{problem}: {exc}") from exc
        return Contents(claims)

    def save(self, contents: Contents) -> None:
        """Write ``contents`` atomically (a temporary file, fsync, rename, fsync of the folder)."""
        # to_builtins: nested records as dicts in field order, tuples as lists (the checksum is over what is read back)
        data = {"claims": {uid: msgspec.to_builtins(claim) for uid, claim in sorted(contents.claims.items())}}
        document = {"kind": KIND, "version": VERSION, "checksum": _checksum(data), "data": data}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # the rename is done: a folder that cannot be synced loses nothing but durability
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            log.warning("DRA checkpoint %s written, but its folder could not be synced: %s", self.path, exc)


def read_boot_id(path: Path) -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); empty when it cannot be read."""
    try:
        return path.read_text().strip()[:100]
    except OSError:
        return ""
