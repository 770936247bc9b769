"""docs/reference.md is the driver API as the code has it: every export documented, the file up to date."""

from __future__ import annotations

from pathlib import Path

from multidp.testing.reference import render

REFERENCE = Path(__file__).parent.parent / "docs" / "reference.md"


def test_every_export_has_a_docstring() -> None:
    _, missing = render()
    assert not missing, f"exported without a docstring: {', '.join(missing)}"


def test_the_committed_reference_is_current() -> None:
    text, _ = render()
    assert REFERENCE.read_text() == text, (
        "docs/reference.md is out of date: run `python -m multidp.testing.reference > docs/reference.md`")


def test_the_guide_points_to_it() -> None:
    guide = (REFERENCE.parent / "writing-a-driver.md").read_text()
    assert "(reference.md)" in guide


def test_a_dataclass_without_a_docstring_of_its_own_counts_as_undocumented() -> None:
    import dataclasses

    from multidp.testing.reference import describe

    @dataclasses.dataclass
    class NoDoc:
        size: int = 0

    assert describe("NoDoc", NoDoc)[1] == ["NoDoc"]


def test_the_reference_names_no_path_of_this_checkout() -> None:
    text, _ = render()
    assert str(REFERENCE.parent.parent) not in text  # the same text from every clone
