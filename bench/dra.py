"""The DRA section of bench/run.py: NodePrepareResources beside Allocate, and the memory DRA mode adds.

Two hosts are spawned side by side, each `multidp run --drivers bench` serving the bench driver's one
device ``dev-0``: one as a device plugin (to its own kubelet stand-in), one with ``frontend: dra``
(``MULTIDP_BENCH_FRONTEND=dra``; its DRA sockets, registry and boot-id file in a short temp dir, claims
read from a local FakeApiServer through ``KUBECONFIG``). The bench calls the DRA socket directly with
the v1 messages, as the kubelet does, taking turns with Allocate on the device plugin so that the
machine's other work weighs on both alike.

NODE_NAME is kept out of both hosts: with it (and API access) the host follows node labels, whose
lightkube watch would blur the memory figure (node-label mode is measured on its own by --serving).
The pool name is then the host's own (``node_name`` without NODE_NAME: the host name).

Both hosts run the very same driver, bench_driver.py (its answers, variables and a device node, are
complete for CDI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from measure import RESOURCE, WAIT_S, bench_env, multidp_command, rss_mb
from spawn import terminate

from multidp.api import dra_v1_pb2 as dra
from multidp.api import pb
from multidp.api.services import DRA_V1, PREPARE, UNPREPARE, method_path
from multidp.dra.frontend import node_name
from multidp.dra.names import device_name, pool_name
from multidp.testing import FakeApiServer, KubeletStandIn, fake_distribution, percentile, short_socket_dir

DRA_NAME = "bench.multidp.io"  # driver "bench"'s default DRA driver name
DEVICE = "dev-0"
NAMESPACE = "bench"
WARMUP = 50
SETTLE_S = 0.5  # after the one call, before reading RSS: freed memory returned, threads parked

DRIVER_MODULE = "bench_driver"

PREPARE_INCLUDES = ("Prepare of a new claim includes one GET of the claim (lightkube's httpx client → a local "
                    "fake API server in the bench's own process), the driver's allocate, two checkpoint writes "
                    "(preparing, then prepared), each fsynced with its folder, and the claim's CDI spec file; "
                    "Unprepare one checkpoint write (fsynced) and removing that spec file. A claim already "
                    "prepared is answered from memory (no GET, no write).")


class SpawnedHost:
    """`multidp run --drivers bench` with ``count`` devices, as a device plugin or (``kubeconfig`` given) through
    DRA; ``extra_env`` is added last (draslices.py passes NODE_NAME and the event FIFO). ``started``: the spawn."""

    def __init__(self, site: Path, kubeconfig: Path | None = None, count: int = 1,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.scratch = short_socket_dir("mdp")
        plugin_dir = self.scratch / "p"
        plugin_dir.mkdir()
        self.kubelet = KubeletStandIn(plugin_dir).start()
        env = bench_env(site, MULTIDP_BENCH_COUNT=str(count))
        extra: list[str] = []
        if kubeconfig is not None:
            boot_id = self.scratch / "boot_id"
            boot_id.write_text(f"{uuid.uuid4()}\n")
            env.update(MULTIDP_BENCH_FRONTEND="dra", MULTIDP_BOOT_ID_FILE=str(boot_id), KUBECONFIG=str(kubeconfig))
            extra = ["--dra-plugins-dir", str(self.scratch / "d"), "--dra-registry-dir", str(self.scratch / "r")]
        environ = {k: v for k, v in os.environ.items() if k != "NODE_NAME"} | env | dict(extra_env or {})
        self.socket = self.scratch / "d" / DRA_NAME / "dra.sock"
        self.registration = self.scratch / "r" / f"{DRA_NAME}-reg.sock"
        self.log = self.scratch / "stderr.log"
        try:
            with open(self.log, "wb") as stderr:
                self.started = time.monotonic()
                self.proc = subprocess.Popen(multidp_command(plugin_dir, "--drivers", "bench", *extra), env=environ,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        except BaseException:
            self.kubelet.shutdown()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    def wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                state = f"exited ({self.proc.returncode})" if self.proc.poll() is not None else "timed out"
                raise RuntimeError(f"multidp {state} waiting for {what}; its stderr ends:\n{tail}")
            time.sleep(0.02)

    def close(self) -> None:
        try:
            terminate(self.proc)
        finally:
            self.kubelet.shutdown()
            shutil.rmtree(self.scratch, ignore_errors=True)


class DraClient:
    """The kubelet's two DRA calls on one host's DRA socket, each claim made in the fake API server first."""

    def __init__(self, host: SpawnedHost, api: FakeApiServer) -> None:
        self.api = api
        self.channel = grpc.insecure_channel(f"unix://{host.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=WAIT_S)
        self._prepare = self.channel.unary_unary(
            method_path(DRA_V1, PREPARE), request_serializer=dra.NodePrepareResourcesRequest.SerializeToString,
            response_deserializer=dra.NodePrepareResourcesResponse.FromString)
        self._unprepare = self.channel.unary_unary(
            method_path(DRA_V1, UNPREPARE), request_serializer=dra.NodeUnprepareResourcesRequest.SerializeToString,
            response_deserializer=dra.NodeUnprepareResourcesResponse.FromString)
        self.pool = pool_name(node_name({}), RESOURCE)
        self.made = 0

    def new_claim(self) -> Any:
        """A fresh claim (new uid) for ``dev-0`` in the API server; the kubelet's Claim message for it."""
        self.made += 1
        name, uid = f"claim-{self.made}", str(uuid.uuid4())
        result = {"request": "dev", "driver": DRA_NAME, "pool": self.pool, "device": device_name(DEVICE)}
        self.api.claims.add(NAMESPACE, name, [result], uid=uid)
        return dra.Claim(namespace=NAMESPACE, uid=uid, name=name)

    def prepare(self, claim: Any) -> None:
        answer = self._prepare(dra.NodePrepareResourcesRequest(claims=[claim]), timeout=10).claims[claim.uid]
        if answer.error or [(d.pool_name, d.device_name) for d in answer.devices] != [(self.pool, device_name(DEVICE))]:
            raise RuntimeError(f"Prepare of claim {claim.name} ({claim.uid}) failed: {answer.error or answer}")

    def unprepare(self, claim: Any) -> None:
        answer = self._unprepare(dra.NodeUnprepareResourcesRequest(claims=[claim]), timeout=10).claims[claim.uid]
        if answer.error:
            raise RuntimeError(f"Unprepare of claim {claim.name} ({claim.uid}) failed: {answer.error}")

    def forget(self, claim: Any) -> None:
        self.api.claims.remove(claim.namespace, claim.name)

    def close(self) -> None:
        self.channel.close()


def timed_us(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e6


def figures(samples: list[float]) -> dict[str, float]:
    return {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99), "n": len(samples)}


def measure(calls: int) -> dict[str, Any]:
    """Prepare / Unprepare / Allocate latencies (``calls`` each after a warm-up) and RSS in both modes."""
    site = short_socket_dir("mdpsite")
    fake_distribution(site, "multidp-bench", {"bench": DRIVER_MODULE})
    api = FakeApiServer("bench-node")
    config_dir = short_socket_dir("mdpk")
    hosts: list[SpawnedHost] = []
    client: DraClient | None = None
    try:
        plugin = SpawnedHost(site)
        hosts.append(plugin)
        through_dra = SpawnedHost(site, api.kubeconfig(config_dir))
        hosts.append(through_dra)
        plugin.kubelet.wait_devices(RESOURCE, lambda v: v.capacity == 1, WAIT_S, "the device-plugin host's device")
        through_dra.wait(through_dra.registration.exists, "the DRA registration socket")
        client = DraClient(through_dra, api)
        return {**memory_and_latency(plugin, through_dra, client, calls), "prepare_includes": PREPARE_INCLUDES,
                "dra_driver": DRA_NAME, "pool": client.pool, "device": device_name(DEVICE)}
    finally:
        if client is not None:
            client.close()
        for host in hosts:
            host.close()
        api.close()
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(site, ignore_errors=True)


def memory_and_latency(plugin: SpawnedHost, through_dra: SpawnedHost, client: DraClient,
                       calls: int) -> dict[str, Any]:
    stub = plugin.kubelet.stub(RESOURCE)
    allocate = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[DEVICE])])
    result: dict[str, Any] = {"rss_mb_dra_before_first_prepare": rss_mb(through_dra.proc.pid)}
    stub.Allocate(allocate, timeout=10)
    first = client.new_claim()
    client.prepare(first)
    time.sleep(SETTLE_S)
    result["rss_mb_device_plugin"], result["rss_mb_dra"] = rss_mb(plugin.proc.pid), rss_mb(through_dra.proc.pid)
    client.unprepare(first)
    client.forget(first)

    kinds = ("allocate", "allocate_floor", "prepare", "unprepare", "dra_floor")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    gets_before = client.api.claims.gets
    for n in range(WARMUP + calls):
        claim, unknown = client.new_claim(), dra.Claim(namespace=NAMESPACE, uid=str(uuid.uuid4()), name="none")
        taken = (timed_us(lambda: stub.Allocate(allocate, timeout=10)),
                 timed_us(lambda: stub.GetDevicePluginOptions(pb.Empty(), timeout=10)),
                 timed_us(partial(client.prepare, claim)), timed_us(partial(client.unprepare, claim)),
                 timed_us(partial(client.unprepare, unknown)))  # nothing to undo: the DRA socket's no-op
        client.forget(claim)
        if n >= WARMUP:
            for kind, value in zip(kinds, taken, strict=True):
                samples[kind].append(value)
    result.update({kind: figures(values) for kind, values in samples.items()})
    result["claim_gets_per_new_prepare"] = (client.api.claims.gets - gets_before) / (WARMUP + calls)

    held = client.new_claim()
    client.prepare(held)
    gets_before = client.api.claims.gets
    again = [timed_us(lambda: client.prepare(held)) for _ in range(WARMUP + calls)][WARMUP:]
    result["prepare_again"] = figures(again)
    result["claim_gets_prepare_again"] = client.api.claims.gets - gets_before
    client.unprepare(held)
    result["rss_mb_device_plugin_after"] = rss_mb(plugin.proc.pid)
    result["rss_mb_dra_after"] = rss_mb(through_dra.proc.pid)
    return result


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        ("Allocate, device plugin", "allocate", "(the comparison)"),
        ("floor: GetDevicePluginOptions", "allocate_floor", "-"),
        ("Prepare, a new claim (1 claim GET, fsynced writes)", "prepare", "no bar yet"),
        ("Unprepare of that claim (1 fsynced write)", "unprepare", "no bar yet"),
        ("Prepare, claim already prepared (no GET)", "prepare_again", "no bar yet"),
        ("floor: Unprepare of an unknown claim", "dra_floor", "-"),
    ]
    allocate = result["allocate"]["p50_us"]
    body = [[label, f"{result[key]['p50_us']:.0f} / {result[key]['p99_us']:.0f}",
             f"{result[key]['p50_us'] / allocate:.2f}", bar] for label, key, bar in rows]
    return ["DRA vs device plugin, one device", "p50 / p99 µs", "p50 ×Allocate", "bar"], body


def summary(result: dict[str, Any]) -> str:
    added = result["rss_mb_dra"] - result["rss_mb_device_plugin"]
    first = result["rss_mb_dra"] - result["rss_mb_dra_before_first_prepare"]
    return (f"{result['prepare']['n']} calls of each after {WARMUP} warm-up, taken in turns; "
            f"{result['claim_gets_per_new_prepare']:.0f} claim GET per new Prepare, "
            f"{result['claim_gets_prepare_again']} for all Prepares of a claim already prepared.\n"
            f"{PREPARE_INCLUDES}\n"
            f"RSS (the bench driver, one device, node-label mode off; no bar yet): device plugin after one Allocate "
            f"{result['rss_mb_device_plugin']:.1f} MB, DRA after one Prepare {result['rss_mb_dra']:.1f} MB "
            f"({added:+.1f} MB). The DRA host had {result['rss_mb_dra_before_first_prepare']:.1f} MB before its "
            f"first Prepare, which imports lightkube and builds the API client ({first:+.1f} MB). After every call: "
            f"{result['rss_mb_device_plugin_after']:.1f} / {result['rss_mb_dra_after']:.1f} MB.")
