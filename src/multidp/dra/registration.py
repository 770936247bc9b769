"""The kubelet's plugin watcher side of a DRA driver: GetInfo and NotifyRegistrationStatus.

The kubelet finds ``<registry>/<DRA driver name>-reg.sock``, asks GetInfo (type ``DRAPlugin``, the
driver name, the DRA socket, and every service name this host serves, newest first), picks the
versions it supports, and tells the plugin whether registration worked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from multidp.api import pluginregistration_v1_pb2 as reg
from multidp.api.services import DRA_PLUGIN_TYPE, DRA_SERVICES, HEALTH_SERVICES, REGISTRATION_SERVICE

log = logging.getLogger(__name__)


class RegistrationService:
    """Answers the kubelet's plugin watcher for one DRA driver."""

    def __init__(self, dra_name: str, endpoint: Path, on_registered: Callable[[], None] = lambda: None) -> None:
        self.dra_name = dra_name
        self.endpoint = endpoint
        self.on_registered = on_registered  # a kubelet that (re)starts deleted the node's ResourceSlices
        self.registered: bool | None = None  # what the kubelet said last (None: nothing yet)
        self.error = ""

    async def get_info(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return reg.PluginInfo(type=DRA_PLUGIN_TYPE, name=self.dra_name, endpoint=str(self.endpoint),
                              supported_versions=[*DRA_SERVICES, *HEALTH_SERVICES])

    async def notify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.registered, self.error = request.plugin_registered, request.error
        if request.plugin_registered:
            log.info("DRA driver %s: registered with the kubelet", self.dra_name)
            self.on_registered()
        else:
            log.error("DRA driver %s: the kubelet refused its registration: %s", self.dra_name,
                      request.error or "no reason given")
        return reg.RegistrationStatusResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(REGISTRATION_SERVICE, {
            "GetInfo": grpc.unary_unary_rpc_method_handler(
                self.get_info, request_deserializer=reg.InfoRequest.FromString,
                response_serializer=reg.PluginInfo.SerializeToString),
            "NotifyRegistrationStatus": grpc.unary_unary_rpc_method_handler(
                self.notify, request_deserializer=reg.RegistrationStatus.FromString,
                response_serializer=reg.RegistrationStatusResponse.SerializeToString),
        })
