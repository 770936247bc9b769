"""Resolving the nvidia driver's settings from its three sources.

Precedence, highest first: ``drivers.nvidia`` in multidp's config (and the
``MULTIDP_NVIDIA_*`` variables the host applies to it), NVIDIA's environment
variables (``MIG_STRATEGY``, ``PASS_DEVICE_SPECS``, …), NVIDIA's config file
(``configFile``, or NVIDIA's ``CONFIG_FILE`` variable), then defaults. Every
error is a :class:`multidp.ConfigError` naming the key, variable or file; what
NVIDIA's plugin would ignore becomes one warning each (``Settings.warnings``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
from multidp import DNS1123_SUBDOMAIN, ConfigError

from multidp_nvidia.cdi_hooks import HOOK_NAMES
from multidp_nvidia.config import DEFAULT_IGNORED_XIDS, Flags, NvidiaConfig, NvidiaFileConfig, PluginFlags
from multidp_nvidia.dra_mode import DRA, DRA_STRATEGIES, FILE, SECTION, SHORTCUTS, VARIABLES, check_dra_config
from multidp_nvidia.file_naming import discard_naming
from multidp_nvidia.flag_checks import checked_flags
from multidp_nvidia.layering import KEY, RESOURCE_PREFIX, checked_name, pick, plain_root
from multidp_nvidia.nvidia_env import disabled_hooks, env_layer, xid_env
from multidp_nvidia.replicas import check_layer
from multidp_nvidia.sharing import DEFAULT_MPS_ROOT, ReplicaRule, resolve_sharing

STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DEFAULT_RECOVER_AFTER_S = 300.0
DEFAULT_CDI_HOOK_PATH = "/usr/bin/nvidia-ctk"  # NVIDIA's DefaultNvidiaCTKPath


class Settings(msgspec.Struct, frozen=True):
    mig_strategy: str = "none"
    fail_on_init_error: bool = False
    driver_root: str = "/"
    dev_root: str = "/"
    container_driver_root: str = "/"
    pass_device_specs: bool = False
    list_strategies: tuple[str, ...] = ("envvar",)
    id_strategy: str = "uuid"
    cdi_annotation_prefix: str = "cdi.k8s.io/"
    cdi_hook_path: str = DEFAULT_CDI_HOOK_PATH  # "" writes no CDI hooks
    gds: bool = False
    mofed: bool = False
    gdrcopy: bool = False
    # The operator's patterns (multidp's extension), then NVIDIA's defaults: "*" for GPUs; for MIG
    # devices "*" under single, one mig-<profile> per full-instance profile under mixed (inventory).
    gpu_resources: tuple[tuple[str, str], ...] = (("*", "nvidia.com/gpu"),)
    mig_resources: tuple[tuple[str, str], ...] = ()
    imex_channels: tuple[int, ...] = ()  # [] or [0]: injected into every GPU container
    imex_required: bool = False
    cdi_disabled_hooks: frozenset[str] = frozenset()
    replica_rules: tuple[ReplicaRule, ...] = ()
    fail_requests_greater_than_one: bool = False
    mps_root: str = DEFAULT_MPS_ROOT  # host path, named in Allocate answers
    mps_container_root: str = DEFAULT_MPS_ROOT  # this container's view of it, for the readiness check
    health_enabled: bool = True
    ignored_xids: frozenset[int] = frozenset(DEFAULT_IGNORED_XIDS)
    only_xids: frozenset[int] | None = None  # DP_DISABLE_HEALTHCHECKS=all with some enabled
    double_bit_ecc: bool = True
    recover_after: float | None = None  # None: the default (300 s, or the simulation's)
    replica_policy: str = "spread"  # or pack (replicaPolicy, or NVIDIA's sharedDevicesAllocationPolicy)
    poll_interval: float = 5.0
    proc_root: str = "/proc"
    simulated_machine: str = "nvlink8"
    warnings: tuple[str, ...] = ()  # what NVIDIA would ignore or override, one warning each

    @property
    def uses_cdi(self) -> bool:
        return any(s.startswith("cdi-") for s in self.list_strategies)




def _strategies(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ("envvar",)
    items = value if isinstance(value, list) else value.strip("[]").split(",")
    names = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names:
        what = f"unknown strategy {bad[0]!r}" if bad else "at least one strategy is needed"
        raise ConfigError(f"{KEY}.flags.plugin.deviceListStrategy", f"{what} (one of {', '.join(STRATEGIES)})")
    return names


def resolve(config: NvidiaConfig, environ: Mapping[str, str],
            local_path: Callable[[str], Path] = Path, frontend: str = "device-plugin") -> Settings:
    """One :class:`Settings` from the driver's section, NVIDIA's variables and NVIDIA's file.

    ``local_path`` maps the file's path to where it is read (``DriverContext.local_path``).
    An error that the file alone causes names the file (``source``) and its key. With ``frontend``
    ``dra`` what cannot work through DRA is refused first and the answers are CDI only
    (:mod:`multidp_nvidia.dra_mode`).
    """
    file_key = f"{KEY}.configFile" if config.config_file else "CONFIG_FILE"
    file_path = config.config_file or environ.get("CONFIG_FILE") or None
    shortcuts = NvidiaFileConfig(flags=Flags(
        mig_strategy=config.mig_strategy, fail_on_init_error=config.fail_on_init_error,
        nvidia_driver_root=config.nvidia_driver_root, nvidia_dev_root=config.nvidia_dev_root,
        plugin=PluginFlags(pass_device_specs=config.pass_device_specs, device_list_strategy=config.device_list_strategy,
                           device_id_strategy=config.device_id_strategy,
                           container_driver_root=config.container_driver_root,
                           nvidia_ctk_path=config.nvidia_ctk_path),
        mps_root=config.mps_root))
    check_layer(config, f"{KEY}.", None)
    layers: list[Any] = [shortcuts, config, env_layer(environ)]
    named = list(zip((SHORTCUTS, SECTION, VARIABLES), layers, strict=True))
    warnings: list[str] = []
    if not file_path:
        if frontend == DRA:
            check_dra_config(named)
        return _for_frontend(_combine(config, layers, environ, warnings), frontend)
    # Imported here: NVIDIA's file format (its shape tables) is read only on a node that names a file.
    from multidp_nvidia.nvidia_file import read_nvidia_file, source_of

    local = local_path(file_path)
    source = source_of(file_path, local)
    file, warnings = read_nvidia_file(file_path, local, file_key)
    check_layer(file, "", source)
    file, discarded = discard_naming(file, source)  # as NVIDIA v0.20.0 does after reading it
    warnings += discarded
    if frontend == DRA:
        check_dra_config([*named, (FILE, file)], source)
    try:
        return _for_frontend(_combine(config, [*layers, file], environ, warnings), frontend)
    except ConfigError as exc:
        if exc.source is None and _file_is_to_blame(exc, config, layers, file, environ):
            raise ConfigError(exc.key.removeprefix(f"{KEY}."), exc.message, source) from exc
        raise


def _for_frontend(settings: Settings, frontend: str) -> Settings:
    """DRA mode answers with the driver's CDI devices only (its config was checked: nothing else was asked)."""
    if frontend != DRA:
        return settings
    return msgspec.structs.replace(settings, list_strategies=DRA_STRATEGIES, pass_device_specs=False)


def _file_is_to_blame(exc: ConfigError, config: NvidiaConfig, layers: list[Any], file: NvidiaFileConfig,
                      environ: Mapping[str, str]) -> bool:
    """Whether the value in force at ``exc.key`` came from NVIDIA's file: the file alone fails there,
    and the sources above it (multidp's section, NVIDIA's variables) do not."""
    try:
        _combine(NvidiaConfig(), [file], {}, [])
        return False
    except ConfigError as alone:
        if alone.key != exc.key:
            return False
    try:
        _combine(config, layers, environ, [])
    except ConfigError as above:
        return above.key != exc.key
    return True


def _combine(config: NvidiaConfig, layers: list[Any], environ: Mapping[str, str], warnings: list[str]) -> Settings:
    if config.version not in (None, "v1"):
        raise ConfigError(f"{KEY}.version", f"unsupported version {config.version!r} (only v1)")
    driver_root = pick(layers, "flags", "nvidia_driver_root") or "/"
    mig_strategy = pick(layers, "flags", "mig_strategy") or "none"
    if mig_strategy not in ("none", "single", "mixed"):
        raise ConfigError("MIG_STRATEGY", f"must be none, single or mixed, not {mig_strategy!r}")
    sharing = resolve_sharing(layers, mig_strategy, config.mps_container_root)
    id_strategy = pick(layers, "flags", "plugin", "device_id_strategy") or "uuid"
    if id_strategy not in ("uuid", "index"):
        raise ConfigError("DEVICE_ID_STRATEGY", f"must be uuid or index, not {id_strategy!r}")
    gpu_patterns = pick(layers, "resources", "gpus") or []
    mig_patterns = pick(layers, "resources", "mig") or []
    # multidp's extension first, then NVIDIA's default, so that no GPU is left unserved
    gpu_resources = (*((p.pattern, checked_name(p.name, f"{KEY}.resources.gpus[{i}].name"))
                       for i, p in enumerate(gpu_patterns)), ("*", f"{RESOURCE_PREFIX}/gpu"))
    mig_resources = tuple((p.pattern, checked_name(p.name, f"{KEY}.resources.mig[{i}].name"))
                          for i, p in enumerate(mig_patterns))
    health_enabled = pick(layers, "health", "enabled")
    ignored = pick(layers, "health", "ignored_xids")
    ignored_set, only_xids, env_enabled = xid_env(set(DEFAULT_IGNORED_XIDS if ignored is None else ignored), environ)
    recover_after = pick(layers, "health", "recover_after")
    if recover_after is not None and recover_after < 0:
        raise ConfigError(f"{KEY}.health.recoverAfter", f"must be 0 (never) or more seconds, not {recover_after}")
    if config.poll_interval <= 0:
        raise ConfigError(f"{KEY}.pollInterval", f"must be positive, not {config.poll_interval}")
    # These roots become host paths in Allocate answers and CDI specs: whoever writes the config
    # chooses what GPU containers mount, so only plain absolute paths are taken.
    driver_root = plain_root(driver_root, "flags.nvidiaDriverRoot")
    dev_root = plain_root(pick(layers, "flags", "nvidia_dev_root") or driver_root, "flags.nvidiaDevRoot")
    container_root = plain_root(pick(layers, "flags", "plugin", "container_driver_root") or driver_root,
                                "flags.plugin.containerDriverRoot")
    plain_root(config.proc_root, "procRoot")
    hook_path = pick(layers, "flags", "plugin", "nvidia_ctk_path")
    hook_path = DEFAULT_CDI_HOOK_PATH if hook_path is None else hook_path
    # The container runtime runs this program as root on the host: only a plain absolute path is taken.
    if hook_path:
        plain_root(hook_path, "flags.plugin.nvidiaCTKPath")
        if hook_path.endswith("/"):
            raise ConfigError(f"{KEY}.flags.plugin.nvidiaCTKPath", f"{hook_path!r} must name a program, not a folder")
    list_strategies = _strategies(pick(layers, "flags", "plugin", "device_list_strategy"))
    flags = checked_flags(layers, config, any(s.startswith("cdi-") for s in list_strategies))
    hooks_off, hook_warnings = disabled_hooks(environ, HOOK_NAMES)
    annotation_prefix = pick(layers, "flags", "plugin", "cdi_annotation_prefix") or "cdi.k8s.io/"
    if not (annotation_prefix.endswith("/") and DNS1123_SUBDOMAIN.fullmatch(annotation_prefix[:-1])):
        raise ConfigError(f"{KEY}.flags.plugin.cdiAnnotationPrefix",
                          f"{annotation_prefix!r} is not an annotation key prefix (a DNS subdomain and '/')")
    return Settings(
        mig_strategy=mig_strategy,
        fail_on_init_error=bool(pick(layers, "flags", "fail_on_init_error")),
        driver_root=driver_root,
        dev_root=dev_root,
        container_driver_root=container_root,
        pass_device_specs=bool(pick(layers, "flags", "plugin", "pass_device_specs")),
        list_strategies=list_strategies,
        id_strategy=id_strategy,
        cdi_annotation_prefix=annotation_prefix,
        cdi_hook_path=hook_path,
        gds=bool(pick(layers, "flags", "gds_enabled")),
        mofed=bool(pick(layers, "flags", "mofed_enabled")),
        gdrcopy=flags.gdrcopy,
        gpu_resources=gpu_resources,
        mig_resources=mig_resources,
        imex_channels=flags.imex_channels,
        imex_required=flags.imex_required,
        cdi_disabled_hooks=hooks_off,
        replica_rules=sharing.rules,
        fail_requests_greater_than_one=sharing.fail_requests_greater_than_one,
        mps_root=sharing.mps_root,
        mps_container_root=sharing.mps_container_root,
        health_enabled=env_enabled if health_enabled is None else health_enabled,
        ignored_xids=frozenset(ignored_set),
        only_xids=only_xids,
        double_bit_ecc=pick(layers, "health", "double_bit_ecc") is not False,
        recover_after=recover_after,
        replica_policy=flags.replica_policy,
        poll_interval=config.poll_interval,
        proc_root=config.proc_root,
        simulated_machine=config.simulated_machine,
        warnings=(*warnings, *flags.warnings, *hook_warnings, *sharing.warnings),
    )
