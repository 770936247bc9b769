"""A Debian 12 ("bookworm") base made with Debian's own tools, in place of Docker Hub's debian:bookworm-slim.

CI cannot reach Docker Hub, so the image check builds the base the Dockerfile expects with mmdebstrap from
the Debian archive: --variant=minbase (Priority: required packages and apt), merged /usr through
mmdebstrap's own hook (installing the usrmerge package instead would pull perl in), and what makes the
official image "slim" (debuerreotype's choices, from github.com/debuerreotype/debuerreotype): no
documentation but the copyright files, no man or info pages, no translations, and apt told to keep
neither its package caches nor downloaded .deb files. Both the podman build and the chroot fallback
start from this one tarball.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

SUITE = "bookworm"
SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
SLIM_DPKG = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
APT_OPTIONS = ('Acquire::Languages "none";', 'Acquire::GzipIndexes "true";')
# Written only at the end: mmdebstrap itself needs the downloaded packages while it installs them.
APT_CLEAN = ('Dir::Cache::pkgcache "";', 'Dir::Cache::srcpkgcache "";', 'APT::Keep-Downloaded-Packages "false";')
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")


def mmdebstrap_command(tarball: Path) -> list[str]:
    quoted = " ".join(f"'{line}'" for line in APT_CLEAN)
    command = ["mmdebstrap", "--variant=minbase", "--format=tar", f"--hook-dir={MERGED_USR_HOOKS}"]
    command += [f"--dpkgopt={option}" for option in SLIM_DPKG]
    command += [f"--aptopt={option}" for option in APT_OPTIONS]
    command += [
        f'--customize-hook=printf "%s\\n" {quoted} > "$1/etc/apt/apt.conf.d/docker-clean"',
        '--customize-hook=rm -f "$1"/var/cache/apt/*.bin',
        SUITE, str(tarball), *SOURCES,
    ]
    return command


def build_tarball(workdir: Path, say: Callable[[str], None]) -> Path:
    """The base as a tarball under ``workdir`` (mmdebstrap's log beside it)."""
    tarball, log = workdir / "bookworm-base.tar", workdir / "mmdebstrap.log"
    tarball.unlink(missing_ok=True)
    say(f"base: mmdebstrap --variant=minbase {SUITE} (slim, merged /usr) -> {tarball}")
    with log.open("w") as out:
        done = subprocess.run(mmdebstrap_command(tarball), stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"mmdebstrap failed (exit {done.returncode}); end of {log}:\n{tail}")
    say(f"base: {tarball.stat().st_size / 1e6:.1f} MB tarball")
    return tarball
