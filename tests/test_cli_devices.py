"""``multidp devices`` says what a node would not serve, with the daemon's own checks, and exits 1."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import env_with, run

from multidp.testing import fake_distribution

PLUGIN = '''
from multidp import Device, Driver, hookimpl

class Odd(Driver):
    def scan(self):
        return {
            "example.com/fine": [Device("a"), Device("a"), 7, Device("b", numa_nodes=[0])],
            "example.com/bad_": [Device("c")],
        }

@hookimpl
def multidp_create_driver(context):
    return Odd()
'''


def test_left_out_devices_and_refused_resources_are_marked(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "multidp-odd", {"odd": "odd_plugin"})
    (tmp_path / "odd_plugin.py").write_text(PLUGIN)
    result = run(["devices", "--json", "--drivers", "odd"], env_with(tmp_path))
    assert result.returncode == 1, result.stderr
    (entry,) = json.loads(result.stdout)["drivers"]
    assert entry["state"] == "ok"
    assert entry["not_served"] == {"example.com/bad_": "it is not an extended resource name: the part after '/' "
                                   "('bad_') may hold only letters, digits, '-', '_' and '.', and must start and "
                                   "end with a letter or digit"}
    fine = entry["resources"]["example.com/fine"]
    assert [(d["id"], d.get("not_served")) for d in fine] == [
        ("a", None),
        ("a", "is listed twice"),
        (None, "is a int, not a multidp Device"),
        ("b", "has NUMA nodes [0] (a tuple of integers 0..2**63-1)"),
    ]
    table = run(["devices", "--drivers", "odd"], env_with(tmp_path))
    assert table.returncode == 1
    assert table.stdout.count("NOT SERVED") == 4


DRA_PLUGIN = '''
from multidp import Device, Driver, hookimpl

MULTIDP_DRIVER_API = "1.3"

class Two(Driver):
    def scan(self):
        return {"example.com/card": [Device("0000:3b:00.1"), Device("card-1")]}

@hookimpl
def multidp_create_driver(context):
    return Two()
'''


def test_dra_devices_show_their_dra_names_and_the_claims_holding_them(tmp_path: Path) -> None:
    from multidp.dra.checkpoint import PREPARED, Checkpoint, Contents, PreparedClaim, PreparedDevice

    fake_distribution(tmp_path, "multidp-two", {"two": "two_plugin"})
    (tmp_path / "two_plugin.py").write_text(DRA_PLUGIN)
    (tmp_path / "config.yaml").write_text("drivers:\n  two:\n    frontend: dra\n    draDriverName: card.example.com\n")
    held = PreparedDevice("r", "node-a/example.com/card", "card-1", "example.com/card", "card-1")
    Checkpoint(tmp_path / "pl" / "card.example.com" / "checkpoint.json").save(
        Contents({"u1": PreparedClaim("u1", "team", "train", PREPARED, (held,))}))
    env = env_with(tmp_path, NODE_NAME="node-a", MULTIDP_DRA_PLUGINS_DIR=str(tmp_path / "pl"))
    args = ["devices", "--drivers", "two", "--config", str(tmp_path / "config.yaml")]
    result = run([*args, "--json"], env)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["drivers"]
    assert (entry["frontend"], entry["dra_driver"]) == ("dra", "card.example.com")
    assert [d["dra"] for d in entry["resources"]["example.com/card"]] == [
        {"pool": "node-a/example.com/card", "device": "0000-3b-00-1-0aa60e82", "claim": None},
        {"pool": "node-a/example.com/card", "device": "card-1", "claim": "team/train (prepared)"},
    ]
    table = run(args, env).stdout
    assert "DRA node-a/example.com/card/card-1, claim team/train (prepared)" in table
