"""DRA mode (``frontend: dra``): every answer is what the host can hand over as CDI, never an annotation."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from multidp import AllocationRequest, ContainerAllocation, Device
from multidp.testing import create_driver

import multidp_fpga.plugin
from multidp_fpga.driver import FpgaDriver
from multidp_fpga.naming import INTEL_CDI_KIND, REGION_MODE_ANNOTATION
from multidp_fpga.simulate import REGION_CARD


@pytest.fixture
def simulate_in() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mdp", dir="/tmp") as folder:
        yield Path(folder)


def _answers(driver: FpgaDriver, inventory: Mapping[str, Sequence[Device]]) -> dict[str, ContainerAllocation]:
    """One answer per resource, for its first device (as a claim's request would get it)."""
    return {resource: driver.allocate(AllocationRequest(resource, (devices[0].id,), (devices[0].id,),
                                                        claim_uid="9d0b", request_name="fpga"))
            for resource, devices in inventory.items() if devices}


def _create(simulate_in: Path, **section: object) -> FpgaDriver:
    driver = create_driver(multidp_fpga.plugin, section, name="fpga", simulate_in=simulate_in)
    assert isinstance(driver, FpgaDriver)
    return driver


def test_simulated_node_answers_without_annotations_and_names_only_specd_cdi_devices(simulate_in: Path) -> None:
    driver = _create(simulate_in, frontend="dra", amdMountNodes=True)
    try:
        answers = _answers(driver, driver.scan())
        declared = {spec.qualified_name(d.name) for spec in driver.cdi_specs() for d in spec.devices}
        region = [a for a in answers.values() if a.cdi_devices]
        assert region, "the simulated node has a region-mode card"
        for answer in answers.values():
            assert answer.annotations == {} and answer.cdi_annotation_key is None
            assert set(answer.cdi_devices) <= declared
            assert answer.device_nodes or answer.mounts  # what the host writes into the claim's CDI spec
        assert any(name.startswith(f"{INTEL_CDI_KIND}=") for a in region for name in a.cdi_devices)
    finally:
        driver.close()


def test_device_plugin_mode_keeps_intels_region_annotation(simulate_in: Path) -> None:
    driver = _create(simulate_in)
    try:
        answers = _answers(driver, driver.scan())
        region = [a for a in answers.values() if a.cdi_devices]
        assert region and all(a.annotations == {REGION_MODE_ANNOTATION: "fpga.intel.com/region"} for a in region)
    finally:
        driver.close()


def test_region_card_of_the_simulation_is_the_one_named(simulate_in: Path) -> None:
    driver = _create(simulate_in, frontend="dra")
    try:
        inventory = driver.scan()
        region = {r: d for r, d in inventory.items() if r.startswith("fpga.intel.com/region-")}
        [(resource, [device])] = region.items()
        assert device.info["pci"] == REGION_CARD
        answer = _answers(driver, {resource: [device]})[resource]
        assert answer.cdi_devices == [f"{INTEL_CDI_KIND}={device.id}"] and answer.annotations == {}
    finally:
        driver.close()
