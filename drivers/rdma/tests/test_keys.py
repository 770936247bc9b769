"""The incumbents' keys, flags and variables against the driver's own table, and the doc that shows it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from multidp import ConfigError, DriverContext
from multidp.testing import driver_config

import multidp_rdma.plugin
from multidp_rdma import mellanox, sriov
from multidp_rdma.keys import KEYS, markdown

HERE = Path(__file__).parent
DOC = HERE.parents[2] / "docs" / "drop-in" / "rdma.md"
LISTED = json.loads((HERE / "incumbent_keys.json").read_text())
INCUMBENT_KEYS = sorted({(incumbent, key) for incumbent, sources in LISTED.items() if not incumbent.startswith("_")
                         for keys in sources.values() for key in keys})


@pytest.mark.parametrize(("incumbent", "key"), INCUMBENT_KEYS)
def test_every_incumbent_key_has_an_answer(incumbent: str, key: str) -> None:
    status, how = KEYS[(incumbent, key)]  # type: ignore[index]
    assert status in ("honoured", "refused", "warned", "not applicable")
    assert how.strip(), f"{incumbent} {key}: say how"


def test_the_table_lists_nothing_the_incumbents_lack() -> None:
    assert sorted(KEYS) == INCUMBENT_KEYS


def test_the_doc_shows_the_table_as_it_is() -> None:
    text = DOC.read_text()
    block = text.split("<!-- keys:start -->\n", 1)[1].split("<!-- keys:end -->", 1)[0]
    assert block == markdown(), "regenerate the table in docs/drop-in/rdma.md from multidp_rdma.keys.markdown()"
    for incumbent, key in INCUMBENT_KEYS:
        assert f"| `{key}` |" in block, f"{incumbent} {key} missing from {DOC}"


# Where each parser's key sets sit in the table's names.
PARSED = {"mellanox": [("", mellanox.TOP), ("configList[].", mellanox.ENTRY),
                       ("configList[].selectors.", mellanox.SELECTORS)],
          "sriov": [("", sriov.TOP), ("resourceList[].", sriov.ENTRY), ("selectors.", sriov.SELECTORS)]}


@pytest.mark.parametrize("incumbent", sorted(PARSED))
def test_the_file_keys_the_table_answers_are_the_keys_the_parser_reads(incumbent: str) -> None:
    # Both ways: a key the parser reads that the table lacks, or one the table says works or is refused
    # that the parser never reads (it would only be warned about as unknown), fails.
    parsed = {(prefix + key).casefold() for prefix, known in PARSED[incumbent] for key in known}
    answered = {key.casefold() for (i, key), (status, _) in KEYS.items()
                if i == incumbent and status in ("honoured", "refused", "warned") and not key.startswith(("-", "("))}
    assert answered == parsed


# A value for each key the table says is refused or warned about, and where it goes.
SAMPLES = {"selectors.vdpaType": ("selectors", "virtio"), "selectors.acpiIndexes": ("selectors", ["101"]),
           "selectors.pKeys": ("selectors", ["0x8001"]), "selectors.ddpProfiles": ("selectors", ["gtp"]),
           "selectors.needVhostNet": ("selectors", True), "resourceList[].excludeTopology": ("entry", True),
           "resourceList[].additionalInfo": ("entry", {"*": {"k": "v"}}),
           "resourceList[].SelectorObjs": ("entry", [{}]), "(any other key)": ("entry", 1)}


@pytest.mark.parametrize(("incumbent", "key"), sorted((i, k) for (i, k), (status, _) in KEYS.items()
                                                    if status in ("refused", "warned")))
def test_the_table_says_what_the_code_does(incumbent: str, key: str, tmp_path: Path, caplog) -> None:
    where, value = SAMPLES[key]
    name = "Colour" if key == "(any other key)" else key.rsplit(".", 1)[-1]
    if incumbent == "sriov":
        entry: dict[str, object] = {"resourceName": "a", "selectors": {"isRdma": True}}
    else:
        entry = {"resourceName": "a", "rdmaHcaMax": 1, "selectors": {"vendors": ["15b3"]}}
    target: dict[str, object] = entry["selectors"] if where == "selectors" else entry  # type: ignore[assignment]
    target[name] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"resourceList" if incumbent == "sriov" else "configList": [entry]}))
    config = driver_config(multidp_rdma.plugin, {"configFile": str(path)}, name="rdma")
    context = DriverContext(name="rdma", config=config, checking=True)
    status = KEYS[(incumbent, key)][0]  # type: ignore[index]
    with caplog.at_level(logging.WARNING, "multidp.driver"):
        if status == "refused":
            with pytest.raises(ConfigError, match=f"(?i){name}"):
                multidp_rdma.plugin.multidp_create_driver(context=context)
        else:
            multidp_rdma.plugin.multidp_create_driver(context=context)
            assert any(name in r.getMessage() for r in caplog.records), f"no warning names {name}"
