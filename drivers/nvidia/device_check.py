"""Run multidp with the nvidia driver against the real GPU(s) and record what the kubelet sees.

For each of the four settings NVIDIA's plugin was recorded with (tests/fixtures/RECORDINGS.md)
it starts a host (real NVML, real unix sockets, the kubelet stand-in), records registration,
inventory, GetPreferredAllocation + Allocate for one and for all devices, the bad-input cases
and Allocate latency, and compares with the recording (UUIDs swapped for this GPU's). Results
go to $OUT/device_check.json (or ./device_check_out/). Usage: bash drivers/nvidia/device_check.sh
A rehearsal without a GPU: ``python drivers/nvidia/device_check.py --fake`` (the fake NVML built from the
recorded H100 snapshot, fake /sys and /dev trees): the same path, the same report.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from multidp.testing import (
    KubeletStandIn,
    allocate_request,
    percentile,
    running_host,
    short_socket_dir,
    v1beta1,
    v1beta1_grpc,
)

import multidp_nvidia.plugin as plugin
from multidp_nvidia import machines

HERE = Path(__file__).parent


def _load_minimal_plugin() -> Any:
    """bench/minimal_plugin.py, the bench's baseline, loaded from its file (it is a script, not a package)."""
    path = HERE.parents[1] / "bench" / "minimal_plugin.py"
    spec = importlib.util.spec_from_file_location("bench_minimal_plugin", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


minimal_plugin = _load_minimal_plugin()

FIXTURES = HERE / "tests" / "fixtures"
CONFIGS = {
    "default": "",
    "timeslice": "version: v1\nflags:\n  migStrategy: none\n  plugin:\n    passDeviceSpecs: true\n"
                 "    deviceListStrategy: envvar\n    deviceIDStrategy: uuid\nsharing:\n  timeSlicing:\n"
                 "    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
    "index_volume_mounts": "version: v1\nflags:\n  plugin: {passDeviceSpecs: true, deviceListStrategy: "
                           "volume-mounts, deviceIDStrategy: index}\n",
    "shared_strict": "version: v1\nsharing:\n  timeSlicing: {renameByDefault: true, failRequestsGreaterThanOne: "
                     "true, resources: [{name: nvidia.com/gpu, replicas: 3}]}\n",
}
# Recorded for a look, with nothing of NVIDIA's to compare: the CDI spec built from this machine's driver
# files (NVIDIA's plugin could not build one on the recording VM).
UNRECORDED = {
    "cdi_cri": "version: v1\nflags:\n  plugin: {deviceListStrategy: cdi-cri}\n",
}


def answer(r: v1beta1.ContainerAllocateResponse) -> dict[str, Any]:
    return {"envs": dict(r.envs), "annotations": dict(r.annotations),
            "mounts": [{"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
                       for m in r.mounts],
            "devices": [{"container_path": d.container_path, "host_path": d.host_path, "permissions": d.permissions}
                        for d in r.devices],
            "cdi_devices": [c.name for c in r.cdi_devices]}


def allocate(stub: Any, containers: list[list[str]]) -> tuple[str, Any]:
    request = allocate_request(*containers)
    try:
        return "ok", stub.Allocate(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


class Baseline(NamedTuple):
    server: grpc.Server
    plugin: Any  # bench/minimal_plugin.py's Plugin

    def stop(self) -> None:
        self.plugin.stop.set()  # ends its ListAndWatch, whose pool thread would otherwise outlive us
        self.server.stop(None)


def start_baseline(kubelet: KubeletStandIn, directory: Path) -> Baseline:
    """The minimal plugin (bench/minimal_plugin.py's servicer), served and registered in this process as multidp is."""
    server = grpc.server(ThreadPoolExecutor(8))
    plugin = minimal_plugin.Plugin(1)
    v1beta1_grpc.add_DevicePluginServicer_to_server(plugin, server)
    server.add_insecure_port(f"unix:{directory / 'minimal.sock'}")
    server.start()
    with grpc.insecure_channel(f"unix:{directory / 'kubelet.sock'}") as channel:
        v1beta1_grpc.RegistrationStub(channel).Register(v1beta1.RegisterRequest(
            version="v1beta1", endpoint="minimal.sock", resource_name=minimal_plugin.RESOURCE), timeout=10)
    kubelet.wait_registered(minimal_plugin.RESOURCE)
    return Baseline(server, plugin)


def paired_latency(directory: Path, endpoint: str, device: str) -> dict[str, Any]:
    """Allocate of one device, in turns with the in-process minimal plugin, timed from a client process of
    its own (as the kubelet is): ``--latency-client`` below."""
    done = subprocess.run([sys.executable, __file__, "--latency-client", str(directory / endpoint), device,
                           str(directory / "minimal.sock"), "dev-0"], capture_output=True, text=True, timeout=120)
    if done.returncode:
        return {"error": done.stderr[-2000:]}
    figures: dict[str, Any] = json.loads(done.stdout)
    figures["p50_ratio"] = round(figures["multidp_us_p50"] / figures["minimal_us_p50"], 2)
    figures["p99_ratio"] = round(figures["multidp_us_p99"] / figures["minimal_us_p99"], 2)
    return figures


def latency_client(ours: str, our_device: str, minimal: str, minimal_device: str, blocks: int = 20,
                   per_block: int = 150, warm_up: int = 200) -> dict[str, Any]:
    stubs = {who: v1beta1_grpc.DevicePluginStub(grpc.insecure_channel(f"unix:{path}"))
             for who, path in (("multidp", ours), ("minimal", minimal))}
    requests = {who: allocate_request([device])
                for who, device in (("multidp", our_device), ("minimal", minimal_device))}
    samples: dict[str, list[float]] = {"multidp": [], "minimal": []}
    for who in samples:
        for _ in range(warm_up):
            stubs[who].Allocate(requests[who], timeout=10)
    for _ in range(blocks):
        for who, values in samples.items():
            for _ in range(per_block):
                t0 = time.perf_counter()
                stubs[who].Allocate(requests[who], timeout=10)
                values.append((time.perf_counter() - t0) * 1e6)
    figures: dict[str, Any] = {"n": blocks * per_block}
    for who, values in samples.items():
        figures[f"{who}_us_p50"] = round(percentile(values, 50), 1)
        figures[f"{who}_us_p99"] = round(percentile(values, 99), 1)
    return figures


def run(name: str, work: Path, nvidia: Any = plugin, section_extra: dict[str, Any] | None = None,
        **overrides: Any) -> dict[str, Any]:
    directory = short_socket_dir("mdp-dev")
    kubelet = KubeletStandIn(directory).start()
    section: dict[str, Any] = {"failOnInitError": True, **(section_extra or {})}
    text = CONFIGS.get(name) or UNRECORDED.get(name)
    if text:
        (work / f"{name}.yaml").write_text(text)
        section["configFile"] = str(work / f"{name}.yaml")
    out: dict[str, Any] = {"config": section}
    baseline = start_baseline(kubelet, directory)
    started = time.monotonic()
    try:
        with running_host(directory, {"nvidia": nvidia}, {"nvidia": section}, environ={}, **overrides) as host:
            resources = sorted(host.endpoints)
            out["registrations"] = []
            for res in resources:
                reg = kubelet.wait_registered(res, timeout=30)
                out["registrations"].append({"resource": res, "version": reg.version,
                                             "pre_start_required": reg.options.pre_start_required,
                                             "preferred": reg.options.get_preferred_allocation_available,
                                             "ms_after_start": round(1000 * (reg.at - started), 1)})
            out["inventory"], out["allocate"], out["bad_input"], out["latency"] = {}, {}, {}, {}
            for res in resources:
                view = kubelet.wait_devices(res, lambda v: v.updates > 0, 30)
                out["inventory"][res] = [{"ID": i, "health": h, "numa": list(n)} for i, (h, n) in view.devices.items()]
                ids = [i for i, (h, _) in view.devices.items() if h == "Healthy"] or list(view.devices)
                stub = kubelet.stub(res)
                for label, n in ((res, 1), (f"{res}#all", len(ids))):
                    t0 = time.perf_counter()
                    request = v1beta1.PreferredAllocationRequest(container_requests=[
                        v1beta1.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=n)])
                    pref = stub.GetPreferredAllocation(request, timeout=10)
                    pref_ms = 1000 * (time.perf_counter() - t0)
                    picked = list(pref.container_responses[0].deviceIDs)
                    outcome, resp = allocate(stub, [picked])
                    got = answer(resp.container_responses[0]) if outcome == "ok" else resp
                    out["allocate"][label] = {"n": n, "preferred": picked, "preferred_ms": round(pref_ms, 3),
                                              "outcome": outcome, "response": got}
                for case, containers in (("unknown_id", [["no-such-device"]]), ("empty_container", [[]]),
                                         ("duplicate_id", [[ids[0], ids[0]]]),
                                         ("huge_request", [[f"x{i}" for i in range(20000)]]),
                                         ("long_id", [["y" * 100_000]]), ("many_containers", [[ids[0]]] * 64)):
                    outcome, resp = allocate(stub, containers)
                    out["bad_input"][case] = {"result": outcome, "details": resp if outcome != "ok" else ""}
                out["latency"][res] = paired_latency(directory, kubelet.resources[res].endpoint, ids[0])
            out["cdi_specs"] = {p.name: json.loads(p.read_text()) for p in sorted((directory / "cdi").glob("*.json"))}
            restarted = time.monotonic()
            kubelet.restart()
            reg = kubelet.wait_registered(resources[0], count=2, timeout=30) if resources else None
            out["reregister_ms"] = round(1000 * (reg.at - restarted), 1) if reg else None
    finally:
        baseline.stop()
        kubelet.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    out["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if name in CONFIGS:
        out["parity"] = compare(name, out)
    return out


def compare(name: str, ours: dict[str, Any]) -> dict[str, Any]:
    """Differences from NVIDIA's recording, its UUID swapped for this GPU's ([] when equal)."""
    rec_text = (FIXTURES / f"nvidia_plugin_{name}.json").read_text()
    rec = json.loads(rec_text)
    rec_uuid = next(iter(rec["inventory"].values()))[0]["ID"].split("::")[0]
    our_inv = next(iter(ours["inventory"].values()), [])
    if our_inv:
        rec = json.loads(rec_text.replace(rec_uuid, our_inv[0]["ID"].split("::")[0]))
    diffs = []
    if [r["resource"] for r in rec["registrations"]] != [r["resource"] for r in ours["registrations"]]:
        diffs.append("registrations differ")
    if rec["inventory"] != ours["inventory"]:
        diffs.append("inventory differs")
    for label, case in rec["allocate"].items():
        mine = ours["allocate"].get(label, {}).get("response")
        expected = dict(case["response"])
        seen: set[str] = set()
        expected["devices"] = [d for d in expected["devices"]
                               if not (d["container_path"] in seen or seen.add(d["container_path"]))]
        if mine != expected:
            diffs.append(f"allocate {label}: ours {mine} vs NVIDIA's {expected}")
    return {"equal": not diffs, "differences": diffs}


def nvml_facts(pynvml: Any, dev: Path = Path("/dev")) -> dict[str, Any]:
    """This machine's NVML facts that the drivers' answers rest on, and how they differ from the snapshot."""
    def ask(call: Any, *args: Any) -> Any:
        try:
            value = call(*args)
            return value.decode() if isinstance(value, bytes) else value
        except pynvml.NVMLError as exc:
            return f"NVMLError: {exc}"

    gpus = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        pci = ask(pynvml.nvmlDeviceGetPciInfo, handle)
        gpus.append({"name": ask(pynvml.nvmlDeviceGetName, handle), "uuid": ask(pynvml.nvmlDeviceGetUUID, handle),
                     "minor_number": ask(pynvml.nvmlDeviceGetMinorNumber, handle),
                     "busId": pci if isinstance(pci, str) else pci.busId.decode() if isinstance(pci.busId, bytes)
                     else pci.busId,
                     "mig_mode": ask(lambda h: list(pynvml.nvmlDeviceGetMigMode(h)), handle),
                     "supported_events": ask(pynvml.nvmlDeviceGetSupportedEventTypes, handle)})
    dev_nodes = sorted(f"/dev/{p.relative_to(dev)}" for p in [*dev.glob("nvidia*"), *dev.glob("nvidia-caps/*")])
    snapshot = machines.load_snapshot()  # the recorded H100's NVML facts
    recorded = {(d["name"], d["minor_number"], tuple(d["mig_mode"]), d["supported_events"])
                for d in snapshot["devices"]}
    seen = {(g["name"], g["minor_number"], tuple(g["mig_mode"]) if isinstance(g["mig_mode"], list) else g["mig_mode"],
             g["supported_events"]) for g in gpus}
    return {"gpus": gpus, "dev_nodes": dev_nodes,
            "same_as_snapshot": {"gpus (name, minor, MIG mode, event mask)": seen == recorded,
                                 "dev nodes": dev_nodes == sorted(snapshot["dev_nodes"])}}


def log_to(path: Path) -> None:
    """The host's and the driver's log lines go to a file that comes back with the report."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("multidp").addHandler(handler)
    logging.getLogger("multidp").setLevel(logging.INFO)


def main() -> int:
    if sys.argv[1:2] == ["--latency-client"]:
        print(json.dumps(latency_client(*sys.argv[2:6])))
        return 0
    out_dir = Path(os.environ.get("OUT") or "device_check_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_to(out_dir / "device_check.log")
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    import google.protobuf
    import pynvml

    report["versions"] = {"grpcio": grpc.__version__, "protobuf": google.protobuf.__version__}
    if "--fake" in sys.argv[1:]:
        return rehearse(out_dir, report)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no GPU or no driver here: say so in the report, not as a traceback
        report["error"] = f"NVML is not usable on this machine: {exc}"
        (out_dir / "device_check.json").write_text(json.dumps(report, indent=1))
        print(report["error"], file=sys.stderr)
        return 2
    report["driver_version"] = str(pynvml.nvmlSystemGetDriverVersion())
    report["nvml"] = nvml_facts(pynvml)
    print("NVML facts", json.dumps(report["nvml"]["same_as_snapshot"]), flush=True)
    pynvml.nvmlShutdown()
    with tempfile.TemporaryDirectory() as tmp:
        return run_all(out_dir, report, lambda name: run(name, Path(tmp)))


def run_all(out_dir: Path, report: dict[str, Any], one: Any) -> int:
    for name in [*CONFIGS, *UNRECORDED]:
        try:
            report[name] = one(name)
        except Exception as exc:  # noqa: BLE001 - record and go on with the next setting
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        said = report[name].get("parity", report[name].get("error", "recorded (no NVIDIA recording to compare)"))
        print(name, json.dumps(said), flush=True)
    (out_dir / "device_check.json").write_text(json.dumps(report, indent=1))
    return 0 if all(report[n].get("parity", {}).get("equal") for n in CONFIGS) else 1


def rehearse(out_dir: Path, report: dict[str, Any]) -> int:
    """The same run over the fake NVML of the recorded H100, to try the script where there is no GPU."""
    from multidp_nvidia.fake_nvml import FakeNvml
    from multidp_nvidia.machines import recorded_h100, write_host_files
    from multidp_nvidia.plugin import NvidiaPlugin

    report["fake"] = True
    with tempfile.TemporaryDirectory() as tmp:
        machine = recorded_h100()
        roots = write_host_files(machine, Path(tmp) / "node")
        fake = FakeNvml(machine)
        fake.nvmlInit()
        report["nvml"] = nvml_facts(fake, roots["dev"])
        extra = {"procRoot": str(roots["proc"]), "containerDriverRoot": str(roots["driver"])}

        def one(name: str) -> dict[str, Any]:
            return run(name, Path(tmp), NvidiaPlugin(FakeNvml(machine)), extra,
                       sysfs_root=roots["sys"], dev_root=roots["dev"])

        return run_all(out_dir, report, one)


if __name__ == "__main__":
    sys.exit(main())
