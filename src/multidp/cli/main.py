"""The ``multidp`` command: run, devices, drivers, demo, kubelet, new-driver, config, dra.

Options come from flags, then MULTIDP_* variables, then the config file.
Exit codes: 0 after SIGTERM/SIGINT; 2 for usage and config errors; 1 when
``--strict`` and a driver failed at start (later failures are retried, not fatal).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

# gRPC's C core logs connection details to stderr at INFO; keep only errors.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _libc() -> Any:
    """glibc, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas: with dozens of mostly idle threads, the default (8 per
    core) holds about 2.5 MB more resident memory for no gain. MALLOC_ARENA_MAX wins."""
    libc = _libc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ and hasattr(libc, "mallopt"):
        libc.mallopt(-8, arenas)  # M_ARENA_MAX

from multidp import __version__  # noqa: E402
from multidp.cli.exits import EXIT_DRIVER_FAILED, EXIT_OK, EXIT_USAGE, UsageError  # noqa: E402
from multidp.cli.logsetup import setup_logging  # noqa: E402
from multidp.config.settings import Settings, load_settings, parse_bool, parse_driver_list  # noqa: E402
from multidp.errors import ConfigError  # noqa: E402
from multidp.host.instancelock import InstanceLocked  # noqa: E402

log = logging.getLogger(__name__)

def _bool_flag(text: str) -> bool:
    try:
        return parse_bool(text, "flag")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _drivers_flag(text: str) -> list[str] | None:
    try:
        return parse_driver_list(text, "--drivers")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _common(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", help="config file (YAML) [MULTIDP_CONFIG]")
    add("--plugin-dir", help="kubelet device plugin dir [MULTIDP_PLUGIN_DIR; /var/lib/kubelet/device-plugins]")
    add("--kubelet-socket", help="kubelet registration socket [MULTIDP_KUBELET_SOCKET; <plugin-dir>/kubelet.sock]")
    add("--drivers", type=_drivers_flag, help="drivers that may run: comma list or 'all' [MULTIDP_DRIVERS; all]")
    add("--strict", nargs="?", const=True, type=_bool_flag,
        help="a driver that fails at start is fatal (exit 1); later failures are retried "
        "[MULTIDP_STRICT]")
    add("--simulate", nargs="?", const=True, type=_bool_flag, help="simulated hardware [MULTIDP_SIMULATE]")
    add("--cdi-dir", help="where CDI specs are written [MULTIDP_CDI_DIR; /var/run/cdi]")
    add("--dra-plugins-dir", help="DRA drivers' sockets and checkpoints, one folder each "
        "[MULTIDP_DRA_PLUGINS_DIR; /var/lib/kubelet/plugins]")
    add("--dra-registry-dir", help="the kubelet's plugin registry, for DRA registration "
        "[MULTIDP_DRA_REGISTRY_DIR; /var/lib/kubelet/plugins_registry]")
    add("--pod-resources-socket", help="the kubelet's PodResources API, which devices running pods hold "
        "[MULTIDP_POD_RESOURCES_SOCKET; /var/lib/kubelet/pod-resources/kubelet.sock]")
    add("--metrics-address", help="host:port for /metrics, /healthz, /readyz [MULTIDP_METRICS_ADDRESS; off]")
    add("--probe-address", help="host:port for /healthz and /readyz alone, its own listener "
        "[MULTIDP_PROBE_ADDRESS; off]")
    add("--log-format", choices=["text", "json"], help="[MULTIDP_LOG_FORMAT; text]")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="[MULTIDP_LOG_LEVEL; info]")


def _command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line text is both its entry in ``multidp --help`` and its own help's lead."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    return parser


def build_parser(daemon_only: bool = False) -> argparse.ArgumentParser:
    """The command line; ``daemon_only``: just ``run`` (argparse builds the other commands' hundred
    arguments in about 5 ms, on the daemon's path to its first Register)."""
    parser = argparse.ArgumentParser(prog="multidp", description="Kubernetes device plugin host")
    parser.add_argument("--version", action="version", version=f"multidp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _command(commands, "run", "serve devices to the kubelet (the daemon)")
    _common(run)
    if not daemon_only:
        _one_shot_commands(commands)
    return parser


def _one_shot_commands(commands: Any) -> None:
    devices = _command(commands, "devices", "what each enabled driver finds on this node")
    _common(devices)
    devices.add_argument("--json", action="store_true", help="JSON output (documented in docs/cli.md)")
    drivers = _command(commands, "drivers", "installed drivers, their origin, and whether they run")
    _common(drivers)
    drivers.add_argument("--json", action="store_true", help="JSON output")
    demo = _command(commands, "demo", "the whole host against a kubelet stand-in and simulated hardware")
    demo.add_argument("--drivers", type=_drivers_flag, help="drivers to show (default: all installed)")
    demo.add_argument("--sample", action="store_true", help="also show multidp.testing's sample driver")
    kubelet = _command(commands, "kubelet", "the kubelet stand-in on its own, printing what it receives")
    kubelet.add_argument("--plugin-dir", help="folder for kubelet.sock and the plugins' sockets "
                         "(default: a new short folder under /tmp)")
    kubelet.add_argument("--allocate", action="append", default=[], metavar="RESOURCE=N",
                         help="once N devices of RESOURCE are healthy, allocate them and print the answer")
    new = _command(commands, "new-driver", "write a driver package to start from (tests included)")
    new.add_argument("name", help="the driver's name: entry point, node label multidp.io/<name>, config section")
    new.add_argument("--dir", default=".", help="where to write multidp-<name>/ (default: here)")
    new.add_argument("--domain", default="example.com", help="the resource name's prefix (default: example.com)")
    config = _command(commands, "config", "config file schema and checks")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    schema = _command(config_commands, "schema", "print the config file's JSON schema")
    _common(schema)
    check = _command(config_commands, "check", "validate the config, every driver section included")
    _common(check)
    check.add_argument("--file", action="append", default=[], metavar="POD_PATH=LOCAL_PATH",
                       help="read a file (or folder) the config names at POD_PATH from LOCAL_PATH (repeatable)")
    dra = _command(commands, "dra", "for drivers served through DRA")
    dra_commands = dra.add_subparsers(dest="dra_command", required=True, metavar="ACTION")
    classes = _command(dra_commands, "classes", "print a DeviceClass for each resource of each driver in DRA mode")
    _common(classes)
    classes.add_argument("--json", action="store_true", help="a JSON list instead of YAML documents")


FLAG_KEYS = ("config", "plugin_dir", "kubelet_socket", "drivers", "strict", "simulate", "cdi_dir",
             "dra_plugins_dir", "dra_registry_dir", "pod_resources_socket",
             "metrics_address", "probe_address", "log_format", "log_level")


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k, None) for k in FLAG_KEYS}


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(daemon_only=words[:1] == ["run"]).parse_args(words)
    if args.command == "run":
        _limit_malloc_arenas()
    try:
        return _dispatch(args)
    except InstanceLocked as exc:  # another multidp serves this plugin dir: not a config error
        print(f"multidp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `multidp devices --json | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except ConfigError as exc:
        print(f"multidp: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"multidp: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from multidp.cli.demo import run_demo

        return run_demo(drivers=args.drivers, with_sample=args.sample)
    if args.command == "new-driver":
        from pathlib import Path

        from multidp.cli.newdriver import new_driver

        target = new_driver(args.name, Path(args.dir), args.domain)
        print(f"wrote {target}; next: pip install -e '{target}[test]' && pytest {target}")
        return EXIT_OK
    if args.command == "kubelet":
        from pathlib import Path

        from multidp.cli.kubelet import parse_allocations, run_kubelet
        from multidp.testing.util import short_socket_dir

        allocations = parse_allocations(args.allocate)
        return run_kubelet(Path(args.plugin_dir) if args.plugin_dir else short_socket_dir("mdp-kubelet"),
                           allocations, lambda line: print(line, flush=True))
    flags = flags_from(args)
    settings = load_settings(flags)
    setup_logging(settings.log_format, settings.log_level if args.command == "run" else "warning")
    if args.command == "run":
        return run_daemon(settings, flags)
    from multidp.cli import commands  # the one-shot commands; the daemon does not pay for them

    if args.command == "devices":
        return commands.list_devices(settings, args.json)
    if args.command == "drivers":
        return commands.list_drivers(settings, args.json)
    if args.command == "dra":
        from multidp.cli import draclasses

        return draclasses.print_classes(settings, args.json)
    if args.config_command == "schema":
        return commands.config_schema(settings)
    return commands.config_check(settings, commands.parse_file_maps(args.file))


SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def run_daemon(settings: Settings, flags: dict[str, Any], registry: Any = None) -> int:
    """``multidp run``: serve until SIGTERM/SIGINT; SIGHUP reloads the config.

    The signals are blocked before any thread starts and taken with sigwait: a
    Python handler runs only in the main thread, and a signal the kernel hands
    to one of gRPC's threads would leave a main thread blocked in a wait
    asleep for good (seen: SIGTERM ignored until the kubelet's SIGKILL).
    """
    from multidp.host.host import Host
    from multidp.plugins.registry import PluginRegistry

    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    host = Host(settings, registry or PluginRegistry())
    observers: list[Any] = []
    try:
        observers = _observability(settings, host)
        return _serve(host, settings, flags)
    finally:
        host.stop()
        for listener in observers:
            listener.stop()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _observability(settings: Settings, host: Any) -> list[Any]:
    """The HTTP listeners the settings ask for; one that cannot bind retries on its own (devices first)."""
    if not settings.metrics_address and not settings.probe_address:
        return []
    from multidp.observe.listeners import listeners_for

    return listeners_for(settings.metrics_address, settings.probe_address, host)


SIGNAL_POLL_S = 0.1  # how often the main thread looks whether start-up or a reload is done, meanwhile


class _InBackground:
    """``fn()`` on its own thread, so that the main thread keeps taking signals meanwhile: a
    driver whose creation hangs (up to ``timeouts.create``) must not hold SIGTERM back."""

    def __init__(self, fn: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()
        # A daemon, and so are the bring-up threads it starts: exiting never waits for a hung create.
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self.error = exc
        finally:
            self.done.set()


def _taking_signals(what: str, fn: Callable[[], object]) -> tuple[bool, bool]:
    """Run ``fn`` while taking signals: (it finished, a SIGHUP came meanwhile). It has not
    finished when SIGTERM/SIGINT came first; what it raised is raised here."""
    work = _InBackground(fn, f"host-{what}")
    reload_asked = False
    while not work.done.is_set():
        info = signal.sigtimedwait(SIGNALS, SIGNAL_POLL_S)
        if info is None:
            continue
        if info.si_signo == signal.SIGHUP:
            log.info("SIGHUP during %s: reloading once it is done", what)
            reload_asked = True
            continue
        log.info("stopping during %s; drivers still being created are not waited for", what)
        return False, reload_asked
    if work.error is not None:
        raise work.error
    return True, reload_asked


def _serve(host: Any, settings: Settings, flags: dict[str, Any]) -> int:
    from multidp.plugins.factory import UnknownDrivers

    try:
        started, reload_asked = _taking_signals("start-up", host.start)
    except UnknownDrivers as exc:
        raise UsageError(str(exc)) from None
    if not started:
        return EXIT_OK
    if settings.strict and host.failed_drivers:
        log.error("--strict: driver(s) failed at start: %s; exiting", ", ".join(s.name for s in host.failed_drivers))
        return EXIT_DRIVER_FAILED
    # What start-up made (modules, drivers, first snapshots) lives as long as the process: keep
    # the cyclic collector from walking it again and again, which showed as 20-30 ms pauses in
    # ListAndWatch updates of 10,000-device resources.
    gc.freeze()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)  # give back what start-up (imports, first scans) freed
    while reload_asked or signal.sigwait(SIGNALS) == signal.SIGHUP:
        finished, reload_asked = _taking_signals("reload", lambda: _reload(host, flags))
        if not finished:
            return EXIT_OK
    log.info("stopping")
    return EXIT_OK


def _reload(host: Any, flags: dict[str, Any]) -> None:
    log.info("SIGHUP: reloading the config")
    try:
        new = load_settings(flags)
    except ConfigError as exc:
        log.error("config reload failed, keeping the running config: %s", exc)
        return
    try:
        host.reload(new)
    except Exception:  # noqa: BLE001 - a reload must never take the daemon down
        log.exception("config reload failed")


if __name__ == "__main__":
    sys.exit(main())
