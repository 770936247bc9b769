"""Which gRPC status each failure gets: the one table from exception to status code.

Every RPC of the DevicePlugin service ends a failure through :func:`answer`,
so the mapping lives here and nowhere else. The messages are built where the
failure is known (the error contract, the runner, the service) and passed on
as they are, except a driver's policy refusal and a failed driver call, which
are put into the kubelet-facing sentence for the call here.
"""

from __future__ import annotations

import grpc

from multidp.errors import (
    BadDriverAnswer,
    CdiUnavailable,
    DriverCallError,
    DriverRefused,
    DriverTimeout,
    InvalidRequest,
    MultidpError,
    TooManyStreams,
)
from multidp.serving.contract import invalid

# First match wins: subclasses before their bases.
STATUS_CODES: tuple[tuple[type[MultidpError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),  # the error contract; requests that do not parse
    (DriverRefused, grpc.StatusCode.INVALID_ARGUMENT),  # the driver raised AllocationRefused
    (CdiUnavailable, grpc.StatusCode.FAILED_PRECONDITION),  # the CDI devices it names are not written
    (DriverTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),  # the driver missed its deadline
    (DriverCallError, grpc.StatusCode.INTERNAL),  # the driver raised
    (BadDriverAnswer, grpc.StatusCode.INTERNAL),  # the driver answered something unusable
    (TooManyStreams, grpc.StatusCode.RESOURCE_EXHAUSTED),  # past the ListAndWatch streams a resource allows
)


def status_code(error: MultidpError) -> grpc.StatusCode:
    """The status code of ``error`` (UNKNOWN for an error the table does not know: a host bug)."""
    for error_type, code in STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.UNKNOWN


def answer(error: MultidpError, call: str, resource: str) -> tuple[grpc.StatusCode, str]:
    """The status and message the kubelet gets when ``call`` (``allocation``, ``pre-start``, ...)
    of ``resource`` fails with ``error``."""
    if isinstance(error, DriverRefused):
        message = str(invalid(call, resource, error.reason))
    elif isinstance(error, DriverCallError):
        message = f'{call} for "{resource}" failed: {error}'
    else:
        message = str(error)
    return status_code(error), message
