"""Reading an operator's config files safely: bounded, regular files only, strict YAML (part of the driver API).

The host reads its own config file with these, and drivers read their incumbents' files
(NVIDIA's config file, Mellanox's and SR-IOV's JSON) with them, so every file an operator
points multidp at gets the same limits and the same one-line errors: a FIFO, a device or
``/dev/zero`` is refused without blocking, a file over 1 MiB (a ConfigMap's limit) is refused
unread, YAML nested deeper than 100 levels, a key given twice, ``.inf``/``.nan`` and alias
bombs are refused, and any failure is a :class:`multidp.ConfigError` naming the file.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multidp.errors import ConfigError

if TYPE_CHECKING:
    import yaml

MAX_CONFIG_BYTES = 1 << 20  # a ConfigMap holds at most 1 MiB, a host config a few kB (PyYAML: seconds per MiB)
MAX_NESTING = 100  # far deeper than any config; PyYAML's composer recurses and hits Python's limit near 500
MAX_VALUES = 1_000_000  # more than 1 MiB can spell out; only aliases ("billion laughs") expand beyond it


def read_small_file(path: Path | str, source: str | None = None, key: str = "") -> bytes:
    """The bytes of a file of at most 1 MiB; otherwise a one-line ConfigError for ``key`` (the config key
    that names the file, e.g. ``drivers.acme.idsFile``) with ``source`` (default: ``path``) as its file.

    A FIFO, a device or a directory is refused before it is read (or even opened).
    """
    source = source or str(path)
    try:
        _refuse_unless_regular(os.stat(path).st_mode, source)
        # O_NONBLOCK: should a FIFO be swapped in after the stat, opening it cannot block; fstat refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            _refuse_unless_regular(os.fstat(fd).st_mode, source)
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read config file: {exc.strerror or exc}", source) from exc
    except ConfigError as exc:
        raise ConfigError(key, exc.message, exc.source) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(key, f"cannot read config file: over the limit of {MAX_CONFIG_BYTES >> 20} MiB", source)
    return data


def _refuse_unless_regular(mode: int, source: str) -> None:
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device"}.get(
            stat.S_IFMT(mode), "a block device or a socket")
        raise ConfigError("", f"cannot read config file: not a regular file ({kind})", source)


def parse_yaml(data: str | bytes, key: str = "", source: str | None = None) -> Any:
    """YAML read strictly: any failure is a one-line ConfigError for ``key`` (the config key naming
    the file, or '' for multidp's own config file) with ``source`` as its file.

    Nesting is bounded, a key given twice in one mapping is refused, and so are non-finite
    numbers and aliases that expand to a huge tree."""
    import yaml  # only when there is YAML to read

    try:
        value = yaml.load(data, Loader=_strict_loader())  # a SafeLoader
    except _Refused as exc:
        raise ConfigError(key, str(exc), source) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(key, f"not valid YAML: {_one_line(exc)}", source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"not valid YAML: {' '.join(str(exc).split())}", source) from None
    except RecursionError:  # MAX_NESTING should come first; never let it take the daemon down
        raise ConfigError(key, "not valid YAML: nested too deeply to read", source) from None
    _check_values(value, key, source)
    return value


class _Refused(Exception):  # valid YAML that multidp refuses: nested too deep, or a key given twice
    pass


def _one_line(exc: yaml.MarkedYAMLError) -> str:
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"

    context = f" ({exc.context} at {at(exc.context_mark)})" if exc.context else ""
    return f"{exc.problem} at {at(exc.problem_mark)}{context}"


@functools.cache
def _strict_loader() -> type[yaml.SafeLoader]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that bounds nesting and refuses a key given twice (SafeLoader keeps the last)."""

        depth = 0

        def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
            if self.depth >= MAX_NESTING:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_NESTING} levels at line {line}")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then a key of its own is an override, not a duplicate
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class says so
                if first is not None:
                    raise _Refused(f"key {key!r} is given twice in one mapping, on line {first} and line {line}")
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader


def _check_values(value: Any, key: str, source: str | None) -> None:
    """Refuse non-finite numbers, and aliases that expand to a huge or too deep tree (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, key, 0)]
    count = 0
    while stack:
        item, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(key, f"holds more than {MAX_VALUES:,} values once its YAML aliases are expanded",
                              source)
        if depth > MAX_NESTING:
            raise ConfigError(where, f"is nested deeper than {MAX_NESTING} levels (through YAML aliases)", source)
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(where, f"must be a finite number, not {item}", source)
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
