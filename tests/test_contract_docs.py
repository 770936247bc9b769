"""The committed API stubs and the driver-author docs stay in step with the code."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from multidp import hookspecs
from multidp.driver import Driver

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "src" / "multidp" / "api"
DRIVER_DOC = ROOT / "docs" / "writing-a-driver.md"


def test_committed_stubs_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a development dependency")
    from multidp.api.generate import OUTPUTS, generate

    for fresh in generate(tmp_path):
        committed = API / fresh.name
        assert fresh.name in OUTPUTS
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is stale: run `python -m multidp.api.generate`")


def hook_names() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("multidp_")]


def test_every_hook_is_documented_for_driver_authors():
    text = DRIVER_DOC.read_text()
    assert hook_names(), "no hooks found"
    missing = [name for name in hook_names() if f"### `{name}(" not in text]
    assert missing == [], f"hooks without a section in {DRIVER_DOC.name}: {missing}"


def test_every_hook_has_a_docstring():
    assert all(inspect.getdoc(getattr(hookspecs, name)) for name in hook_names())


def test_every_driver_method_is_documented():
    text = DRIVER_DOC.read_text()
    methods = [n for n, v in vars(Driver).items() if callable(v) and not n.startswith("_")]
    missing = [n for n in methods if f"`{n}(" not in text]
    assert missing == [], f"Driver methods missing from {DRIVER_DOC.name}: {missing}"
