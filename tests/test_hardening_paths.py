"""Unusable paths and slow paths: a plugin dir we could never serve in, SIGTERM while a driver's
creation hangs, the registration retry delay, and CDI names and paths from drivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults_helpers
import grpc
import pytest
from faults_helpers import START_S, WIDGET, our_sockets

from multidp.api import pb
from multidp.model import CDIDeviceSpec, CDIHook, CDISpec, DeviceNode, Mount
from multidp.serving.cdi import CDIRegistry
from multidp.serving.endpoint import BACKOFF_FIRST_S, BACKOFF_MAX_S
from multidp.testing import KubeletStandIn, SampleDriver, SamplePlugin, fake_distribution, short_socket_dir

site, daemons = faults_helpers.site, faults_helpers.daemons  # fixtures

KIND = "example.com/widget"
HANGING_MODULE = '''
import os, time
from pathlib import Path
from multidp import hookimpl

@hookimpl
def multidp_create_driver(context):
    mark = Path(os.environ["HANGER_MARK"])  # how many times creation began
    creations = int(mark.read_text()) + 1 if mark.exists() else 1
    mark.write_text(str(creations))
    if creations <= int(os.environ.get("HANGER_FAILS_FIRST", "0")):
        raise RuntimeError("no hardware yet")
    time.sleep(600)
'''


def run_multidp(site_dir: Path, *args: str, timeout: float = START_S) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIDP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "multidp", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_until_exit(site_dir: Path, plugin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``multidp run`` that is expected to refuse to start (it would otherwise serve until killed)."""
    try:
        return run_multidp(site_dir, "run", "--plugin-dir", str(plugin_dir), "--drivers", "sample",
                           "--cdi-dir", str(tmp_path / "cdi"))
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"multidp run kept running with plugin dir {plugin_dir}; log:\n"
                             f"{(exc.stderr or b'')[-3000:]!r}") from None


# Start-up checks ----------------------------------------------------------------------------------------------

def test_plugin_dir_whose_socket_paths_pass_107_bytes_is_refused_at_start(site, tmp_path):
    base = short_socket_dir()
    try:
        # Short enough to create, too long for "/multidp-sample-<8 hex>.sock" after it.
        plugin_dir = base / ("d" * (107 - len(str(base)) - 20))
        result = run_until_exit(site, plugin_dir, tmp_path)
        assert result.returncode == 2, result.stderr
        socket = plugin_dir / "multidp-sample-"
        assert f"multidp: config error: pluginDir: the socket path {socket}" in result.stderr
        assert "over the 107 a unix socket path may have; use a shorter path" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("where", ["/proc/self/nope", "/proc/self", "a file"])
def test_plugin_dir_that_cannot_be_created_or_written_is_refused_at_start(site, tmp_path, where):
    plugin_dir = Path(where)
    if where == "a file":
        plugin_dir = tmp_path / "plugins"
        plugin_dir.write_text("not a directory")
    result = run_until_exit(site, plugin_dir, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"multidp: config error: pluginDir: cannot create or write in {plugin_dir}:" in result.stderr
    assert "Traceback" not in result.stderr


# SIGTERM while a driver is being created -----------------------------------------------------------------------

def hanging_daemon(kubelet, site, tmp_path, daemons, **env: str):
    """``multidp run`` with the sample driver and one whose creation hangs (for 5 minutes: timeouts.create)."""
    fake_distribution(site, "multidp-hanger", {"hanger": "hanger_driver_module"})
    (site / "hanger_driver_module.py").write_text(HANGING_MODULE)
    config = tmp_path / "multidp.yaml"
    config.write_text("timeouts:\n  create: 300\n")
    mark = tmp_path / "hanger-creations"
    daemon = daemons(kubelet.directory, "--drivers", "sample,hanger", config=config, HANGER_MARK=str(mark), **env)
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4, START_S, "the other driver served meanwhile")
    return daemon, mark


def wait_creations(mark: Path, count: int) -> None:
    deadline = time.monotonic() + START_S
    while not (mark.exists() and mark.read_text() and int(mark.read_text()) >= count):
        assert time.monotonic() < deadline, f"the hanging driver was not created {count} time(s)"
        time.sleep(0.05)


def test_sigterm_while_a_driver_creation_hangs_stops_at_once_and_leaves_no_socket(kubelet, site, tmp_path, daemons):
    daemon, mark = hanging_daemon(kubelet, site, tmp_path, daemons)
    wait_creations(mark, 1)
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGHUP)  # noted, for once start-up is done (the lower signal: taken first)
    assert daemon.stop() == 0, daemon.log  # within STOP_S, not after timeouts.create
    assert our_sockets(kubelet.directory) == []
    assert "SIGHUP during start-up: reloading once it is done" in daemon.log
    assert "stopping during start-up" in daemon.log
    assert daemon.problems() == []


def test_sigterm_while_a_reload_hangs_in_a_driver_creation_stops_at_once(kubelet, site, tmp_path, daemons):
    daemon, mark = hanging_daemon(kubelet, site, tmp_path, daemons, HANGER_FAILS_FIRST="1")
    daemon.wait_log("driver hanger (multidp-hanger 1.0) failed: RuntimeError: no hardware yet")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_creations(mark, 2)
    assert daemon.stop() == 0, daemon.log
    assert our_sockets(kubelet.directory) == []
    assert "stopping during reload" in daemon.log


# Registration retries --------------------------------------------------------------------------------------

class CountingKubelet(KubeletStandIn):
    """The stand-in, also noting when each Register call arrives (answered or not)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.arrivals: list[tuple[str, float]] = []

    def Register(self, request, context):  # noqa: N802 - gRPC's name
        with self._cond:
            self.arrivals.append((request.resource_name, time.monotonic()))
            self._cond.notify_all()
        return super().Register(request, context)


def test_refused_registrations_are_retried_at_a_delay_growing_to_5_s(socket_dir, multidp_host):
    """Not beaten down to the 2 s safety net: each gap is at least the documented delay."""
    kubelet = CountingKubelet(socket_dir)
    kubelet.refuse = "refused by the test"
    kubelet.start()
    try:
        multidp_host({"sample": SamplePlugin()}, drivers={"sample": {"resources": {WIDGET: {"count": 1}}}})
        delays = [min(BACKOFF_FIRST_S * 2 ** i, BACKOFF_MAX_S) for i in range(9)]  # 0.05 ... 3.2, 5, 5
        assert delays[-2:] == [5.0, 5.0]
        kubelet.wait_for(lambda: len(kubelet.arrivals) > len(delays), sum(delays) + START_S,
                         f"{len(delays) + 1} Register calls")
        times = [t for resource, t in kubelet.arrivals if resource == WIDGET]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        for number, (gap, delay) in enumerate(zip(gaps, delays, strict=False), 1):
            assert gap >= delay, f"retry {number} came {gap:.2f} s after the one before, not >= {delay} s: {gaps}"
        assert kubelet.registration_count(WIDGET) == 0
    finally:
        kubelet.shutdown()


# CDI names and paths from drivers -----------------------------------------------------------------------------

def widget(name: str = "w0", **node: str) -> CDIDeviceSpec:
    return CDIDeviceSpec(name, [DeviceNode(node.get("container", "/dev/w0"), node.get("host", "/dev/null"))])


BAD_SPECS = [
    (CDISpec(KIND, [widget("w/0")]), "device 'w/0': name", "letters, digits"),
    (CDISpec(KIND, [widget("../w0")]), "device '../w0': name", "letters, digits"),
    (CDISpec(KIND, [widget("")]), "device '': name", "letters, digits"),
    (CDISpec(KIND, [widget("w0-")]), "device 'w0-': name", "letters, digits"),
    (CDISpec(KIND, [widget("w0"), widget("w0")]), "device 'w0': name", "listed twice"),
    (CDISpec(KIND, [widget(container="dev/w0")]), "device 'w0': device_nodes[0].container_path 'dev/w0'",
     "not an absolute path"),
    (CDISpec(KIND, [widget(host="../../etc/shadow")]),
     "device 'w0': device_nodes[0].host_path '../../etc/shadow'", "not an absolute path"),
    (CDISpec(KIND, [widget(host="/dev/null\x00x")]), "device 'w0': device_nodes[0].host_path", "NUL or newline"),
    (CDISpec(KIND, [CDIDeviceSpec("w0", mounts=[Mount("etc/w", "/etc/w")])]),
     "device 'w0': mounts[0].container_path 'etc/w'", "not an absolute path"),
    (CDISpec(KIND, [CDIDeviceSpec("w0", mounts=[Mount("/etc/w", "etc/w")])]),
     "device 'w0': mounts[0].host_path 'etc/w'", "not an absolute path"),
    (CDISpec(KIND, [CDIDeviceSpec("w0", env={"A": "1\nB=2"})]), "device 'w0': env['A']", "NUL or newline"),
    (CDISpec(KIND, [CDIDeviceSpec("w0", env={"A=B": "1"})]), "device 'w0': env key 'A=B'", "variable name"),
    (CDISpec(KIND, [widget()], common_mounts=[Mount("/x", "x")]), "common edits: mounts[0].host_path 'x'",
     "not an absolute path"),
    (CDISpec(KIND, [CDIDeviceSpec("w0", hooks=[CDIHook("createContainer", "/bin/h", ["h", "a\nb"])])]),
     "device 'w0': hooks[0].args[1]", "NUL or newline"),
    (CDISpec("0example.com/widget", [widget()]), "kind '0example.com/widget'", "vendor/class"),
    (CDISpec("example.com/-widget", [widget()]), "kind 'example.com/-widget'", "vendor/class"),
    (CDISpec("example.com/wid/get", [widget()]), "kind 'example.com/wid/get'", "vendor/class"),
]


@pytest.mark.parametrize(("spec", "field", "problem"), BAD_SPECS)
def test_cdi_spec_breaking_cdis_rules_is_refused_and_not_written(tmp_path, spec, field, problem):
    registry = CDIRegistry(tmp_path)
    registry.publish("sample", [CDISpec(KIND, [widget("w9")])])  # a good one first: replaced by the refusal
    registry.publish("sample", [spec])
    reason = registry.problem("sample", [f"{KIND}=w0"])
    assert reason is not None, "the bad spec was accepted"
    assert reason.startswith(f"driver sample: CDI spec of kind {spec.kind!r} refused: "), reason
    assert field in reason and problem in reason, reason
    written = json.loads((tmp_path / "multidp-sample-example.com_widget.json").read_text())
    assert [d["name"] for d in written["devices"]] == ["w9"]  # nothing of the bad spec reached the disk


def test_cdi_names_cdi_allows_are_accepted(tmp_path):
    registry = CDIRegistry(tmp_path)
    names = ["0", "GPU-6f2b2d63-4b3c-3d5a-1b3e-8f1d1b9b2d10", "MIG-0:1", "a.b_c-d:e", "all"]
    registry.publish("sample", [CDISpec("k8s.device-plugin.nvidia.com/gpu", [widget(n) for n in names]),
                                CDISpec("example.com/Widget_2.x", [widget("w0")])])
    assert registry.problem("sample", [f"k8s.device-plugin.nvidia.com/gpu={n}" for n in names]) is None
    assert registry.problem("sample", ["example.com/Widget_2.x=w0"]) is None


def test_allocation_naming_a_refused_cdi_spec_is_failed_precondition_naming_the_field(kubelet, multidp_host):
    class RelativeHostPath(SampleDriver):
        def cdi_specs(self):
            return [CDISpec(KIND, [CDIDeviceSpec(d, [DeviceNode(f"/dev/{d}", f"dev/{d}")])
                                   for d in ("widget-0", "widget-1", "widget-2", "widget-3")])]

    host = multidp_host({"sample": SamplePlugin(RelativeHostPath)})
    kubelet.wait_devices(WIDGET, lambda v: v.capacity == 4 and v.allocatable == 0)  # each needs the refused spec
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["widget-0"])])
    with pytest.raises(grpc.RpcError) as err:
        kubelet.stub(WIDGET).Allocate(request, timeout=10)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert ("driver sample: CDI spec of kind 'example.com/widget' refused: device 'widget-0': "
            "device_nodes[0].host_path 'dev/widget-0' is not an absolute path") in err.value.details()
    assert not list(host.cdi.directory.glob("multidp-sample-*.json"))
    shared = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["widget-shared-0::1"])])
    kubelet.wait_devices("example.com/widget-shared", lambda v: v.allocatable == 4)  # names no CDI device
    assert kubelet.stub("example.com/widget-shared").Allocate(shared, timeout=10).container_responses[0].envs


def test_the_sample_drivers_spec_still_passes(kubelet, multidp_host):
    host = multidp_host({"sample": SamplePlugin()})
    kubelet.wait_devices(WIDGET, lambda v: v.allocatable == 4)
    kubelet.wait_for(lambda: any(host.cdi.directory.glob("multidp-sample-*.json")), START_S, "the CDI spec")
    assert kubelet.allocate(WIDGET, 1).cdi_devices[0].startswith(f"{KIND}=widget-")
