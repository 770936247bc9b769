"""Go's encoding/json as the incumbents use it: keys in any case, later duplicates win, types strict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from multidp_rdma.gojson import GoTypeError, Kind, fields
from multidp_rdma.incumbents import load_file

KNOWN: dict[str, Kind] = {"IsRdma": "bool", "rdmaHcaMax": "int", "vendors": "strs", "resourceName": "str",
                          "additionalInfo": "info", "SelectorObjs": "list"}


@pytest.mark.parametrize(
    ("obj", "values", "unknown"),
    [
        ({"isRdma": True}, {"IsRdma": True}, []),
        ({"ISRDMA": True, "isrdma": False}, {"IsRdma": False}, []),  # the later duplicate wins
        ({"RdmaHcaMax": 5, "SelectorObj": None}, {"rdmaHcaMax": 5}, ["SelectorObj"]),
        ({"vendors": None, "resourceName": None}, {"vendors": None, "resourceName": None}, []),  # null: zero value
        # A null inside []string or map[string]string leaves that string "": Go's decoder does not fail.
        ({"vendors": ["15b3", None]}, {"vendors": ["15b3", ""]}, []),
        ({"additionalInfo": {"*": {"k": None}, "x": None}}, {"additionalInfo": {"*": {"k": None}, "x": None}}, []),
        # []interface{}: any list, or null.
        ({"SelectorObjs": [{}, 1, "a"]}, {"SelectorObjs": [{}, 1, "a"]}, []),
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
     ({"resourceName": 3}, "x.resourceName: a JSON number where Go's decoder needs a string"),
     ({"vendors": ["15b3", 5]}, "x.vendors: a JSON array where Go's decoder needs a list of strings"),
     ({"SelectorObjs": {"x": 1}}, "x.SelectorObjs: a JSON object where Go's decoder needs a list"),
     ({"additionalInfo": {"*": {"k": 1}}}, "x.additionalInfo: a JSON object where")],
)
def test_wrong_types_fail_as_in_go(obj: dict[str, Any], words: str) -> None:
    with pytest.raises(GoTypeError, match=words.replace(".", r"\.")):
        fields(obj, KNOWN, "x")


def test_files_with_null_strings_are_read_and_an_object_selector_objs_refused(tmp_path: Path) -> None:
    # The repro of the review: Go reads the first (devices ["ib0", ""]) and fails the second.
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"configList": [{"resourceName": "a", "rdmaHcaMax": 1, "devices": ["ib0", None]}]}))
    assert [p.resource for p in load_file(str(path)).pools] == ["rdma/a"]
    path.write_text(json.dumps({"resourceList": [{"resourceName": "a", "SelectorObjs": {"x": 1},
                                                  "selectors": {"isRdma": True}}]}))
    with pytest.raises(ValueError, match=r"resourceList\[0\]\.SelectorObjs: a JSON object where Go's decoder needs"):
        load_file(str(path))
