"""Drivers found through real entry points (fake distributions on sys.path), each loaded in isolation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from multidp.config.settings import Settings
from multidp.plugins.factory import UnknownDrivers, selected_names
from multidp.plugins.registry import PluginRegistry
from multidp.testing import fake_distribution


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding fake distributions and their modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(site: Path, name: str, body: str) -> None:
    (site / f"{name}.py").write_text(textwrap.dedent(body))


def test_entry_points_are_found_with_distribution_and_version(site):
    fake_distribution(site, "multidp-widgets", {"widgets": "multidp.testing.sample_plugin"}, version="2.3")
    registry = PluginRegistry()
    info = registry.plugins["widgets"]
    assert (info.distribution, info.version, info.loaded) == ("multidp-widgets", "2.3", False)
    assert registry.load(["widgets"])[0].loaded
    assert registry.call("widgets", "multidp_config_type").__name__ == "SampleConfig"


def test_import_failure_is_recorded_and_others_still_load(site):
    write_module(site, "broken_driver", "import no_such_module_anywhere\n")
    fake_distribution(site, "multidp-broken", {"broken": "broken_driver"})
    fake_distribution(site, "multidp-widgets", {"widgets": "multidp.testing.sample_plugin"})
    registry = PluginRegistry()
    broken, widgets = registry.load(["broken", "widgets"])
    assert not broken.loaded
    assert "ModuleNotFoundError" in broken.error and "no_such_module_anywhere" in broken.error
    assert broken.origin == "multidp-broken 1.0"
    assert widgets.loaded


def test_plugin_with_a_misspelt_hook_is_refused(site):
    write_module(site, "typo_driver", """
        from multidp import hookimpl

        @hookimpl
        def multidp_create_drivers(context):
            return None
    """)
    fake_distribution(site, "multidp-typo", {"typo": "typo_driver"})
    registry = PluginRegistry()
    info = registry.load(["typo"])[0]
    assert not info.loaded
    assert "invalid plugin" in info.error and "multidp_create_drivers" in info.error


def test_plugin_without_create_hook_is_refused(site):
    write_module(site, "empty_driver", "X = 1\n")
    fake_distribution(site, "multidp-empty", {"empty": "empty_driver"})
    info = PluginRegistry().load(["empty"])[0]
    assert "it has no multidp_create_driver hook" in info.error


def test_hook_with_wrong_arguments_is_refused(site):
    write_module(site, "args_driver", """
        from multidp import hookimpl

        @hookimpl
        def multidp_create_driver(context, surprise):
            return None
    """)
    fake_distribution(site, "multidp-args", {"args": "args_driver"})
    info = PluginRegistry().load(["args"])[0]
    assert not info.loaded and "surprise" in info.error


def test_unknown_driver_names_list_the_installed_ones(site):
    fake_distribution(site, "multidp-widgets", {"widgets": "multidp.testing.sample_plugin"})
    registry = PluginRegistry()
    with pytest.raises(UnknownDrivers, match=r"unknown driver\(s\): gpu \(installed: .*widgets"):
        selected_names(Settings(drivers=["widgets", "gpu"]), registry)
    assert selected_names(Settings(drivers=["widgets"]), registry) == ["widgets"]


def test_an_unmarked_hook_is_refused_naming_the_decorator(site):
    write_module(site, "unmarked_driver", """
        def multidp_create_driver(context):
            return None
    """)
    fake_distribution(site, "multidp-unmarked", {"unmarked": "unmarked_driver"})
    info = PluginRegistry().load(["unmarked"])[0]
    assert not info.loaded
    assert info.error == ("invalid plugin: multidp_create_driver is not marked with @multidp.hookimpl, "
                          "so the host would never call it")


def test_an_unmarked_typo_is_refused_not_ignored(site):
    write_module(site, "typo2_driver", """
        from multidp import hookimpl

        @hookimpl
        def multidp_create_driver(context):
            return None

        def multidp_simulte(workdir):
            return None
    """)
    fake_distribution(site, "multidp-typo2", {"typo2": "typo2_driver"})
    info = PluginRegistry().load(["typo2"])[0]
    assert not info.loaded
    assert info.error.startswith("invalid plugin: multidp_simulte is not a multidp hook (the hooks: ")
    assert "multidp_simulate" in info.error


def test_other_names_with_the_prefix_are_left_alone(site):
    write_module(site, "prefixed_driver", """
        import multidp_sibling_module_that_is_not_callable as multidp_helpers  # noqa: F401
        from multidp import hookimpl

        MULTIDP_DRIVER_API = "1.0"
        multidp_limit = 3


        class multidp_Thing:  # a class is not a hook
            pass

        @hookimpl
        def multidp_create_driver(context):
            return None
    """)
    write_module(site, "multidp_sibling_module_that_is_not_callable", "X = 1\n")
    fake_distribution(site, "multidp-prefixed", {"prefixed": "prefixed_driver"})
    assert PluginRegistry().load(["prefixed"])[0].loaded
