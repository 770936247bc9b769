"""``multidp new-driver``: the package it writes passes its own tests, lint and strict typing as written,
and the host runs it through a real entry point (drivers, config check, demo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multidp.testing import fake_distribution


def multidp(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "multidp", *args], capture_output=True, text=True, timeout=180,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("vendor")
    done = multidp("new-driver", "acme-npu", "--dir", str(parent), "--domain", "acme.example")
    assert done.returncode == 0, done.stderr
    return parent / "multidp-acme-npu"


def with_package(package: Path, site: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    paths = [str(package / "src"), *([str(site)] if site else []), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def test_the_package_has_what_a_driver_needs(package: Path) -> None:
    files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/multidp_acme_npu/__init__.py",
                     "src/multidp_acme_npu/driver.py", "src/multidp_acme_npu/plugin.py",
                     "src/multidp_acme_npu/py.typed", "src/multidp_acme_npu/simulation.py",
                     "tests/test_acme_npu.py"]
    pyproject = (package / "pyproject.toml").read_text()
    assert '[project.entry-points.multidp]\nacme-npu = "multidp_acme_npu.plugin"' in pyproject
    assert 'RESOURCE = "acme.example/acme-npu"' in (package / "tests" / "test_acme_npu.py").read_text()


def test_its_tests_pass_as_written(package: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package,
                          env=with_package(package), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout


def test_it_is_lint_clean_and_strictly_typed(package: Path) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    linted = subprocess.run([str(ruff), "check", "src", "tests"], cwd=package, capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout
    typed = subprocess.run([sys.executable, "-m", "mypy", "src", "tests"], cwd=package, env=with_package(package),
                           capture_output=True, text=True, timeout=300)
    assert typed.returncode == 0, typed.stdout


def test_the_host_runs_it_through_its_entry_point(package: Path, tmp_path: Path) -> None:
    fake_distribution(tmp_path, "multidp-acme-npu", {"acme-npu": "multidp_acme_npu.plugin"})
    env = with_package(package, tmp_path)
    report = json.loads(multidp("drivers", "--json", env=env).stdout)["drivers"]
    assert next(d for d in report if d["name"] == "acme-npu")["status"] == "ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text("drivers:\n  acme-npu:\n    resourceName: acme\n")
    checked = multidp("config", "check", "--config", str(bad), "--drivers", "acme-npu", env=env)
    assert checked.returncode == 2
    assert "drivers.acme-npu.resourceName: 'acme' must contain exactly one '/'" in checked.stderr
    demo = multidp("demo", "--drivers", "acme-npu", env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "env ACME_NPU_VISIBLE_DEVICES=acme-npu" in demo.stdout
    assert "acme-npu0 reports an uncorrectable memory error" in demo.stdout
    assert "sockets left behind: none" in demo.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["Acme"], "driver name 'Acme': use 2-40 lowercase letters"),
    (["a--b"], "driver name 'a--b'"),
    (["default"], "driver name 'default' is taken"),
    (["npu", "--domain", "Acme.Example"], "--domain 'Acme.Example'"),
])
def test_bad_names_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    done = multidp("new-driver", *args, "--dir", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr
    assert not list(tmp_path.iterdir())


def test_an_existing_folder_is_never_overwritten(package: Path) -> None:
    done = multidp("new-driver", "acme-npu", "--dir", str(package.parent))
    assert done.returncode == 2 and "exists already" in done.stderr
