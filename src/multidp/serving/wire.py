"""The v1beta1 wire, where multidp does more than the generated code.

- :class:`ListEncoder`: ListAndWatch messages built from cached per-device
  encodings, so a change in a 10,000-device resource re-encodes one device;
  and the kubelet's 4 MiB limit on them, which ResourceState enforces.
- :func:`add_to_server`: the DevicePlugin service registered from its
  descriptor, like the generated code does, except that requests protobuf
  cannot parse are refused through the normal path (grpcio keeps the state of
  a call whose deserializer raises), and ListAndWatch's pre-encoded bytes go
  out as they are. The servicer's methods are coroutines (a grpc.aio server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from multidp.api import pb
from multidp.errors import InvalidRequest, MultidpError
from multidp.model import Device, Health

RAW_RESPONSES = frozenset({"ListAndWatch"})  # RPCs whose behaviour yields serialized bytes


class UndecodableRequest(InvalidRequest):
    """A request protobuf could not parse (handed to the handler instead of failing in gRPC)."""


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag byte, varint length, payload."""
    return bytes((tag,)) + _varint(len(payload)) + payload


_HEALTH = {health: _field(0x12, health.value.encode()) for health in Health}  # Device.health = 2
_NODES = {0: b"\x0a\x00", **{n: _field(0x0A, b"\x08" + bytes((n,))) for n in range(1, 64)}}  # common NUMA ids

# The kubelet receives at most 4 MiB per message (gRPC's default), so a bigger list never arrives:
# its stream fails and the resource reads 0 devices.
KUBELET_MESSAGE_LIMIT = 4 * 1024 * 1024
# An entry is at least its ID plus 13 bytes (two tags and lengths, and health "Healthy" as 9 bytes),
# which bounds a list's size from below before anything is built.
ENTRY_OVERHEAD_MIN = 13
# How much an entry can grow when its device turns Unhealthy: 2 bytes of text, plus 1 when its
# length no longer fits one varint byte. A failed scan marks every device Unhealthy, and that list
# must fit too.
UNHEALTHY_GROWTH_MAX = 3


class Listing(Protocol):
    """What :class:`ListEncoder` reads of a snapshot (:class:`multidp.serving.resource.Snapshot`)."""

    @property
    def ids(self) -> tuple[str, ...]: ...

    @property
    def by_id(self) -> Mapping[str, Device]: ...


class ListEncoder:
    """Serialized ListAndWatchResponse bytes for a snapshot, reusing each device's encoding.

    The first list of a 10,000-device resource and every list after a change
    must reach the kubelet within the 50 ms bar, which building 10,000
    protobuf messages does not meet (about 8 µs each). The v1beta1 layout of
    these messages is fixed (the v1beta1 .proto in multidp/api): ListAndWatchResponse.devices = 1;
    Device.ID = 1, health = 2, topology = 3; TopologyInfo.nodes = 1; NUMANode.ID = 1
    (a varint, left out when 0 as proto3 does). Each device's entry is encoded
    once and reused while its ID, health and NUMA nodes stay the same; a test
    checks the bytes against protobuf's own parser. ResourceState encodes each
    new snapshot here, so a list that does not encode never reaches a stream.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Health, tuple[int, ...]], bytes] = {}

    @staticmethod
    def _entry(device_id: str, health: Health, numa_nodes: tuple[int, ...]) -> bytes:
        encoded = device_id.encode()
        body = b"\x0a" + _varint(len(encoded)) + encoded + _HEALTH[health]
        if numa_nodes:
            body += _field(0x1A, b"".join(_NODES.get(n) or _field(0x0A, b"\x08" + _varint(n)) for n in numa_nodes))
        return b"\x0a" + _varint(len(body)) + body

    def encode(self, snapshot: Listing) -> bytes:
        previous, current = self._entries, {}
        parts = []
        by_id = snapshot.by_id
        for device_id in snapshot.ids:
            device = by_id[device_id]
            key = (device_id, device.health, device.numa_nodes)
            entry = previous.get(key) or self._entry(*key)
            current[key] = entry
            parts.append(entry)
        self._entries = current
        return b"".join(parts)


def _lenient(message: type[Message]) -> Callable[[bytes], Message | UndecodableRequest]:
    """A request deserializer that never fails.

    When a deserializer raises, grpcio's sync server answers INTERNAL but keeps
    the call's state for ever (about 20 kB a request, measured with grpcio
    1.85): a client sending garbage would grow the host without bound. The
    handler answers INVALID_ARGUMENT instead, through the normal path.
    """
    name = message.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | UndecodableRequest:
        try:
            return message.FromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            return UndecodableRequest(f"the request is not a valid {name}: {exc}")

    return parse


class Servicer(Protocol):
    """What :func:`add_to_server` needs besides one method per RPC, named as the RPC."""

    async def refuse_undecodable(self, method: str, error: MultidpError, context: Context) -> NoReturn: ...


Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Unary = Callable[[Any, Context], Awaitable[Any]]
Streaming = Callable[[Any, Context], AsyncIterator[Any]]


def _checked(servicer: Servicer, method: str, behaviour: Unary) -> Unary:
    """Hand an undecodable request to the servicer's refusal, any other to ``behaviour``."""

    async def handler(request: Any, context: Context) -> Any:
        if isinstance(request, UndecodableRequest):
            await servicer.refuse_undecodable(method, request, context)
        return await behaviour(request, context)

    return handler


def _checked_stream(servicer: Servicer, method: str, behaviour: Streaming) -> Streaming:
    """:func:`_checked` for a server-streaming RPC."""

    async def handler(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, UndecodableRequest):
            await servicer.refuse_undecodable(method, request, context)
        async for message in behaviour(request, context):
            yield message

    return handler


def add_to_server(servicer: Servicer, server: grpc.aio.Server, service: str = "DevicePlugin",
                  raw_responses: frozenset[str] = RAW_RESPONSES) -> None:
    """Register ``servicer`` for every RPC of the v1beta1 ``service``, as the descriptor lists them.

    As the generated code does, except: requests that do not parse are refused
    through ``servicer.refuse_undecodable`` (see :func:`_lenient`), and the RPCs
    in ``raw_responses`` return bytes already serialized (ListAndWatch's
    :class:`ListEncoder` output). An RPC the servicer has no method for is an
    AttributeError here, so a new RPC can never go unanswered unnoticed.
    """
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in descriptor.methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: client streaming is not in v1beta1")
        behaviour = getattr(servicer, method.name)
        request = GetMessageClass(method.input_type)
        serialize = None if method.name in raw_responses else GetMessageClass(method.output_type).SerializeToString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _checked_stream(servicer, method.name, behaviour), _lenient(request), serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _checked(servicer, method.name, behaviour), _lenient(request), serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)
