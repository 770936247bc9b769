"""multidp.serving.status: the one table from failure to gRPC status, and the messages."""

from __future__ import annotations

import grpc
import pytest

from multidp import errors
from multidp.serving.status import STATUS_CODES, answer, status_code
from multidp.serving.wire import UndecodableRequest

W = "example.com/widget"


@pytest.mark.parametrize(("error", "code", "message"), [
    (errors.InvalidRequest('invalid allocation request for "example.com/widget": invalid request: unknown device: x'),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown device: x"),
    (UndecodableRequest("the request is not a valid v1beta1.AllocateRequest: Error parsing message"),
     grpc.StatusCode.INVALID_ARGUMENT, "not a valid v1beta1.AllocateRequest"),
    (errors.DriverRefused("sample", "allocate", "maximum request size is 1; found 3"),
     grpc.StatusCode.INVALID_ARGUMENT,
     'invalid allocation request for "example.com/widget": invalid request: maximum request size is 1; found 3'),
    (errors.CdiUnavailable(f'allocation for "{W}" needs CDI devices, but no CDI spec written by multidp holds x'),
     grpc.StatusCode.FAILED_PRECONDITION, "needs CDI devices"),
    (errors.DriverTimeout("sample", "allocate", "driver sample: allocate did not answer within 1 s"),
     grpc.StatusCode.DEADLINE_EXCEEDED,
     'allocation for "example.com/widget" failed: driver sample: allocate did not answer within 1 s'),
    (errors.DriverCallError("sample", "allocate", "driver sample: allocate failed: RuntimeError: boom"),
     grpc.StatusCode.INTERNAL, 'allocation for "example.com/widget" failed: driver sample: allocate failed'),
    (errors.BadDriverAnswer(f'allocation for "{W}" failed: driver sample allocate returned a dict'),
     grpc.StatusCode.INTERNAL, "returned a dict"),
])
def test_each_failure_gets_its_status_and_a_message_naming_what_failed(error, code, message):
    got_code, got_message = answer(error, "allocation", W)
    assert got_code == code
    assert message in got_message


def test_subclasses_come_before_their_bases_in_the_table():
    for index, (error_type, _) in enumerate(STATUS_CODES):
        for earlier, _ in STATUS_CODES[:index]:
            assert not issubclass(error_type, earlier), f"{error_type.__name__} is shadowed by {earlier.__name__}"


def test_an_error_the_table_does_not_know_is_unknown_not_a_crash():
    assert status_code(errors.MultidpError("a host bug")) == grpc.StatusCode.UNKNOWN


def test_timed_out_is_the_timeout_subclass():
    assert errors.DriverTimeout("d", "scan", "m").timed_out
    assert not errors.DriverCallError("d", "scan", "m").timed_out
    assert not errors.DriverRefused("d", "allocate", "why").timed_out
