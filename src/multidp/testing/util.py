"""Small helpers for tests: waiting for state without a condition, short socket dirs."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.005) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` (for state without a condition)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def short_socket_dir(prefix: str = "mdp") -> Path:
    """A fresh directory with a short path (unix socket paths stop at 107 bytes)."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def run_command(*argv: str) -> int:
    """The ``multidp`` command in this process (``run_command("devices", "--json")``); its exit code.

    Output goes to this process's stdout and stderr (pytest's ``capsys`` reads it).
    """
    from multidp.cli.main import main  # the command's modules only when a test runs one

    return main(list(argv))
