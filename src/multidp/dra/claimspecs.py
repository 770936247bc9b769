"""Per-claim CDI specs: what a driver's answer holds beyond its own CDI devices, as a spec of its own.

Through DRA the kubelet hands the runtime CDI device IDs only, so device nodes, mounts and variables
of an answer travel as one CDI device per claim request in a spec file per claim
(``multidp-<DRA driver>_claim-<uid>.json``, kind ``<DRA driver>/claim``). A driver's own CDI names pass
through as they are. Annotations have no CDI form: such an answer is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from multidp.model import CDIDeviceSpec, CDISpec, ContainerAllocation
from multidp.serving.cdi import SpecRefused, checked_documents, write_spec_file
from multidp.serving.contract import allocation_problem

log = logging.getLogger(__name__)

CLAIM_CLASS = "claim"


class AnswerRefused(Exception):
    """The driver's answer cannot be given through DRA; the message says why."""


def claim_kind(dra_name: str) -> str:
    return f"{dra_name}/{CLAIM_CLASS}"


def spec_path(cdi_dir: Path, dra_name: str, uid: str) -> Path:
    return cdi_dir / f"multidp-{dra_name}_claim-{uid}.json"


def edits_of(answer: object, driver: str) -> CDIDeviceSpec | None:
    """The answer's container edits as a CDI device named later (None: the answer has none);
    AnswerRefused for an answer that is no ContainerAllocation or that sets annotations."""
    problem = allocation_problem(answer)
    if problem is not None:
        raise AnswerRefused(f"driver {driver}: {problem}")
    assert isinstance(answer, ContainerAllocation)
    if answer.annotations:
        keys = ", ".join(sorted(answer.annotations)[:3])
        raise AnswerRefused(f"driver {driver}: its answer sets container annotations ({keys}), which DRA cannot "
                            "pass on (CDI has no annotations); in DRA mode a driver must answer with CDI devices, "
                            "device nodes, mounts and variables only")
    if not (answer.envs or answer.mounts or answer.device_nodes):
        return None
    return CDIDeviceSpec(name="", device_nodes=tuple(answer.device_nodes), env=dict(answer.envs),
                         mounts=tuple(answer.mounts))


def write_claim_spec(cdi_dir: Path, dra_name: str, uid: str, devices: Sequence[tuple[str, CDIDeviceSpec]]) -> Path:
    """Write the claim's spec with one device per ``(name, edits)``; its path. SpecRefused or OSError."""
    spec = CDISpec(kind=claim_kind(dra_name),
                   devices=[CDIDeviceSpec(name, e.device_nodes, e.env, e.mounts) for name, e in devices])
    ((_, document),) = checked_documents(dra_name, [spec])
    path = spec_path(cdi_dir, dra_name, uid)
    write_spec_file(path, document)
    return path


def remove_spec_files(paths: Sequence[str]) -> None:
    """Remove claim spec files; one that cannot be removed is logged, never raised."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove the claim's CDI spec %s: %s", path, exc)


__all__ = ["AnswerRefused", "SpecRefused", "claim_kind", "edits_of", "remove_spec_files", "spec_path",
           "write_claim_spec"]
