"""What creating the driver imports: never the fake NVML, the simulation or NVIDIA's file format.

Run in a fresh interpreter, as the host runs it: a node that does not simulate and names no
NVIDIA config file must not pay for those modules at start (pynvml itself loads at the first scan).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CREATE = """
import json, sys
from pathlib import Path
from multidp import DriverContext
import multidp_nvidia.plugin as plugin
driver = plugin.multidp_create_driver(context=DriverContext("nvidia", plugin.NvidiaConfig(), Path(sys.argv[1]),
                                                            Path(sys.argv[1])))
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("multidp_nvidia", "pynvml", "yaml")))))
"""

NOT_AT_START = {"multidp_nvidia.fake_nvml", "multidp_nvidia.fake_hardware", "multidp_nvidia.simulation",
                "multidp_nvidia.machines", "multidp_nvidia.nvidia_file", "multidp_nvidia.keys", "pynvml", "yaml"}


def _modules_after_create(tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", CREATE, str(tmp_path)], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_creating_the_driver_imports_no_simulation_and_no_file_format(tmp_path: Path) -> None:
    loaded = _modules_after_create(tmp_path)
    assert "multidp_nvidia.driver" in loaded and "multidp_nvidia.health" in loaded
    assert not loaded & NOT_AT_START, sorted(loaded & NOT_AT_START)
