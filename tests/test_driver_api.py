"""The driver API is closed and versioned.

- Drivers import only ``multidp`` (their tests, and tools beside them, also
  ``multidp.testing``): checked here over every Python file under drivers/.
- ``multidp`` re-exports everything it documents, and what it re-exports is its
  own driver API (no host module leaks in).
- A plugin declares ``MULTIDP_DRIVER_API``; one written for another major or a
  newer minor version is refused by name in ``multidp drivers``, never a traceback.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import multidp
from multidp.plugins.registry import PluginRegistry, api_version_problem
from multidp.testing import fake_distribution

REPO = Path(__file__).resolve().parents[1]
DRIVER_FILES = sorted(p for p in (REPO / "drivers").rglob("*.py") if "build" not in p.parts)


def multidp_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of multidp or a module under it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "multidp" or n.startswith("multidp.")]
    return found


def test_there_are_driver_files_to_check():
    assert len(DRIVER_FILES) > 50
    assert any("/src/" in str(p) for p in DRIVER_FILES) and any("/tests/" in str(p) for p in DRIVER_FILES)


def test_drivers_import_only_the_public_api():
    offences = []
    for path in DRIVER_FILES:
        relative = path.relative_to(REPO)
        allowed = {"multidp"} if relative.parts[2] == "src" else {"multidp", "multidp.testing"}
        offences += [f"{relative}:{line}: imports {module} (allowed: {', '.join(sorted(allowed))})"
                     for line, module in multidp_imports(path) if module not in allowed]
    assert offences == []


def test_the_check_sees_an_offending_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import multidp\nfrom multidp import Device\nfrom multidp.serving import wire\n"
                      "import multidp.config.settings as s\nfrom . import local\n")
    assert multidp_imports(sample) == [(1, "multidp"), (2, "multidp"), (3, "multidp.serving"),
                                       (4, "multidp.config.settings")]


def test_everything_exported_is_there_and_belongs_to_the_driver_api():
    host_layers = ("multidp.cli", "multidp.testing", "multidp.observe", "multidp.host", "multidp.serving",
                   "multidp.plugins", "multidp.config", "multidp.api")
    for name in multidp.__all__:
        value = getattr(multidp, name)
        module = getattr(value, "__module__", "multidp") or "multidp"
        inside = [layer for layer in host_layers if module == layer or module.startswith(layer + ".")]
        assert not inside, f"multidp.{name} comes from the host's {module}"


@pytest.mark.parametrize(("declared", "problem"), [
    (None, None),
    ("1.0", None),
    (multidp.DRIVER_API_VERSION, None),
    ("2.0", "written for multidp driver API 2.0"),
    ("1.99", "written for multidp driver API 1.99"),
    ("0.9", "written for multidp driver API 0.9"),
    ("one", "is not a driver API version"),
    (1.0, "is not a driver API version"),
])
def test_declared_api_versions(declared, problem):
    plugin = type("Plugin", (), {} if declared is None else {"MULTIDP_DRIVER_API": declared})()
    found = api_version_problem(plugin)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and multidp.DRIVER_API_VERSION in found


def test_a_newer_plugin_is_refused_before_its_hooks_are_looked_at(tmp_path, monkeypatch):
    # A hook this host does not know would fail pluggy's check_pending: the version says why first.
    (tmp_path / "future_driver.py").write_text(textwrap.dedent("""
        from multidp import hookimpl

        MULTIDP_DRIVER_API = "1.99"

        @hookimpl
        def multidp_create_driver(context):
            raise AssertionError("never called")

        @hookimpl
        def multidp_dra_slices(context):
            return []
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_distribution(tmp_path, "multidp-future", {"future": "future_driver"})
    info = PluginRegistry().load(["future"])[0]
    assert not info.loaded
    assert info.error.startswith("cannot load: it was written for multidp driver API 1.99")
    assert "install a multidp that offers it" in info.error


def test_multidp_drivers_reports_the_version_problem(tmp_path):
    (tmp_path / "future_driver.py").write_text('from multidp import hookimpl\nMULTIDP_DRIVER_API = "2.0"\n')
    fake_distribution(tmp_path, "multidp-future", {"future": "future_driver"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-m", "multidp", "drivers", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = {d["name"]: d for d in json.loads(result.stdout)["drivers"]}
    assert report["future"]["status"] == "failed"
    assert "written for multidp driver API 2.0" in report["future"]["reason"]
    assert f"offers {multidp.DRIVER_API_VERSION}" in report["future"]["reason"]


def test_the_installed_drivers_declare_the_api_they_are_written_for():
    registry = PluginRegistry()
    for name in ("nvidia", "rdma", "fpga"):
        info = registry.load([name])[0]
        assert info.loaded, info.error
        module = importlib.import_module(info.entry_point)
        assert module.MULTIDP_DRIVER_API == multidp.DRIVER_API_VERSION
