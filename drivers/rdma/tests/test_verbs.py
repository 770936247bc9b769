"""pyverbs as an optional source: used when it answers, sysfs whenever it fails, never required."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest
from rdma_helpers import LOGGER

from multidp_rdma.bindings import VerbsReader
from multidp_rdma.discovery import discover
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.health import judge, read_port_states
from multidp_rdma.sysfs import ProblemLog, SysfsRoot

log = logging.getLogger(LOGGER)


class _PortAttr:
    def __init__(self, state: int, phys_state: int) -> None:
        self.state, self.phys_state = state, phys_state


class _FakeDeviceModule:
    """Stands in for pyverbs.device: ``ports`` maps device name → (state, phys); missing names raise."""

    def __init__(self, ports: dict[str, tuple[int, int]]) -> None:
        self.ports = ports
        self.opened: list[str] = []
        module = self

        class Context:
            def __init__(self, name: str) -> None:
                if name not in module.ports:
                    raise RuntimeError(f"Failed to open device {name}")  # PyverbsRDMAError in real life
                module.opened.append(name)
                self.name = name

            def query_port(self, number: int) -> _PortAttr:
                return _PortAttr(*module.ports[self.name])

            def query_device(self) -> Any:
                return types.SimpleNamespace(fw_version="16.35.9999")

            def close(self) -> None:
                pass

        self.Context = Context


def _device(fake: FakeRdmaNode, name: str) -> Any:
    found = discover(SysfsRoot(fake.sys), ProblemLog(log))
    return next(d for d in found.devices if d.name == name)


def test_verbs_answer_is_used_over_sysfs(standard: FakeRdmaNode) -> None:
    reader = VerbsReader(_FakeDeviceModule({"mlx5_0": (1, 3)}), log)  # verbs says DOWN; sysfs says ACTIVE
    mlx5_0 = _device(standard, "mlx5_0")
    ports = read_port_states(mlx5_0, ProblemLog(log), reader.ports)
    assert not judge(mlx5_0, ports, False, True, "").healthy
    assert reader.attributes(mlx5_0) == {"fw": "16.35.9999"}


def test_verbs_failure_falls_back_to_sysfs_and_is_not_retried_until_reset(
    standard: FakeRdmaNode, caplog: pytest.LogCaptureFixture
) -> None:
    module = _FakeDeviceModule({})
    reader = VerbsReader(module, log)
    mlx5_1 = _device(standard, "mlx5_1")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):
            ports = read_port_states(mlx5_1, ProblemLog(log), reader.ports)
            assert judge(mlx5_1, ports, False, True, "").healthy  # sysfs: ACTIVE/LinkUp
    assert [r.getMessage() for r in caplog.records if "pyverbs" in r.getMessage()] == [
        "pyverbs cannot read RDMA device mlx5_1 (RuntimeError: Failed to open device mlx5_1); using sysfs for it"]
    module.ports["mlx5_1"] = (4, 5)
    reader.reset()
    assert reader.ports(mlx5_1) == {1: (4, 5)}


def test_missing_pyverbs_means_no_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyverbs", None)  # import fails as when it is not installed
    assert VerbsReader.load(log) is None


def test_verbs_are_not_used_on_a_fake_tree(standard: FakeRdmaNode, make_driver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pyverbs = types.ModuleType("pyverbs")
    fake_pyverbs.device = _FakeDeviceModule({})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyverbs", fake_pyverbs)
    monkeypatch.setitem(sys.modules, "pyverbs.device", fake_pyverbs.device)
    driver = make_driver(standard)
    driver.scan()
    assert driver._verbs is None and fake_pyverbs.device.opened == []
