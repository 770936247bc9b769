"""The prepared real-GPU check stays runnable: rehearsed over the fake NVML of the recorded H100."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "device_check.py"


def test_device_check_rehearsal_matches_all_four_recordings(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "GRPC_VERBOSITY": "ERROR"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--fake"], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["fake"] is True
    # the fake machine's NVML facts and /dev tree were built from the snapshot, so they must match it
    assert report["nvml"]["same_as_snapshot"] == {"gpus (name, minor, MIG mode, event mask)": True, "dev nodes": True}
    assert "multidp" in (tmp_path / "device_check.log").read_text()
    for name in ("default", "timeslice", "index_volume_mounts", "shared_strict"):
        assert report[name]["parity"] == {"equal": True, "differences": []}, name
        assert report[name]["reregister_ms"] is not None
        assert all(r["version"] == "v1beta1" for r in report[name]["registrations"])
        (latency,) = report[name]["latency"].values()  # paired with the in-process minimal plugin
        assert latency["minimal_us_p99"] > 0 and latency["p99_ratio"] > 0
    cdi = report["cdi_cri"]  # no recording to compare: the spec built from the (fake) driver files
    (spec,) = cdi["cdi_specs"].values()
    assert spec["kind"] == "k8s.device-plugin.nvidia.com/gpu"
    assert [h["args"][2] for h in spec["containerEdits"]["hooks"]] == ["create-symlinks", "update-ldcache"]
    one_gpu = next(iter(cdi["allocate"].values()))
    assert one_gpu["response"]["cdi_devices"] == [f"k8s.device-plugin.nvidia.com/gpu={spec['devices'][0]['name']}"]
