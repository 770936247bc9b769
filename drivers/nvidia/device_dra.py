"""The nvidia driver served through DRA on this machine's real GPUs: slices, a claim, its CDI spec, health.

On the GPU machine, from the repository root (see device_dra.sh, which installs the wheels first)::

    PYTHONPATH=src:drivers/nvidia/src python3 drivers/nvidia/device_dra.py

A host serves the real NVML and /sys through DRA to the DRA kubelet stand-in and a fake API server (both
from multidp.testing), with the real boot id. It checks that the slices describe every GPU, that the
scheduler stand-in's claim for nvidia.com/gpu is prepared with CDI IDs that the written CDI specs define,
from files that exist on this machine, that the health stream says Healthy, that a host restart keeps
the claim, and that it unprepares; and times Prepare and Unprepare. Writes $OUT/device_dra.json.
Exit 0: every check held.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from multidp.testing import DraKubelet, FakeApiServer, SchedulerStandIn, running_host, short_socket_dir, wait_until

import multidp_nvidia.plugin as nvidia

DRA_NAME = "gpu.multidp.io"
NODE = "gpu-node"


def defined(cdi_dir: Path) -> dict[str, dict[str, Any]]:
    """Every CDI device the specs in ``cdi_dir`` define, with its container edits."""
    found = {}
    for path in cdi_dir.glob("*.json"):
        spec = json.loads(path.read_text())
        for device in spec["devices"]:
            found[f"{spec['kind']}={device['name']}"] = {"edits": device.get("containerEdits", {}),
                                                         "common": spec.get("containerEdits", {})}
    return found


def host_paths(edits: dict[str, Any]) -> list[str]:
    paths = [n.get("hostPath") or n["path"] for n in edits.get("deviceNodes", [])]
    return paths + [m["hostPath"] for m in edits.get("mounts", [])]


def main() -> int:
    root = short_socket_dir("mdp-gpu")
    report: dict[str, Any] = {"checks": {}}
    checks = report["checks"]
    api = FakeApiServer(NODE)
    kubelet = DraKubelet(root / "reg").start()
    settings = {"dra_plugins_dir": root / "pl", "dra_registry_dir": root / "reg", "cdi_dir": root / "cdi",
                "pod_resources_socket": root / "none.sock",
                "simulate": os.environ.get("DEVICE_DRA_SIMULATE") == "1"}  # a rehearsal off the GPU machine
    environ = {**os.environ, "KUBECONFIG": str(api.kubeconfig(root)), "NODE_NAME": NODE}
    section = {"nvidia": {"frontend": "dra", "draDriverName": DRA_NAME}}
    try:
        with running_host(root / "dp", {"nvidia": nvidia}, section, environ=environ, **settings) as host:
            view = kubelet.wait_registered(DRA_NAME, timeout=30)
            report["services"] = [view.dra_service, view.health_service]
            wait_until(lambda: bool(api.slices.slices(driver=DRA_NAME)), 30, "slices")
            slices = api.slices.slices(driver=DRA_NAME)
            report["slices"] = [obj["spec"] for obj in slices]
            devices = [d for obj in slices for d in obj["spec"]["devices"]]
            checks["slices_valid"] = api.slices.invalid == []
            checks["every_gpu_published"] = len(devices) >= 1 and all(
                "uuid" in d["attributes"] and "memory" in d.get("capacity", {}) for d in devices)
            claim = SchedulerStandIn(api).allocate("gpu", "c1", DRA_NAME, "nvidia.com/gpu")
            key = ("gpu", claim["metadata"]["uid"], "c1")
            answer = kubelet.prepare(DRA_NAME, [key])[key[1]]
            report["prepare"] = {"error": answer.error, "devices": [vars(d) for d in answer.devices]}
            ids = [i for d in answer.devices for i in d.cdi_ids]
            specs = defined(root / "cdi")
            checks["prepared"] = answer.error == "" and bool(ids)
            checks["cdi_ids_defined"] = bool(ids) and all(i in specs for i in ids)
            paths = sorted({p for i in ids if i in specs for p in host_paths(specs[i]["edits"])
                            + host_paths(specs[i]["common"])})
            report["cdi_host_paths"] = paths
            checks["cdi_paths_exist"] = bool(paths) and (settings["simulate"] or all(os.path.exists(p) for p in paths))
            wait_until(lambda: bool(kubelet.health(DRA_NAME)), 10, "health")
            report["health"] = {f"{p}/{n}": e.health for (p, n), e in kubelet.health(DRA_NAME).items()}
            checks["healthy"] = all(h == "Healthy" for h in report["health"].values())
            checks["unprepared_first"] = kubelet.unprepare(DRA_NAME, [key]) == {key[1]: ""}
            api.claims.remove("gpu", "c1")
            prepares, unprepares = [], []
            for index in range(20):  # a new claim each time (one GET), unprepared again
                other = SchedulerStandIn(api).allocate("gpu", f"t{index}", DRA_NAME, "nvidia.com/gpu")
                okey = ("gpu", other["metadata"]["uid"], f"t{index}")
                started = time.perf_counter()
                error = kubelet.prepare(DRA_NAME, [okey])[okey[1]].error
                prepares.append(time.perf_counter() - started)
                started = time.perf_counter()
                kubelet.unprepare(DRA_NAME, [okey])
                unprepares.append(time.perf_counter() - started)
                api.claims.remove("gpu", f"t{index}")
                if error:
                    report.setdefault("timing_errors", []).append(error)
            report["prepare_ms"] = {"p50": 1000 * statistics.median(prepares), "max": 1000 * max(prepares)}
            report["unprepare_ms"] = {"p50": 1000 * statistics.median(unprepares), "max": 1000 * max(unprepares)}
            claim = SchedulerStandIn(api).allocate("gpu", "c2", DRA_NAME, "nvidia.com/gpu")
            key = ("gpu", claim["metadata"]["uid"], "c2")
            final = kubelet.prepare(DRA_NAME, [key])[key[1]]
            checks["prepared_again"] = final.error == "" and "timing_errors" not in report
            del host
        with running_host(root / "dp", {"nvidia": nvidia}, section, environ=environ, **settings):
            kubelet.wait_registered(DRA_NAME, timeout=30)
            again = kubelet.prepare(DRA_NAME, [key])[key[1]]
            checks["kept_across_host_restart"] = again.error == "" and [d.cdi_ids for d in again.devices] == [
                d.cdi_ids for d in final.devices]
            checks["unprepared"] = kubelet.unprepare(DRA_NAME, [key]) == {key[1]: ""}
        checks["no_sockets_left"] = not list(root.rglob("*.sock"))
    except Exception as exc:  # noqa: BLE001 - reported
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        kubelet.stop()
        api.close()
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out, "device_dra.json").write_text(text)
    return 0 if checks and all(checks.values()) and "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
