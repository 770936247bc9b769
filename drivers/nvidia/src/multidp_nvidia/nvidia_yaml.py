"""NVIDIA's config file as YAML, with NVIDIA's leniency for a key given twice.

NVIDIA's plugin (v0.20.0) reads its file with ``sigs.k8s.io/yaml``'s non-strict ``Unmarshal``
(``vendor/sigs.k8s.io/yaml/yaml.go``), whose go-yaml v2 keeps the last of a key given twice in one
mapping. multidp's own config files stay strict (:func:`multidp.parse_yaml` refuses a duplicate);
NVIDIA's file gets NVIDIA's answer, the last value, and one warning per duplicated key.

When :func:`multidp.parse_yaml` refuses the file, its node tree is composed again; if it has
duplicates they are dropped, and the tree is written back out and read by :func:`multidp.parse_yaml`,
so the host's limits (nesting, non-finite numbers, alias bombs) still apply. Any other refusal stands.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml
from multidp import ConfigError, parse_yaml

_MAX_NESTING = 100  # as the host's reader: deeper files go to parse_yaml, which refuses them
_MERGE = "tag:yaml.org,2002:merge"


class _Key(NamedTuple):
    kind: str
    value: Any

    def __str__(self) -> str:
        return str(self.value)


class _TooDeep(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """Composes nodes only (no objects), with nesting bounded so no file can exhaust the stack."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.depth >= _MAX_NESTING:
            raise _TooDeep
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(data: bytes) -> yaml.Node | None:
    loader = _BoundedLoader(data)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _drop_duplicates(root: yaml.Node) -> list[str]:
    """Keep the last of each key given twice in one mapping (go-yaml v2, not strict); one warning per key."""
    constructor = yaml.SafeLoader("")
    warnings: list[str] = []
    seen: set[int] = set()  # aliases share nodes: visit each once
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(item, f"{where}[{i}]") for i, item in enumerate(node.value)]))
        if not isinstance(node, yaml.MappingNode):
            continue
        keys = [_key_of(constructor, key_node) for key_node, _ in node.value]
        last = {key: i for i, key in enumerate(keys)}
        lines: dict[Any, list[int]] = {}
        for key, (key_node, _) in zip(keys, node.value, strict=True):
            lines.setdefault(key, []).append(key_node.start_mark.line + 1)
        for key, at in lines.items():
            if len(at) > 1:
                warnings.append(f"{_join(where, key)} is given {len(at)} times in one mapping (lines "
                                f"{', '.join(map(str, at))}): NVIDIA's YAML reader keeps the last, and so does "
                                "multidp in NVIDIA's file (its own config files refuse it)")
        node.value = [pair for i, pair in enumerate(node.value) if last[keys[i]] == i]
        stack.extend(reversed([(value, _join(where, key_node.value if isinstance(key_node, yaml.ScalarNode)
                                             else "<key>")) for key_node, value in node.value]))
    return warnings


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _key_of(constructor: yaml.SafeLoader, key_node: yaml.Node) -> Any:
    """The key's value, or an object equal to nothing (merge keys, unhashable or unreadable keys)."""
    if key_node.tag == _MERGE:
        return object()  # `<<: *base` then a key of its own is an override, not a duplicate
    try:
        key = constructor.construct_object(key_node, deep=True)
        hash(key)
    except (yaml.YAMLError, TypeError):
        return object()  # parse_yaml says what is wrong with it
    return _Key(type(key).__name__, key)  # 1 and true are two keys to Go


def load_nvidia_yaml(data: bytes, source: str) -> tuple[Any, list[str]]:
    """The file's value as NVIDIA's reader sees it, and one warning per key given twice."""
    try:
        return parse_yaml(data, source=source), []
    except ConfigError:
        try:  # only a refused file is composed again: a duplicate key is the one refusal NVIDIA lacks
            root = _compose(data)
        except (yaml.YAMLError, _TooDeep, RecursionError, UnicodeDecodeError):
            root = None
        warnings = _drop_duplicates(root) if root is not None else []
        if not warnings:
            raise
    return parse_yaml(yaml.serialize(root, Dumper=yaml.SafeDumper), source=source), warnings
