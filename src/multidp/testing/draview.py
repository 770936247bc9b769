"""What the DRA kubelet stand-in (:mod:`multidp.testing.drakubelet`) records: plugins, answers, health."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc


class DraCallFailed(Exception):
    """A DRA call failed as a whole: ``code`` is its gRPC status (None: no call was made)."""

    def __init__(self, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"{code.name if code is not None else 'not called'}: {details}")
        self.code, self.details = code, details


@dataclass
class PreparedDevice:
    """One device of a NodePrepareResources answer."""

    request_names: list[str]
    pool: str
    device: str
    cdi_ids: list[str]
    share_id: str = ""

    @classmethod
    def from_wire(cls, device: Any) -> PreparedDevice:
        """One ``Device`` of a NodePrepareResourceResponse, as plain data."""
        return cls(list(device.request_names), device.pool_name, device.device_name, list(device.cdi_device_ids),
                   device.share_id)


@dataclass
class PrepareAnswer:
    """The answer for one claim: its devices, or an error."""

    devices: list[PreparedDevice]
    error: str = ""


@dataclass(frozen=True)
class HealthEntry:
    """One device's health as the stream last said: "Healthy", "Unhealthy" or "Unknown"."""

    health: str
    message: str
    last_updated: int  # unix seconds
    timeout_s: int  # health_check_timeout_seconds (0: the kubelet's default)


@dataclass
class DraPluginView:
    """A registered DRA plugin: its name, DRA endpoint, registration socket and the services picked."""

    name: str
    endpoint: str
    socket: Path
    dra_service: str
    health_service: str | None
    registered_at: float  # time.monotonic()
    channel: Any = field(repr=False, compare=False, default=None)

    def close(self) -> None:
        """Close the connection to the plugin (its calls and health stream end)."""
        if self.channel is not None:
            self.channel.close()
