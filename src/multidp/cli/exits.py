"""The ``multidp`` command's exit codes, and the error that means "the command line is wrong"."""

from __future__ import annotations

EXIT_OK = 0  # done, or stopped by SIGTERM/SIGINT
EXIT_DRIVER_FAILED = 1  # run --strict and a driver failed at start; devices: something is not served
EXIT_WARNINGS = 1  # config check: valid, but a driver warned
EXIT_USAGE = 2  # usage and config errors


class UsageError(Exception):
    """The command line names something that does not exist (an unknown driver); exit 2."""
