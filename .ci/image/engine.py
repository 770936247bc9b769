"""podman as the image check uses it: the runtime, ulimits and storage this kind of machine needs.

Found on a Debian 12 CI machine (root, cgroup v1 + v2 "hybrid" hierarchy, no CAP_SYS_RESOURCE):
- crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"): runc is used when present;
- podman's default ulimits (nofile 1048576) exceed the hard limits and cannot be raised without
  CAP_SYS_RESOURCE, and podman lowers its own nproc to 32768 before it starts the runtime: both are set
  explicitly, at most what this process has;
- overlay storage works on ext4; where it does not (nested overlay), vfs in a folder of our own.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from podspec import PodRun

PODMAN_NPROC_CAP = 32768  # podman 4.3 sets its own RLIMIT_NPROC to this before it runs the runtime


class EngineError(RuntimeError):
    pass


def ulimit_flags() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = PODMAN_NPROC_CAP if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC_CAP)
    return [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]


def pod_flags(pod: PodRun) -> list[str]:
    """``podman run`` flags for the DaemonSet's container."""
    flags = [f"--user={pod.user}"]
    flags += [f"--cap-drop={cap}" for cap in pod.cap_drop] + [f"--cap-add={cap}" for cap in pod.cap_add]
    if pod.read_only_root:
        flags.append("--read-only")
    if pod.no_new_privileges:
        flags.append("--security-opt=no-new-privileges")
    if pod.host_network:
        flags.append("--network=host")
    for bind in pod.binds:
        flags.append(f"--volume={bind.source}:{bind.target}:{'ro' if bind.read_only else 'rw'}")
    for tmpfs in pod.tmpfs:
        size = f",size={tmpfs.size_bytes}" if tmpfs.size_bytes else ""
        flags.append(f"--tmpfs={tmpfs.target}:rw,mode=1777{size}")
    flags += [f"--env={name}={value}" for name, value in sorted(pod.env.items())]
    return flags


class Container:
    """A detached container: its output, signals, and its exit code once stopped."""

    def __init__(self, podman: Podman, name: str) -> None:
        self.podman, self.name = podman, name
        self.final_output: str | None = None  # kept when the container is removed

    def output(self) -> str:
        if self.final_output is not None:
            return self.final_output
        done = subprocess.run(["podman", *self.podman.global_flags, "logs", self.name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        return done.stdout

    def signal(self, name: str) -> None:
        self.podman.capture(["kill", f"--signal={name}", self.name])

    def stop(self, timeout_s: int) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code. The container is removed."""
        self.podman.capture(["stop", f"--time={timeout_s}", self.name], check=False)
        code = self.podman.capture(["inspect", "--format={{.State.ExitCode}}", self.name], check=False).strip()
        self.final_output = self.output()
        self.podman.capture(["rm", "--force", self.name], check=False)
        return int(code) if code.lstrip("-").isdigit() else -1


class Podman:
    """podman with the flags above; ``global_flags`` picks the runtime and, if needed, vfs storage."""

    def __init__(self, workdir: Path, say: Callable[[str], None]) -> None:
        self.workdir, self.say = workdir, say
        self.global_flags = ["--runtime=runc"] if shutil.which("runc") else []

    def capture(self, args: Sequence[str], check: bool = True, timeout: float = 900) -> str:
        done = subprocess.run(["podman", *self.global_flags, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise EngineError(f"podman {' '.join(args[:2])} failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout

    def usable(self) -> str | None:
        """None when podman works here (after trying vfs storage), else why not."""
        if shutil.which("podman") is None:
            return "podman is not installed"
        try:
            self.capture(["info", "--format={{.Store.GraphDriverName}}"], timeout=120)
            return None
        except (EngineError, subprocess.TimeoutExpired) as exc:
            first = str(exc)
        vfs = ["--storage-driver=vfs", f"--root={self.workdir / 'storage'}", f"--runroot={self.workdir / 'run'}"]
        self.global_flags += vfs
        try:
            self.capture(["info"], timeout=120)
        except (EngineError, subprocess.TimeoutExpired) as exc:
            return f"podman does not start: {first}; with vfs storage: {exc}"
        self.say(f"podman: default storage failed ({first.splitlines()[0]}); using vfs in {self.workdir}")
        return None

    def import_base(self, tarball: Path, tag: str) -> None:
        self.capture(["import", "--quiet", str(tarball), tag])

    def build(self, repo: Path, tag: str, build_args: dict[str, str], secrets: dict[str, Path], log: Path) -> None:
        """``podman build`` of deploy/Dockerfile from the repository root; its output goes to ``log``."""
        command = ["podman", *self.global_flags, "build", *ulimit_flags(), "--network=host", "--layers",
                   f"--file={repo / 'deploy' / 'Dockerfile'}",
                   f"--ignorefile={repo / 'deploy' / 'Dockerfile.dockerignore'}", f"--tag={tag}"]
        command += [f"--build-arg={key}={value}" for key, value in build_args.items()]
        command += [f"--secret=id={key},src={path}" for key, path in secrets.items()]
        with log.open("w") as out:
            done = subprocess.run([*command, str(repo)], stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
            raise EngineError(f"podman build {tag} failed (exit {done.returncode}); end of {log}:\n{tail}")

    def run(self, image: str, pod: PodRun, args: Sequence[str], timeout: float = 300,
            entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
        command = ["podman", *self.global_flags, "run", "--rm", *ulimit_flags(), *pod_flags(pod)]
        if entrypoint is not None:
            command.append(f"--entrypoint={entrypoint}")
        return subprocess.run([*command, image, *args], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start(self, name: str, image: str, pod: PodRun, args: Sequence[str],
              entrypoint: str | None = None) -> Container:
        self.capture(["rm", "--force", name], check=False)
        command = ["run", "--detach", f"--name={name}", *ulimit_flags(), *pod_flags(pod)]
        if entrypoint is not None:
            command.append(f"--entrypoint={entrypoint}")
        self.capture([*command, image, *args])
        return Container(self, name)

    def image_ids(self, *filters: str) -> set[str]:
        listed = self.capture(["images", "--all", "--quiet", "--no-trunc", *(f"--filter={f}" for f in filters)],
                              check=False)
        return {image.removeprefix("sha256:") for image in listed.split()}

    def tagged(self, names: list[str]) -> set[str]:
        found = self.capture(["image", "inspect", "--format={{.Id}}", *names], check=False)
        return {line.strip() for line in found.split() if line.strip()}

    def remove_leftovers(self, before: set[str], ours_before: set[str]) -> int:
        """Removes the untagged images this run left: its build stages, and what its tags pointed at before."""
        leftovers = self.image_ids("dangling=true") & ((self.image_ids() - before) | ours_before)
        for image in leftovers:
            self.capture(["rmi", "--force", image], check=False)
        return len(leftovers)

    def label(self, image: str, key: str) -> str:
        labels = json.loads(self.capture(["image", "inspect", "--format={{json .Labels}}", image]))
        return str(labels.get(key, ""))

    def sizes(self, image: str) -> tuple[int, int]:
        """(unpacked bytes, compressed bytes): the layers as stored, and as gzip-compressed for a registry."""
        unpacked = int(self.capture(["image", "inspect", "--format={{.Size}}", image]).strip())
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix="oci-") as folder:
            self.capture(["push", "--quiet", "--compression-format=gzip", image, f"oci:{folder}:sizes"])
            index = json.loads((Path(folder) / "index.json").read_text())
            digest = index["manifests"][0]["digest"].split(":", 1)[1]
            manifest = json.loads((Path(folder) / "blobs" / "sha256" / digest).read_text())
        return unpacked, sum(layer["size"] for layer in manifest["layers"])
