"""Reading the incumbents' JSON as Go's encoding/json reads it into their structs.

Both incumbents decode with ``json.Unmarshal``: a key matches a struct field
whatever its case (``IsRdma``, ``isrdma``), a later duplicate wins, a key that
matches no field is ignored, and a value of the wrong JSON type fails the
whole decode. :func:`fields` does that for one object, with one difference:
each ignored key is returned, so the caller can warn about it by name
instead of ignoring it silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Kind = Literal["str", "bool", "int", "strs", "object", "list", "any", "info"]


class GoTypeError(ValueError):
    """A value Go's decoder would refuse (``json: cannot unmarshal ... into ...``)."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _check(key: str, kind: Kind, value: Any) -> Any:
    """The value as Go would hold it; None for JSON null (Go leaves the field at its zero value)."""
    if value is None or kind == "any":
        return value
    wrong = GoTypeError(f"{key}: a JSON {_type_name(value)} where Go's decoder needs "
                        f"{_WANTED[kind]} (the incumbent refuses this file too)")
    if kind == "str" and not isinstance(value, str):
        raise wrong
    if kind == "bool" and not isinstance(value, bool):
        raise wrong
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise wrong  # 5.0 too: Go cannot unmarshal a number with a fraction or exponent into an int
    if kind == "strs":  # []string: a null element stays "" (Go's decoder leaves a string at its zero value)
        if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
            raise wrong
        return ["" if v is None else v for v in value]
    if kind == "object" and not isinstance(value, dict):
        raise wrong
    if kind == "list" and not isinstance(value, list):
        raise wrong
    if kind == "info":  # map[string]map[string]string: null for an inner map or a string, as above
        if not isinstance(value, dict) or not all(
                isinstance(inner, dict) and all(v is None or isinstance(v, str) for v in inner.values())
                for inner in value.values() if inner is not None):
            raise wrong
    return value


_WANTED = {"str": "a string", "bool": "true or false", "int": "an integer", "strs": "a list of strings",
           "object": "an object", "list": "a list", "info": "an object of objects of strings"}


def fields(obj: Mapping[str, Any], known: Mapping[str, Kind], where: str) -> tuple[dict[str, Any], list[str]]:
    """``obj``'s values under the canonical names of ``known``, and the keys Go would ignore.

    Raises :class:`GoTypeError` naming ``where.key`` for a value of the wrong type.
    """
    by_fold = {name.casefold(): name for name in known}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in obj.items():
        name = key if key in known else by_fold.get(key.casefold())
        if name is None:
            unknown.append(key)
            continue
        values[name] = _check(f"{where}.{key}" if where else key, known[name], value)
    return values, unknown
