"""The fallback where no container engine works: deploy/Dockerfile's steps, executed in chroots of the base.

Each stage starts from the same mmdebstrap tarball the podman path imports; RUN steps run under
``/bin/sh -c`` in a private mount namespace (proc, the host's /dev and /sys, build secrets on a tmpfs at
/run/secrets) with the build's ARG and ENV values; COPY honours deploy/Dockerfile.dockerignore. The
result is a directory tree, not an image: the runner then starts it as the DaemonSet's container would
run, as near as a chroot gets (mounts, env, read-only root, capabilities dropped with setpriv,
no_new_privs; no device cgroup, no seccomp, no network namespace of its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import dockerfile
from podspec import PodRun

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BuildError(RuntimeError):
    pass


@dataclasses.dataclass
class ImageConfig:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    labels: dict[str, str]


class ChrootBuilder:
    def __init__(self, repo: Path, tarball: Path, workdir: Path, say: Callable[[str], None]) -> None:
        self.repo, self.tarball, self.workdir, self.say = repo, tarball, workdir, say
        self.configs: dict[Path, ImageConfig] = {}
        self.rules = dockerfile.ignore_rules(repo / "deploy" / "Dockerfile.dockerignore")

    def _fresh_root(self, root: Path) -> None:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(self.tarball), "-C", str(root)], check=True)
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")  # RUN steps use the host's network

    def build(self, name: str, build_args: dict[str, str], secrets: dict[str, Path]) -> Path:
        parsed = dockerfile.parse(self.repo / "deploy" / "Dockerfile")
        roots: dict[str, Path] = {}
        config = ImageConfig({}, [], [], {})
        global_values = {k: build_args.get(k, v or "") for k, v in parsed.global_args.items()}
        for stage in parsed.stages:
            root, base = self.workdir / name / stage.name, dockerfile.substitute(stage.base, global_values)
            if base in roots:
                shutil.rmtree(root, ignore_errors=True)
                shutil.copytree(roots[base], root, symlinks=True)
            else:
                self._fresh_root(root)
            self.say(f"chroot: stage {stage.name} from {roots.get(base, 'the mmdebstrap base')} in {root}")
            config = self._stage(stage, root, roots, parsed.global_args, build_args, secrets)
            roots[stage.name] = root
        final = roots[parsed.stages[-1].name]
        self.configs[final] = config
        (final.parent / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
        return final

    def _stage(self, stage: dockerfile.Stage, root: Path, roots: dict[str, Path],
               global_args: dict[str, str | None], build_args: dict[str, str],
               secrets: dict[str, Path]) -> ImageConfig:
        args: dict[str, str] = {}
        config, cwd = ImageConfig({}, [], [], {}), "/"
        for step in stage.steps:
            values = {**args, **config.env}
            if step.op == "ARG":
                key, eq, default = step.args.partition("=")
                args[key] = build_args.get(key, default if eq else (global_args.get(key) or ""))
            elif step.op == "ENV":
                config.env.update({k: dockerfile.substitute(v, values) for k, v in
                                   dockerfile.assignments(step.args).items()})
            elif step.op == "LABEL":
                config.labels.update({k: dockerfile.substitute(v, values) for k, v in
                                      dockerfile.assignments(step.args).items()})
            elif step.op == "WORKDIR":
                cwd = posixpath.join(cwd, dockerfile.substitute(step.args, values))
                (root / cwd.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif step.op == "COPY":
                *sources, target = dockerfile.substitute(step.args, values).split()
                self._copy(sources, posixpath.join(cwd, target), root, roots.get(step.flags.get("from", "")))
            elif step.op == "RUN":
                self._run(root, step, {"PATH": DEFAULT_PATH, "HOME": "/root", **values}, cwd, secrets)
            elif step.op in ("ENTRYPOINT", "CMD"):
                setattr(config, step.op.lower(), json.loads(step.args))
        return config

    def _copy(self, sources: list[str], target: str, root: Path, from_root: Path | None) -> None:
        destination = root / target.lstrip("/")
        for source in sources:
            if from_root is not None:
                shutil.copytree(from_root / source.lstrip("/"), destination, symlinks=True, dirs_exist_ok=True)
                continue
            path = self.repo / source
            if any(rule.match(source.strip("/")) for rule in self.rules):
                raise BuildError(f"COPY {source}: excluded by the .dockerignore")
            if path.is_file():
                into = destination / path.name if target.endswith("/") or len(sources) > 1 else destination
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
                continue
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(self.repo).as_posix()
                if not any(rule.match(relative) for rule in self.rules):
                    into = destination / file.relative_to(path)
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, into)

    def _run(self, root: Path, step: dockerfile.Instruction, env: dict[str, str], cwd: str,
             secrets: dict[str, Path]) -> None:
        mount = step.flags.get("mount", "")
        wanted = dict(part.split("=", 1) for part in mount.split(",") if "=" in part)
        lines = [f"R={shlex.quote(str(root))}", 'mount -t proc proc "$R/proc"', 'mount --rbind /dev "$R/dev"',
                 'mount --rbind /sys "$R/sys"', 'mkdir -p "$R/run/secrets"',
                 'mount -t tmpfs -o mode=0700 tmpfs "$R/run/secrets"']
        if wanted.get("type") == "secret" and wanted.get("id") in secrets:
            lines.append(f'cp {shlex.quote(str(secrets[wanted["id"]]))} "$R/run/secrets/{wanted["id"]}"')
        variables = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        body = shlex.quote(f"cd {shlex.quote(cwd)} || exit 1\n{step.args}")
        lines.append(f'exec chroot "$R" /usr/bin/env -i {variables} /bin/sh -c {body}')
        self.say(f"chroot: RUN {step.args[:100]}{'…' if len(step.args) > 100 else ''}")
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", "\n".join(lines)],
                              capture_output=True, text=True, check=False, timeout=1800)
        if done.returncode != 0:
            raise BuildError(f"RUN failed (exit {done.returncode}): {step.args[:200]}\n"
                             f"{(done.stdout + done.stderr)[-3000:]}")


class ChrootProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, name: str) -> None:
        self.process.send_signal(getattr(signal, f"SIG{name}"))

    def stop(self, timeout_s: int) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


class ChrootRunner:
    """Starts a built tree as the DaemonSet's container would run; the same calls as engine.Podman."""

    def __init__(self, builder: ChrootBuilder) -> None:
        self.builder = builder

    def _command(self, image: str, pod: PodRun, args: Sequence[str], entrypoint: str | None) -> list[str]:
        root, config = Path(image), self.builder.configs[Path(image)]
        lines = [f"R={shlex.quote(image)}", 'mount --bind "$R" "$R"', 'mount -t proc proc "$R/proc"',
                 'mount --rbind /dev "$R/dev"']  # the host's /dev: a chroot has no device cgroup
        for tmpfs in pod.tmpfs:
            size = f",size={tmpfs.size_bytes}" if tmpfs.size_bytes else ""
            (root / tmpfs.target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            lines.append(f'mount -t tmpfs -o mode=1777{size} tmpfs "$R"{shlex.quote(tmpfs.target)}')
        for bind in pod.binds:
            (root / bind.target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            target = f'"$R"{shlex.quote(bind.target)}'
            lines.append(f"mount --rbind {shlex.quote(str(bind.source))} {target}")
            if bind.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        if pod.read_only_root:
            lines.append('mount -o remount,bind,ro "$R"')
        privileges = ["setpriv"] + (["--no-new-privs"] if pod.no_new_privileges else [])
        if "ALL" in pod.cap_drop:
            privileges += ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
        command = [entrypoint] if entrypoint else config.entrypoint
        variables = [f"{k}={v}" for k, v in {"PATH": DEFAULT_PATH, **config.env, **pod.env}.items()]
        words = [*privileges, "--", "/usr/bin/env", "-i", *variables, *command, *(args or config.cmd)]
        lines.append(f'exec chroot --userspec={pod.user} "$R" ' + " ".join(shlex.quote(w) for w in words))
        network = [] if pod.host_network else ["--net"]
        return ["unshare", "--mount", "--propagation", "private", *network, "/bin/sh", "-ec", "\n".join(lines)]

    def run(self, image: str, pod: PodRun, args: Sequence[str], timeout: float = 300,
            entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(image, pod, args, entrypoint), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, name: str, image: str, pod: PodRun, args: Sequence[str],
              entrypoint: str | None = None) -> ChrootProcess:
        log = self.builder.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(self._command(image, pod, args, entrypoint), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return ChrootProcess(process, log)


def tree_sizes(root: Path) -> tuple[int, int]:
    """(bytes in the tree's files and links, bytes of the tree as one gzip -6 tarball)."""
    unpacked = 0
    for folder, _, files in os.walk(root):
        unpacked += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    tar = subprocess.Popen(["tar", "-C", str(root), "--one-file-system", "-cf", "-", "."], stdout=subprocess.PIPE)
    gzip = subprocess.run(["gzip", "-6"], stdin=tar.stdout, capture_output=True, check=True)
    tar.wait()
    return unpacked, len(gzip.stdout)
