"""The driver API reference (docs/reference.md), written from the docstrings of what is exported.

``python -m multidp.testing.reference > docs/reference.md`` rewrites it; a test fails when the
file and the code disagree, or when an exported class, function or public method has no
docstring. Covered: ``multidp`` (what a driver imports), ``multidp.testing`` (what its tests
import) and the pytest fixtures multidp's plugin provides.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

HEADER = """# Driver API reference

Written by `python -m multidp.testing.reference` from the docstrings; do not edit by hand
(`tests/test_reference.py` fails when this file and the code disagree). The guide is
[writing-a-driver.md](writing-a-driver.md).
"""


def _doc(obj: Any) -> str:
    """The docstring written for ``obj``: not the ``Name(field, ...)`` one @dataclass makes up."""
    doc = getattr(obj, "__doc__", None)
    if not doc or (dataclasses.is_dataclass(obj) and doc.startswith(f"{getattr(obj, '__name__', '')}(")):
        return ""
    return inspect.cleandoc(doc)


def _member_doc(cls: type, name: str) -> str:
    """A member's docstring; an override without one has its base class's (as ``help()`` shows)."""
    return inspect.getdoc(getattr(cls, name)) or ""


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, member in cls.__dict__.items():
        # Capitalised members are gRPC handlers (the stand-in's Register): the wire's, not the kit's.
        if name.startswith("_") or name[:1].isupper() or isinstance(cls, enum.EnumMeta):
            continue
        if isinstance(member, (property, staticmethod, classmethod)) or inspect.isfunction(member):
            yield name, member


# Exported for type annotations only: their members are the host's own and may change.
SHALLOW = {"Host": "Exported for annotations (what ``running_host`` and ``multidp_host`` return); its members "
                   "are the host's and may change: use :func:`simulation_of` and the stand-in's view instead."}


def describe(name: str, obj: Any) -> tuple[list[str], list[str]]:
    """(markdown lines, what lacks a docstring) for one exported name."""
    lines: list[str] = []
    missing: list[str] = []
    if name in SHALLOW:
        lines += [f"### `{name}`", "", SHALLOW[name], ""]
    elif inspect.isclass(obj):
        lines.append(f"### `{name}{_signature(obj) if not issubclass(obj, enum.Enum) else ''}`")
        lines += ["", _doc(obj) or "", ""]
        if not _doc(obj) or obj.__doc__ == (obj.__mro__[1].__doc__ if len(obj.__mro__) > 1 else None):
            missing.append(name)
        if issubclass(obj, enum.Enum):
            lines += [f"Members: {', '.join(f'`{m.name}` ({m.value!r})' for m in obj)}.", ""]
        for member_name, member in _members(obj):
            kind = "property" if isinstance(member, property) else "method"
            target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            signature = "" if kind == "property" else _signature(target).replace("(self, ", "(").replace("(self)", "()")
            text = _member_doc(obj, member_name)
            if not text:
                missing.append(f"{name}.{member_name}")
            lines += [f"- `{member_name}{signature}`{' (property)' if kind == 'property' else ''}: "
                      + (text.replace("\n\n", " ").replace("\n", " ") or "(undocumented)"), ""]
    elif inspect.ismodule(obj):  # the v1beta1 messages and stubs: named, never shown by file path
        lines += [f"### `{name}`", "", f"The module `{obj.__name__}` (generated protobuf code).", ""]
    elif type(obj).__module__ in ("typing", "types", "collections.abc"):
        lines += [f"### `{name}`", "", f"A type: `{obj!r}`.", ""]
    elif callable(obj):
        lines += [f"### `{name}{_signature(obj)}`", "", _doc(obj) or "(undocumented)", ""]
        if not _doc(obj):
            missing.append(name)
    else:
        value = repr(obj)
        shown = value if len(value) <= 100 else value[:97] + "..."
        lines += [f"### `{name}`", "", f"A constant: `{shown}`.", ""]
    return lines, missing


def section(title: str, module: ModuleType, intro: str) -> tuple[list[str], list[str]]:
    lines = [f"## {title}", "", intro, ""]
    missing: list[str] = []
    for name in sorted(module.__all__, key=str.lower):
        text, lacks = describe(name, getattr(module, name))
        lines += text
        missing += lacks
    return lines, missing


def render() -> tuple[str, list[str]]:
    """The reference's text, and the exported names (or members) that have no docstring."""
    import multidp
    import multidp.testing
    import multidp.testing.plugin as fixtures

    lines = [HEADER, ""]
    missing: list[str] = []
    for title, module, intro in (
        ("`multidp`: what a driver imports", multidp, _doc(multidp).split("\n\n")[0]),
        ("`multidp.testing`: what a driver's tests import", multidp.testing, _doc(multidp.testing).split("\n\n")[0]),
    ):
        text, lacks = section(title, module, intro)
        lines += text
        missing += lacks
    lines += ["## pytest fixtures", "", _doc(fixtures), ""]
    for name in ("socket_dir", "kubelet", "multidp_host"):
        fixture = getattr(fixtures, name)
        wrapped = getattr(fixture, "__wrapped__", fixture)
        doc = _doc(wrapped)
        if not doc:
            missing.append(f"fixture {name}")
        lines += [f"### `{name}`", "", doc or "(undocumented)", ""]
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n", missing


if __name__ == "__main__":
    text, missing = render()
    sys.stdout.write(text)
    if missing:
        sys.stderr.write(f"no docstring: {', '.join(missing)}\n")
