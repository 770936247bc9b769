"""Fake installed distributions, so tests can load drivers through real entry points.

``fake_distribution(root, "acme-driver", {"acme": "acme_plugin"})`` writes a
``.dist-info`` folder under ``root``; with ``root`` on ``sys.path`` (or in
PYTHONPATH of a subprocess) ``importlib.metadata`` finds it like any installed
package, and the host loads the entry point as it would in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from multidp.plugins.registry import ENTRY_POINT_GROUP


def fake_distribution(root: Path, name: str, entry_points: Mapping[str, str], version: str = "1.0") -> Path:
    """Write distribution ``name`` declaring ``entry_points`` (driver name → module) under ``root``.

    Returns ``root``. Put ``root``, and the folder your package's modules import from (``src``),
    on the PYTHONPATH of the ``multidp`` process you start: it then finds your driver as if installed.
    """
    dist_info = Path(root) / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items()), ""]
    (dist_info / "entry_points.txt").write_text("\n".join(lines))
    return Path(root)
