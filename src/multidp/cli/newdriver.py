"""``multidp new-driver NAME``: a driver package to start from, whose tests pass as written.

The package has an entry point, a config type, sysfs discovery with health,
device-node answers, a simulation for ``--simulate`` and the demo, and tests
that create the driver with multidp's own code and serve it over real sockets.
Its templates live in ``scaffold/`` beside this module.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from multidp import __version__
from multidp.cli.exits import UsageError
from multidp.config.settings import DEFAULTS
from multidp.names import resource_name_problem

NAME = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")  # an entry-point, label and Python-package friendly name

# template -> where it goes in the package ({module} and {tests} filled in)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{module}/__init__.py",
    "plugin.py.tmpl": "src/{module}/plugin.py",
    "driver.py.tmpl": "src/{module}/driver.py",
    "simulation.py.tmpl": "src/{module}/simulation.py",
    "test_driver.py.tmpl": "tests/test_{tests}.py",
}


def new_driver(name: str, parent: Path, domain: str = "example.com") -> Path:
    """Write the package ``multidp-<name>`` under ``parent``; return its folder."""
    if not NAME.fullmatch(name) or "--" in name:
        raise UsageError(f"driver name {name!r}: use 2-40 lowercase letters, digits and single '-', starting with "
                         "a letter and ending with a letter or digit (it becomes the entry point, the node label "
                         "multidp.io/<name> and a Python package)")
    if name == DEFAULTS:
        raise UsageError(f"driver name {name!r} is taken: drivers.{DEFAULTS} holds every driver's defaults")
    resource = f"{domain}/{name}"
    problem = resource_name_problem(resource)
    if problem:
        raise UsageError(f"--domain {domain!r}: the resource name {resource!r} {problem}")
    target = parent / f"multidp-{name}"
    if target.exists():
        raise UsageError(f"{target} exists already; choose another --dir or remove it")
    underscored = name.replace("-", "_")
    values = {
        "name": name,
        "module": f"multidp_{underscored}",
        "Class": "".join(part.capitalize() for part in name.split("-")),
        "NAME": underscored.upper(),
        "resource": resource,
        "host_version": __version__,
    }
    templates = resources.files("multidp.cli") / "scaffold"
    for template, destination in FILES.items():
        path = target / destination.format(module=values["module"], tests=underscored)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(templates.joinpath(template).read_text()).substitute(values))
    (target / "src" / values["module"] / "py.typed").touch()
    return target
