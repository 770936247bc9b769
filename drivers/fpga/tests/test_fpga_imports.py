"""What creating the driver imports: never the tree builder of the simulation or the incumbents' table.

Run in a fresh interpreter, as the host runs it on a node that does not simulate.
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
import multidp_fpga.plugin as plugin
driver = plugin.multidp_create_driver(context=DriverContext("fpga", plugin.FpgaConfig(), Path(sys.argv[1]),
                                                            Path(sys.argv[1])))
driver.scan()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("multidp_fpga"))))
"""


def test_creating_and_scanning_imports_no_simulation(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CREATE, str(tmp_path)], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"multidp_fpga.driver", "multidp_fpga.reads", "multidp_fpga.intel", "multidp_fpga.amd"} <= loaded
    assert not loaded & {"multidp_fpga.simulate", "multidp_fpga.fakesys", "multidp_fpga.incumbents"}, sorted(loaded)
