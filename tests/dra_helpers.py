"""The DRA tests' shared set-up: a short folder, a fake API server with the claims, the DRA kubelet
stand-in, and a way to start a host serving the sample driver through DRA."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from multidp.dra.names import device_name
from multidp.testing import FakeApiServer, Host, SamplePlugin, running_host, short_socket_dir
from multidp.testing.drakubelet import DraKubelet

DRA_NAME = "sample.multidp.io"
NODE = "node-a"
WIDGET = "example.com/widget"
POOL = f"{NODE}/{WIDGET}"


@dataclass
class Env:
    root: Path
    api: FakeApiServer
    kubelet: DraKubelet
    plugin: SamplePlugin
    start: Callable[..., AbstractContextManager[Host]]

    @property
    def cdi(self) -> Path:
        return self.root / "dp" / "cdi"

    @property
    def checkpoint(self) -> Path:
        return self.root / "pl" / DRA_NAME / "checkpoint.json"

    def claim(self, name: str, *devices: str, request: str = "widgets") -> tuple[str, str, str]:
        results = [{"request": request, "driver": DRA_NAME, "pool": POOL, "device": device_name(d)} for d in devices]
        obj = self.api.claims.add("ns", name, results)
        return ("ns", obj["metadata"]["uid"], name)

    def reboot(self) -> None:
        (self.root / "boot_id").write_text("boot-2\n")
        for spec in self.cdi.glob("*.json"):
            spec.unlink()  # /var/run/cdi is tmpfs


@pytest.fixture
def env() -> Iterator[Env]:
    root = short_socket_dir()
    try:
        (root / "boot_id").write_text("boot-1\n")
        api = FakeApiServer(NODE)
        kubeconfig = api.kubeconfig(root)
        kubelet = DraKubelet(root / "reg")
        kubelet.start()
        plugin = SamplePlugin()

        def start(drivers: dict[str, Any] | None = None, driver_plugin: Any = None,
                  **overrides: Any) -> AbstractContextManager[Host]:
            settings = {"dra_plugins_dir": root / "pl", "dra_registry_dir": root / "reg",
                        "boot_id_file": root / "boot_id", "pod_resources_socket": root / "podres.sock", **overrides}
            return running_host(root / "dp", {"sample": driver_plugin or plugin},
                                drivers=drivers or {"sample": {"frontend": "dra"}},
                                environ={"KUBECONFIG": str(kubeconfig), "NODE_NAME": NODE}, **settings)

        try:
            yield Env(root, api, kubelet, plugin, start)
        finally:
            kubelet.stop()
            api.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def allocations(plugin: SamplePlugin) -> list[Any]:
    return [request for driver in plugin.drivers for call, request in driver.calls if call == "allocate"]
