"""Go's encoding/json as the incumbents use it: keys in any case, later duplicates win, types strict."""

from __future__ import annotations

from typing import Any

import pytest

from multidp_rdma.gojson import GoTypeError, Kind, fields

KNOWN: dict[str, Kind] = {"IsRdma": "bool", "rdmaHcaMax": "int", "vendors": "strs", "resourceName": "str"}


@pytest.mark.parametrize(
    ("obj", "values", "unknown"),
    [
        ({"isRdma": True}, {"IsRdma": True}, []),
        ({"ISRDMA": True, "isrdma": False}, {"IsRdma": False}, []),  # the later duplicate wins
        ({"RdmaHcaMax": 5, "SelectorObj": None}, {"rdmaHcaMax": 5}, ["SelectorObj"]),
        ({"vendors": None, "resourceName": None}, {"vendors": None, "resourceName": None}, []),  # null: zero value
    ],
)
def test_fields(obj: dict[str, Any], values: dict[str, Any], unknown: list[str]) -> None:
    assert fields(obj, KNOWN, "x") == (values, unknown)


@pytest.mark.parametrize(
    ("obj", "words"),
    [({"isRdma": "true"}, "x.isRdma: a JSON string where Go's decoder needs true or false"),
     ({"rdmaHcaMax": 5.0}, "x.rdmaHcaMax: a JSON number where Go's decoder needs an integer"),
     ({"rdmaHcaMax": True}, "x.rdmaHcaMax: a JSON bool where"),
     ({"vendors": "15b3"}, "x.vendors: a JSON string where Go's decoder needs a list of strings"),
     ({"resourceName": 3}, "x.resourceName: a JSON number where Go's decoder needs a string")],
)
def test_wrong_types_fail_as_in_go(obj: dict[str, Any], words: str) -> None:
    with pytest.raises(GoTypeError, match=words.replace(".", r"\.")):
        fields(obj, KNOWN, "x")
