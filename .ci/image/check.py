"""The image check: build deploy/Dockerfile for real and run the image as the shipped DaemonSet runs it.

    python .ci/image/check.py            (as root; `make image-check`; README.md beside this file)

1. podman, runc and mmdebstrap from Debian's archive when missing (apt-get, as root);
2. a bookworm base from Debian's tools (debianbase.py), imported as a local image: CI cannot reach
   Docker Hub;
3. deploy/Dockerfile, unchanged but for --build-arg BASE_IMAGE, built twice: the default image and
   WITH_PYVERBS=1; pip in the build trusts the CA bundle this machine's pip trusts (a build secret, in no
   layer);
4. in the image, with the DaemonSet's mounts, env, user, every capability dropped, a read-only root and
   hostNetwork: `multidp drivers --json`; registration, allocation, a kubelet restart and shutdown
   against the kubelet stand-in (`multidp kubelet`, in a second container sharing the plugin dir); a
   kernel uevent from the host reaching pyudev and the RDMA driver's watch; pyverbs in the variant;
5. the sizes, unpacked and compressed (gzip, as pushed to a registry).

Without a working podman: the Dockerfile's steps run in a chroot of the same base instead
(chrootbuild.py), said so in the log. Not root: a loud SKIP (exit 0; --require makes it exit 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import chrootbuild
import debianbase
import engine
import scenarios
from podspec import PodRun, from_daemonset, probe_port

REPO = Path(__file__).resolve().parents[2]
APT_PACKAGES = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}
BASE_TAG = "localhost/multidp-check-base:bookworm"
STARTED = time.monotonic()


def say(line: str) -> None:
    print(f"[image-check {time.monotonic() - STARTED:6.1f}s] {line}", flush=True)


def pip_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts: PIP_CERT, pip's config, then what requests and OpenSSL read."""
    candidates = [os.environ.get("PIP_CERT")]
    try:
        config = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"],
                                capture_output=True, text=True, timeout=60, check=False)
        candidates.append(config.stdout.strip() if config.returncode == 0 else None)
    except (OSError, subprocess.TimeoutExpired):
        pass
    candidates += [os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE")]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def install_missing(needed: list[str]) -> list[str]:
    """Installs what is missing with apt-get (root only); returns what is still missing."""
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing from Debian: {' '.join(APT_PACKAGES[t] for t in missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *(APT_PACKAGES[t] for t in missing)], env=env,
                       stdout=subprocess.DEVNULL, check=False, timeout=900)
    return [tool for tool in needed if shutil.which(tool) is None]


def revision() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def run_scenarios(runner: scenarios.Runner, image: str, verbs_image: str | None, pod: PodRun, port: int,
                  timings: dict[str, float]) -> None:
    steps: list[tuple[str, Callable[[], None]]] = [
        ("drivers", lambda: scenarios.check_drivers(runner, image, pod, say)),
        ("registration", lambda: scenarios.check_registration(runner, image, pod, port, say)),
    ]
    if os.geteuid() == 0:
        steps.append(("uevent", lambda: scenarios.check_uevent(runner, image, pod, say)))
    else:
        say("SKIP uevent: only root can make the kernel send a uevent (writing to /sys/.../uevent)")
    if verbs_image is not None:
        steps.append(("pyverbs", lambda: scenarios.check_pyverbs(runner, verbs_image, image, pod, say)))
    for name, step in steps:
        began = time.monotonic()
        step()
        timings[name] = time.monotonic() - began


def with_podman(podman: engine.Podman, args: argparse.Namespace, pod: PodRun, port: int) -> dict[str, float]:
    tags = [BASE_TAG, args.tag, f"{args.tag}-pyverbs"]
    before, ours_before = podman.image_ids(), podman.tagged(tags)
    try:
        return _with_podman(podman, args, pod, port)
    finally:
        removed = podman.remove_leftovers(before, ours_before)
        say(f"podman: kept {', '.join(tags)}; removed {removed} untagged image(s) this run made or replaced")


def _with_podman(podman: engine.Podman, args: argparse.Namespace, pod: PodRun, port: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    began = time.monotonic()
    podman.import_base(debianbase.build_tarball(args.workdir, say), BASE_TAG)
    timings["base"] = time.monotonic() - began
    ca = pip_ca_bundle()
    say(f"pip in the build trusts {ca or 'its own bundle (no CA configured here)'}")
    secrets = {"pip-ca": ca} if ca else {}
    variants = {args.tag: "0"} | ({f"{args.tag}-pyverbs": "1"} if args.pyverbs else {})
    for tag, with_verbs in variants.items():
        began = time.monotonic()
        build_args = {"BASE_IMAGE": BASE_TAG, "WITH_PYVERBS": with_verbs, "REVISION": revision()}
        podman.build(REPO, tag, build_args, secrets, args.workdir / f"build-{with_verbs}.log")
        timings[f"build WITH_PYVERBS={with_verbs}"] = time.monotonic() - began
        say(f"built {tag} (WITH_PYVERBS={with_verbs}) in {timings[f'build WITH_PYVERBS={with_verbs}']:.0f} s; "
            f"labels: version {podman.label(tag, 'org.opencontainers.image.version')}, "
            f"revision {podman.label(tag, 'org.opencontainers.image.revision')[:12]}")
    verbs_tag = f"{args.tag}-pyverbs" if args.pyverbs else None
    run_scenarios(podman, args.tag, verbs_tag, pod, port, timings)
    sizes = {"base (mmdebstrap)": podman.sizes(BASE_TAG), **{tag: podman.sizes(tag) for tag in variants}}
    for name, (unpacked, compressed) in sizes.items():
        say(f"size {name}: {unpacked / 1e6:.1f} MB unpacked, {compressed / 1e6:.1f} MB compressed (gzip layers)")
    return timings


def with_chroot(args: argparse.Namespace, pod: PodRun, port: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    began = time.monotonic()
    tarball = debianbase.build_tarball(args.workdir, say)
    timings["base"] = time.monotonic() - began
    ca = pip_ca_bundle()
    builder = chrootbuild.ChrootBuilder(REPO, tarball, args.workdir / "chroot", say)
    images: dict[str, Path] = {}
    for with_verbs in ("0", "1") if args.pyverbs else ("0",):
        began = time.monotonic()
        build_args = {"BASE_IMAGE": f"mmdebstrap {debianbase.SUITE} (chroot)", "WITH_PYVERBS": with_verbs,
                      "REVISION": revision()}
        images[with_verbs] = builder.build(f"image-{with_verbs}", build_args, {"pip-ca": ca} if ca else {})
        timings[f"build WITH_PYVERBS={with_verbs}"] = time.monotonic() - began
    runner = chrootbuild.ChrootRunner(builder)
    run_scenarios(runner, str(images["0"]), str(images["1"]) if "1" in images else None, pod, port, timings)
    for with_verbs, root in images.items():
        unpacked, compressed = chrootbuild.tree_sizes(root)
        say(f"size WITH_PYVERBS={with_verbs} (chroot tree): {unpacked / 1e6:.1f} MB unpacked, "
            f"{compressed / 1e6:.1f} MB as one gzip tarball")
    return timings


def skip(lacking: list[str], require: bool) -> int:
    say("=" * 100)
    say(f"SKIP: the image was NOT built or run: {'; '.join(lacking)}")
    say("=" * 100)
    return 1 if require else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/multidp-image-check"))
    parser.add_argument("--engine", choices=("auto", "podman", "chroot"), default="auto")
    parser.add_argument("--tag", default="localhost/multidp:check")
    parser.add_argument("--no-pyverbs", dest="pyverbs", action="store_false", help="skip the WITH_PYVERBS=1 build")
    parser.add_argument("--require", action="store_true", help="exit 1 instead of skipping where nothing can run")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        return skip(["not root: the Debian base (mmdebstrap), the build, the chroot fallback and the uevent all "
                     "need root; run `sudo make image-check`"], args.require)
    shutil.rmtree(args.workdir / "scratch", ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    config = REPO / "deploy" / "overlays" / "everything" / "multidp.yaml"
    pod = from_daemonset(REPO / "deploy" / "base" / "daemonset.yaml", args.workdir / "scratch", config)
    say(f"multidp {version}; the DaemonSet's container: user {pod.user}, drop {pod.cap_drop}, read-only root "
        f"{pod.read_only_root}, hostNetwork {pod.host_network}, mounts "
        + ", ".join(f"{b.target}{' (ro)' if b.read_only else ''}" for b in pod.binds)
        + f"; config {config.relative_to(REPO)} (every driver on)")
    missing = install_missing(["podman", "runc", "mmdebstrap"] if args.engine != "chroot" else ["mmdebstrap"])
    podman = engine.Podman(args.workdir, say)
    why_not = "chroot asked for" if args.engine == "chroot" else podman.usable()
    if why_not is None:
        say(f"engine: podman {podman.capture(['--version']).split()[-1]} {' '.join(podman.global_flags)}")
        timings = with_podman(podman, args, pod, probe_port(config))
    elif shutil.which("mmdebstrap") and args.engine != "podman":
        say(f"FALLBACK: no container engine ({why_not}); running the Dockerfile's steps in a chroot of the same "
            "base: no image is made, no device cgroup or seccomp applies, capabilities are dropped with setpriv")
        timings = with_chroot(args, pod, probe_port(config))
    else:
        return skip([why_not, *(f"{tool} is not installed and apt-get could not install it" for tool in missing)],
                    args.require)
    say("timings: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    say(f"PASS in {time.monotonic() - STARTED:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (scenarios.CheckFailed, engine.EngineError, chrootbuild.BuildError, RuntimeError) as failure:
        say(f"FAIL: {failure}")
        sys.exit(1)
