"""multidp's exceptions.

Drivers raise :class:`ConfigError` and :class:`AllocationRefused` (both in the
driver API); the others are the host's. Which gRPC status each gets is decided
in one place, :mod:`multidp.serving.status`.
"""

from __future__ import annotations


class MultidpError(Exception):
    """Base class of multidp's own errors."""


class ConfigError(MultidpError):
    """A configuration value is wrong. ``key`` is its dotted path (``drivers.rdma.pools[0]``)."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"{key}: {message}{where}" if key else f"{message}{where}")


class AllocationRefused(MultidpError):
    """A driver refuses an allocation by policy; the kubelet sees INVALID_ARGUMENT.

    The message should say what was asked and why it cannot be given, e.g.
    ``maximum request size for shared resources is 1; found 3``.
    """


def split_validation_error(exc: Exception, prefix: str = "") -> tuple[str, str]:
    """Turn a msgspec.ValidationError's ``Message - at `$.a.b``` into (``prefix.a.b``, message)."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `$")
    if not sep:
        return prefix, text
    path = where.rstrip("`").lstrip(".")
    key = ".".join(p for p in (prefix, path) if p).replace(".[", "[")
    return key, message


class InvalidRequest(MultidpError):
    """A request from the kubelet breaks the error contract (INVALID_ARGUMENT)."""


class DriverCallError(MultidpError):
    """A driver call raised (or, as :class:`DriverTimeout`, missed its deadline)."""

    def __init__(self, driver: str, call: str, message: str) -> None:
        self.driver = driver
        self.call = call
        super().__init__(message)

    @property
    def timed_out(self) -> bool:
        return isinstance(self, DriverTimeout)


class DriverTimeout(DriverCallError):
    """A driver call did not answer within its deadline (it may still be running)."""


class DriverRefused(DriverCallError):
    """A driver call raised :class:`AllocationRefused`: a policy answer, not a failure."""

    def __init__(self, driver: str, call: str, reason: str) -> None:
        self.reason = reason
        super().__init__(driver, call, f"driver {driver}: {call} refused: {reason}")


class BadDriverAnswer(MultidpError):
    """A driver call returned something the host cannot use (wrong type, invalid fields)."""


class CdiUnavailable(MultidpError):
    """An allocation names CDI devices that no spec written by multidp holds."""


class TooManyStreams(MultidpError):
    """A client opened more ListAndWatch streams on one resource than the host allows."""


class PluginLoadError(MultidpError):
    """A driver plugin could not be imported or registered (the message says why)."""
