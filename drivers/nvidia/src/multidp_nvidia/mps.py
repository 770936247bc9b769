"""NVIDIA's MPS sharing: what Allocate answers add, and whether the MPS control daemon is ready.

NVIDIA's ``nvidia-device-plugin-mps-control-daemon`` DaemonSet reads the same config,
mounts ``mpsRoot`` (host, default /run/nvidia/mps) at /mps, mounts a tmpfs at
``<mpsRoot>/shm``, starts one ``nvidia-cuda-mps-control`` per shared resource with its
pipe in ``<mpsRoot>/<resource>/pipe`` (logs in ``.../log``, a ``.started`` file once its
limits are set) and writes ``<mpsRoot>/.ready`` once every daemon runs.

NVIDIA's plugin then answers, for every container of the resource:
``CUDA_MPS_PIPE_DIRECTORY=/mps/<resource>/pipe``, a mount of ``<mpsRoot>/<resource>/pipe``
there and of ``<mpsRoot>/shm`` at ``/dev/shm`` (neither read-only). Memory and thread
limits are not in the answer: the daemon sets them as per-client defaults.

Readiness: NVIDIA's current plugin waits for ``/mps/.ready`` (and a responsive pipe) before
it registers, and gives up after five minutes (older ones asked the pipe once). Here the
resource is served at once and its devices are Unhealthy, with the missing file as the
reason, until the daemon's files are there; the check is repeated on every poll, with one
log line per change. ``.ready`` holds the sharing config the daemon started with (JSON:
``{"resources": [{"name", "replicas", ...}], ...}``); a daemon set up for other replica counts
would give each client the wrong share of its GPU, so that keeps the devices Unhealthy too.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping

from multidp import Mount

from multidp_nvidia.layering import qualified

CONTAINER_ROOT = "/mps"  # where NVIDIA's answers put the pipe in the workload container
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
READY_FILE = ".ready"


def pipe_dir(root: str, resource: str) -> str:
    return posixpath.join(root, resource, "pipe")


def shm_dir(root: str) -> str:
    return posixpath.join(root, "shm")  # one for all resources, as NVIDIA's daemon mounts it


def answer_parts(resource: str, mps_root: str) -> tuple[dict[str, str], list[Mount]]:
    """The env and mounts NVIDIA's plugin adds for an MPS-shared ``resource``; host paths under ``mps_root``."""
    pipe = pipe_dir(CONTAINER_ROOT, resource)
    mounts = [Mount(pipe, pipe_dir(mps_root, resource)), Mount("/dev/shm", shm_dir(mps_root))]
    return {PIPE_ENV: pipe}, mounts


def _missing(path: str) -> str:
    """'' when ``path`` exists, else why it does not count."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return f"{path} is missing"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    return ""


def daemon_replicas(ready_file: str) -> dict[str, int] | None:
    """Replicas per resource in the daemon's ``.ready`` file; None when it holds no such config
    (empty, or written by a daemon that stores none): then only its presence counts."""
    try:
        with open(ready_file, encoding="utf-8") as ready:
            data = json.load(ready)
        entries = data.get("resources") or []
        return {qualified(str(e["name"])): int(e["replicas"]) for e in entries}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


class MpsReadiness:
    """Per MPS-shared resource: '' when its daemon is ready, else the reason its devices are Unhealthy."""

    def __init__(self, container_root: str, log: logging.Logger, replicas: Mapping[str, int]) -> None:
        self.root = container_root
        self.log = log
        self.replicas = dict(replicas)  # per MPS-shared resource (already qualified names): what is served here
        self._problems: dict[str, str] = {}

    def check(self, resource: str, skew: str) -> str:
        """Why ``resource``'s daemon is not ready ('' when it is); ``skew``: this poll's :meth:`config_skew`."""
        wanted = (posixpath.join(self.root, READY_FILE), pipe_dir(self.root, resource), shm_dir(self.root))
        wrong = next((w for w in map(_missing, wanted) if w), "")
        if wrong:
            return f"MPS control daemon not ready: {wrong}"
        return skew

    def config_skew(self) -> str:
        """Why the daemon's config (in ``.ready``) does not fit what is served here, or ''."""
        ready = posixpath.join(self.root, READY_FILE)
        theirs = daemon_replicas(ready)
        if theirs is None:
            return ""
        skew = sorted(f"{name}: {count} replicas here, {theirs.get(name, 'none')} in the daemon's"
                      for name, count in self.replicas.items() if theirs.get(name) != count)
        if skew:
            return f"the MPS control daemon runs another sharing config ({'; '.join(skew)}; see {ready})"
        return ""

    def refresh(self, resources: Iterable[str]) -> None:
        """Check each resource again; log once when its state changes."""
        problems: dict[str, str] = {}
        names = sorted(set(resources))
        skew = self.config_skew() if names else ""  # one read of .ready per poll, whatever the resources
        for resource in names:
            problem = problems[resource] = self.check(resource, skew)
            before = self._problems.get(resource)
            if problem == before:
                continue
            if problem:
                self.log.warning("%s: MPS devices are unhealthy until NVIDIA's MPS control daemon is ready (%s)",
                                 resource, problem)
            else:
                self.log.info("%s: the MPS control daemon is ready (%s); its devices are served",
                              resource, self.root)
        self._problems = problems

    def problem(self, resource: str) -> str:
        return self._problems.get(resource, "")
