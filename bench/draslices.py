"""The --dra section's API side: a health change → its taint in the ResourceSlices, and a 1,000-device pool.

Hosts spawned as dra.py's DRA host, but with NODE_NAME set to the fake API server's Node, which makes them
publish (and follow node labels, as on a real node). A byte in the bench driver's event FIFO flips
``dev-0`` and calls notify(), as for --serving's health figure. A watch on the fake server's slice store
ends each figure when the write completing the pool's newest generation is stored (bench/README.md).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dra import DRA_NAME, DRIVER_MODULE, SpawnedHost
from measure import RESOURCE, WAIT_S

from multidp.dra.names import device_name, pool_name
from multidp.testing import FakeApiServer, fake_distribution, short_socket_dir
from multidp.testing.slicerules import SCHEMA
from multidp.testing.slices import WatchDropped

NODE = "bench-node"
POOL = pool_name(NODE, RESOURCE)
DEVICE = device_name("dev-0")  # the device the event FIFO flips
TAINT_KEY = "multidp.io/unhealthy"
BIG_POOL = 1000
PER_SLICE, PER_TAINTED_SLICE = 128, 64
PAUSE_S = 0.2  # between flips: each health change finds the host idle, as a real one mostly does
SETTLE_S = 0.5  # after the first publication, before the first flip: start-up work done
BAR_MS = 1000  # every figure with a bar: its worst

Slices = list[dict[str, Any]]
Wanted = Callable[[dict[str, Slices]], bool]

INCLUDES = ("Health → taint: the FIFO byte → the bench driver's notify() → the host's scan → the publisher's "
            "wake-up, its LIST of the node's slices, the writes of the pool's next generation (PUTs of the slices "
            "it has, POSTs of new ones; DELETEs of the rest come after) → the write that completes that generation "
            "stored by the fake API server (HTTP on 127.0.0.1 with lightkube's httpx client, JSON, the fake's "
            "checks: with kubernetes-validate installed, the 1.34 JSON schema, in Python). No debounce on the way. "
            "Spawn → pool: the Popen of `multidp run` → Python start and imports, config, the driver's first scan, "
            "the lightkube client, the Node's UID, the LIST and the first generation's POSTs → its last one stored "
            "(the host starts in node-label mode too, as NODE_NAME is set).")


def complete_pools(slices: Iterable[dict[str, Any]]) -> dict[str, Slices]:
    """Each pool's newest generation that has all of its slices (the one a consumer uses)."""
    by_pool: dict[str, dict[int, Slices]] = {}
    for obj in slices:
        pool = obj["spec"]["pool"]
        by_pool.setdefault(pool["name"], {}).setdefault(pool["generation"], []).append(obj)
    found: dict[str, Slices] = {}
    for name, generations in by_pool.items():
        for generation in sorted(generations, reverse=True):
            objs = generations[generation]
            if len(objs) == objs[0]["spec"]["pool"]["resourceSliceCount"]:
                found[name] = objs
                break
    return found


def pool_state(devices: int, tainted: bool) -> Wanted:
    """The pool lists ``devices`` devices in as many slices as the publisher makes, ``dev-0`` tainted or not."""
    slices = math.ceil(devices / (PER_TAINTED_SLICE if tainted else PER_SLICE))

    def holds(pools: dict[str, Slices]) -> bool:
        objs = pools.get(POOL)
        if objs is None or len(objs) != slices:
            return False
        listed = [d for obj in objs for d in obj["spec"].get("devices") or []]
        flipped = [d for d in listed if d.get("name") == DEVICE]
        if len(listed) != devices or len(flipped) != 1:
            return False
        return any(t.get("key") == TAINT_KEY for t in flipped[0].get("taints") or []) == tainted

    return holds


class SliceWatch:
    """The bench driver's slices on NODE as a watch on the fake API server delivers them, and the moment a
    wanted state first held."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api = api
        self.first_at: float | None = None
        self._slices: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._wanted: Wanted | None = None
        self._hit: float | None = None
        events = api.slices.watch({"fieldSelector": [f"spec.nodeName={NODE},spec.driver={DRA_NAME}"]})
        self._thread = threading.Thread(target=self._follow, args=(events,), daemon=True, name="slice-watch")
        self._thread.start()

    def _follow(self, events: Iterable[dict[str, Any]]) -> None:
        try:
            for event in events:
                now = time.monotonic()
                obj = event["object"]
                with self._cond:
                    if event["type"] == "DELETED":
                        self._slices.pop(obj["metadata"]["name"], None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._slices[obj["metadata"]["name"]] = obj
                        self.first_at = self.first_at or now
                    self._check(now)
        except WatchDropped:  # close()
            return

    def _check(self, now: float) -> None:
        if self._wanted is not None and self._hit is None and self._wanted(complete_pools(self._slices.values())):
            self._hit = now
            self._cond.notify_all()

    def expect(self, wanted: Wanted) -> None:
        """From now on, note when ``wanted`` first holds, and the first slice written (call before causing the
        change; a state that holds already counts at once)."""
        with self._cond:
            self._wanted, self._hit, self.first_at = wanted, None, None
            self._check(time.monotonic())

    def wait(self, what: str, host: SpawnedHost | None = None) -> float:
        """When the expected state first held (time.monotonic()); a clear error if it never did or ``host``,
        running, exited."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while self._hit is None:
                ended = host is not None and host.proc.poll() is not None
                if ended or time.monotonic() > deadline:
                    tail = f"; its stderr ends:\n{host.log.read_text(errors='replace')[-2000:]}" if host else ""
                    raise RuntimeError(f"{'multidp exited' if ended else 'timed out'} waiting for {what}{tail}")
                self._cond.wait(0.5)
            return self._hit

    def close(self) -> None:
        self.api.slices.drop_watches()
        self._thread.join(timeout=5)


class ServerClock:
    """The time the fake API server spends in its slice store (``slices.answer``: the fake's checks, the
    JSON-schema check when on, copies), summed over requests; the HTTP and JSON around it are not in it."""

    def __init__(self, api: FakeApiServer) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()
        inner = api.slices.answer

        def answer(method: str, name: str, query: Mapping[str, list[str]], body: bytes) -> tuple[int, dict[str, Any]]:
            start = time.perf_counter()
            try:
                return inner(method, name, query, body)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - start

        api.slices.answer = answer  # type: ignore[method-assign]


def spawn(site: Path, api: FakeApiServer, config_dir: Path, watch: SliceWatch, devices: int,
          fifo: str) -> tuple[SpawnedHost, dict[str, float]]:
    """A DRA host with ``devices`` devices publishing to ``api``; spawn → first slice and → complete pool."""
    watch.expect(pool_state(devices, tainted=False))
    host = SpawnedHost(site, api.kubeconfig(config_dir), count=devices,
                       extra_env={"NODE_NAME": NODE, "MULTIDP_BENCH_FIFO": fifo})
    try:
        done = watch.wait(f"the pool of {devices} devices in the API", host)
    except BaseException:
        host.close()
        raise
    return host, {"spawn_to_first_slice_ms": ((watch.first_at or done) - host.started) * 1e3,
                  "spawn_to_pool_ms": (done - host.started) * 1e3}


def fifo_writer(fifo: str, host: SpawnedHost) -> int:
    """The FIFO opened for writing once the driver's thread reads it; an error, not a hang, if it never does."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO or host.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bench driver never read its event FIFO {fifo}: {exc}") from exc
            time.sleep(0.02)
            continue
        os.set_blocking(fd, True)
        return fd


def flips(host: SpawnedHost, watch: SliceWatch, clock: ServerClock, fifo: str, devices: int,
          rounds: int) -> dict[str, Any]:
    """``rounds`` times: dev-0 unhealthy → its taint in the newest complete generation, then healthy → none.
    Each flip also notes when its first slice write was stored, and the fake server's time in between."""
    kinds = ("taint", "untaint")
    samples: dict[str, dict[str, list[float]]] = {kind: {"ms": [], "first": [], "server": []} for kind in kinds}
    requests: list[int] = []
    time.sleep(SETTLE_S)
    with open(fifo_writer(fifo, host), "wb", buffering=0) as events:
        for _ in range(rounds):
            for kind in kinds:
                asked, spent = len(watch.api.slices.requests), clock.seconds
                watch.expect(pool_state(devices, tainted=kind == "taint"))
                start = time.monotonic()
                events.write(b"x")
                done = watch.wait(f"dev-0 {kind}ed in the API", host)
                taken = samples[kind]
                taken["ms"].append((done - start) * 1e3)
                taken["server"].append((clock.seconds - spent) * 1e3)
                taken["first"].append(((watch.first_at or done) - start) * 1e3)
                time.sleep(PAUSE_S)  # the flip's last requests (DELETEs after the pool is complete) land
                requests.append(len(watch.api.slices.requests) - asked)
    result: dict[str, Any] = {kind: {"p50_ms": statistics.median(v["ms"]), "max_ms": max(v["ms"]), "n": len(v["ms"]),
                                     "first_write_p50_ms": statistics.median(v["first"]),
                                     "fake_server_p50_ms": statistics.median(v["server"])}
                              for kind, v in samples.items()}
    result["slice_requests_per_flip"] = statistics.median(requests)
    return result


RUNS = (("one_device", 1, True), ("pool_1000", BIG_POOL, True), ("pool_1000_no_schema", BIG_POOL, False))
SPAWNS = 3  # of each host, for spawn → pool (the first one's flips are measured too)


def measure(rounds: int) -> dict[str, Any]:
    """One host at a time: one device (health → taint), a pool of 1,000 devices, and that pool again with the
    fake server's JSON-schema check off (how much of the time is the fake's)."""
    site = short_socket_dir("mdpsite")
    fake_distribution(site, "multidp-bench", {"bench": DRIVER_MODULE})
    api = FakeApiServer(NODE)
    clock = ServerClock(api)
    config_dir = short_socket_dir("mdpk")
    fifo = str(config_dir / "events.fifo")
    os.mkfifo(fifo)
    watch = SliceWatch(api)
    result: dict[str, Any] = {"node": NODE, "pool": POOL, "includes": INCLUDES, "spawns": SPAWNS}
    try:
        for key, devices, schema in RUNS:
            api.slices.validate = schema
            run: dict[str, Any] = {"devices": devices, "schema_check": schema and SCHEMA is not None}
            starts: list[dict[str, float]] = []
            for spawned in range(SPAWNS):
                host, started = spawn(site, api, config_dir, watch, devices, fifo)
                starts.append(started)
                try:
                    if spawned == 0:
                        run.update(flips(host, watch, clock, fifo, devices, rounds))
                finally:
                    host.close()
                api.slices.delete_all(node=NODE)  # whatever the host left: the next one starts bare
                watch.expect(lambda pools: not pools)
                watch.wait("the slices deleted")
            for figure in ("spawn_to_first_slice_ms", "spawn_to_pool_ms"):
                values = [s[figure] for s in starts]
                run[figure] = {"p50_ms": statistics.median(values), "max_ms": max(values), "n": len(values)}
            result[key] = run
        result["invalid_writes"] = list(api.slices.invalid)
        return result
    finally:
        watch.close()
        api.close()
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(site, ignore_errors=True)


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    one, big, bare = result["one_device"], result["pool_1000"], result["pool_1000_no_schema"]

    def row(label: str, figure: dict[str, float], first: float, server: str, barred: bool) -> list[str]:
        met = ("yes" if figure["max_ms"] <= BAR_MS else "NO") if barred else "-"
        return [label, f"{figure['p50_ms']:.0f} / {figure['max_ms']:.0f}", f"{first:.0f}", server,
                f"≤ {BAR_MS}" if barred else "-", met]

    body = [row(label, f, f["first_write_p50_ms"], f"{f['fake_server_p50_ms']:.0f}", barred) for label, f, barred in (
        ("health → taint in the API, 1 device", one["taint"], True),
        ("recovery → taint gone, 1 device", one["untaint"], True),
        ("health → taint, 1,000 devices (8 → 16 slices)", big["taint"], True),
        ("recovery → taint gone, 1,000 devices (16 → 8)", big["untaint"], True),
        ("  the same, fake server without its schema check: taint", bare["taint"], False),
        ("  recovery", bare["untaint"], False))]
    body += [row(label, run["spawn_to_pool_ms"], run["spawn_to_first_slice_ms"]["p50_ms"], "", barred)
             for label, run, barred in (("spawn → pool in the API, 1 device", one, False),
                                        ("spawn → pool in the API, 1,000 devices (8 slices)", big, True),
                                        ("  the same, fake server without its schema check", bare, False))]
    return ["DRA ResourceSlices", "ms p50 / worst", "→ 1st write p50", "fake server p50", "bar", "met"], body


def summary(result: dict[str, Any]) -> str:
    one, big = result["one_device"], result["pool_1000"]
    return (f"{one['taint']['n']} flips each way, {PAUSE_S:g} s apart, on the first of {result['spawns']} spawns of "
            f"each host (spawn → pool: median / worst of the {result['spawns']}); node {result['node']}, pool "
            f"{result['pool']}. '→ 1st write': the change (or the spawn) → the first slice write stored; 'fake "
            f"server': the time in its slice store meanwhile (schema check, copies). Slice requests per flip "
            f"(median): {one['slice_requests_per_flip']:g} with 1 device, {big['slice_requests_per_flip']:g} with "
            f"1,000.\n{INCLUDES}\nWrites the fake server refused: {len(result['invalid_writes'])}.")
