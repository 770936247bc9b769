"""multidp.serving.wire.add_to_server: every RPC of the v1beta1 descriptor has a handler."""

from __future__ import annotations

import grpc
import pytest

from multidp.api import pb
from multidp.serving.service import DevicePluginService
from multidp.serving.sockets import socket_name
from multidp.serving.wire import add_to_server

WIDGET = "example.com/widget"
RPCS = [m for m in pb.DESCRIPTOR.services_by_name["DevicePlugin"].methods]


def test_the_service_has_a_method_for_every_rpc_of_the_descriptor():
    missing = [m.name for m in RPCS if not callable(getattr(DevicePluginService, m.name, None))]
    assert missing == []


def test_a_servicer_without_a_method_for_an_rpc_is_refused_at_registration():
    class Partial:
        def refuse_undecodable(self, method, error, context):
            raise AssertionError("not called")

        def GetDevicePluginOptions(self, request, context):
            return pb.DevicePluginOptions()

    with pytest.raises(AttributeError, match="ListAndWatch"):
        add_to_server(Partial(), server=None)  # fails before the server is touched


@pytest.mark.parametrize("method", RPCS, ids=lambda m: m.name)
def test_every_rpc_is_answered_over_the_socket_never_unimplemented(kubelet, multidp_host, sample, method):
    multidp_host({"sample": sample}, drivers={"sample": {"preStart": True}})
    kubelet.wait_registered(WIDGET)
    channel = grpc.insecure_channel(f"unix:{kubelet.directory / socket_name('sample', WIDGET)}")
    path = f"/{RPCS[0].containing_service.full_name}/{method.name}"
    # An empty request: valid for the no-argument RPCs, refused by the error contract for the others.
    call = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
    try:
        answer = call(b"", timeout=2)
        if method.server_streaming:
            next(iter(answer))
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    finally:
        channel.close()
    expected = grpc.StatusCode.INVALID_ARGUMENT if method.input_type.fields else grpc.StatusCode.OK
    assert code == expected, f"{method.name}: {code}"
