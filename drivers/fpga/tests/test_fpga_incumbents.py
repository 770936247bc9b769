"""Every incumbent setting has a verdict in the code, and docs/drop-in/fpga.md gives it the same one."""

from __future__ import annotations

from pathlib import Path

from multidp_fpga.incumbents import TABLE

HERE = Path(__file__).resolve().parent
LISTED = HERE / "incumbent_settings.txt"
DOC = HERE.parents[2] / "docs" / "drop-in" / "fpga.md"


def listed() -> list[tuple[str, str, str]]:
    items = []
    for line in LISTED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            vendor, kind, name = line.split(maxsplit=2)
            items.append((vendor, kind, name))
    return items


def documented() -> dict[tuple[str, str, str], str]:
    """(vendor, kind, name) -> verdict, from the rows of the doc's settings table."""
    rows: dict[tuple[str, str, str], str] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ("amd", "intel") and cells[2].startswith("`"):
            key = (cells[0], cells[1], cells[2].strip("`"))
            assert key not in rows, f"{key} is listed twice in {DOC.name}"
            rows[key] = cells[3]
    return rows


def test_the_list_is_not_empty_and_has_no_repeats():
    items = listed()
    assert len(items) >= 20 and len(items) == len(set(items))


def test_every_listed_setting_has_a_verdict_in_the_code_and_nothing_else_does():
    assert set(listed()) == set(TABLE)


def test_the_doc_gives_each_setting_the_codes_verdict():
    rows = documented()
    assert set(rows) == set(TABLE), set(rows) ^ set(TABLE)
    for key, verdict in TABLE.items():
        assert rows[key] == verdict.kind, f"{key}: doc says {rows[key]!r}, code {verdict.kind!r}"


def test_refusals_and_na_say_why():
    for key, verdict in TABLE.items():
        assert len(verdict.how) > 20, key


GUIDE = HERE.parents[2] / "docs" / "operator-guide.md"
SECTIONS = {"intel": "### From Intel's FPGA device plugin", "amd": "### From AMD's (Xilinx) FPGA device plugin"}
LINES = {"honoured": "- **Honoured**", "refused": "- **Refused**", "n/a": "- **Not applicable**"}


def guide_verdict_lines(vendor: str) -> dict[str, str]:
    """The guide's verdict bullets of one vendor's section, each joined with its continuation lines."""
    text = GUIDE.read_text()
    section = text[text.index(SECTIONS[vendor]):]
    section = section[:section.index("\n#", 1)]
    found: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        starts = [kind for kind, mark in LINES.items() if line.startswith(mark)]
        if starts:
            current = starts[0]
            found[current] = line
        elif current and line.startswith("  "):
            found[current] += " " + line.strip()
        else:
            current = None
    return found


def test_the_operator_guide_names_each_setting_under_its_verdict():
    for vendor in SECTIONS:
        lines = guide_verdict_lines(vendor)
        kinds = {verdict.kind for (owner, _, _), verdict in TABLE.items() if owner == vendor}
        assert set(lines) == kinds, f"{vendor}: one verdict line per verdict its settings have"
        for (owner, _, name), verdict in TABLE.items():
            if owner == vendor:
                assert f"`{name}`" in lines[verdict.kind], f"{name} is not under {verdict.kind} in the guide"
