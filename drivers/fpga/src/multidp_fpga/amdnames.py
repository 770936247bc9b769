"""AMD's resource names: shells, U30 common names, MA35, and ``NameCustomize.json``.

The rules are those of AMD's plugin (Xilinx FPGA_as_a_Service ``k8s-device-plugin/server.go``,
``NewFPGADevicePlugin``, ``getMatchKey``, ``getModifiedDSAtype``; ``fpga.go``, ``GetAlveoDevices``),
in its order: a U30 under common names is ``ama_u30``; else, with name customisation on, the first
matching key of the table; else an MA35 is ``MA35``; else ``<shell>-<timestamp>``.
"""

from __future__ import annotations

import json

import msgspec
from multidp import ConfigError, read_small_file

from multidp_fpga.naming import AMD_PREFIX, XILINX_PREFIX

U30_SHELL = "xilinx_u30"  # AMD's VtShell
U30_COMMON = "ama_u30"  # AMD's U30CommonShell
MA35 = "MA35"
#: The fields of AMD's Device struct a name may be built from (server.go reads them by reflection).
FIELDS = ("shellVer", "deviceType", "uuid", "timestamp", "DBDF", "deviceID", "Healthy", "SN")
#: AMD falls back to <shell>-<timestamp> when a customised name is longer than this.
MAX_CUSTOM = 60


class Facts(msgspec.Struct, frozen=True):
    """What AMD's plugin knows of one advertised device, under its field names."""

    shellVer: str  # noqa: N815 - AMD's field names are the table's vocabulary
    timestamp: str
    uuid: str = ""
    DBDF: str = ""  # noqa: N815
    deviceID: str = ""  # noqa: N815
    SN: str = ""
    Healthy: str = "Healthy"  # noqa: N815

    @property
    def deviceType(self) -> str:  # noqa: N802
        # AMD: strings.Split(dsaVer, "_")[1] (its plugin crashes on a shell without "_").
        parts = self.shellVer.split("_")
        return parts[1] if len(parts) > 1 else self.shellVer


def u30_shell(vbnv: str, common_names: bool) -> str:
    """AMD's shellVer: a U30 shell reads as ``ama_u30`` under common names."""
    return U30_COMMON if common_names and U30_SHELL in vbnv else vbnv


def is_u30(shell: str) -> bool:
    return U30_SHELL in shell or U30_COMMON in shell


class Rule(msgspec.Struct, frozen=True):
    key: str
    parts: tuple[str, str, str]  # deviceType, shellVer, timestamp or the uuid's last 6 characters
    name: tuple[tuple[bool, str], ...]  # (literal?, text or field name)

    def matches(self, facts: Facts) -> bool:
        kind, shell, third = self.parts
        uuid_match = len(third) == 6 and _equal(third, facts.uuid)
        return _equal(kind, facts.deviceType) and _equal(shell, facts.shellVer) and (
            uuid_match or _equal(third, facts.timestamp))

    def render(self, facts: Facts) -> str:
        return "".join(text if literal else str(getattr(facts, text)) for literal, text in self.name)


def _equal(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern.casefold() == value.casefold()


class NameTable(msgspec.Struct, frozen=True):
    """NameCustomize.json: ``{"<type>-<shell>-<timestamp|uuid>": "'literal'+field+..."}``, in file order."""

    rules: tuple[Rule, ...]
    source: str

    def match(self, facts: Facts) -> Rule | None:
        # AMD walks a Go map (random order); the first key in the file is a stable choice.
        return next((rule for rule in self.rules if rule.matches(facts)), None)


def load_name_table(path: object, source: str, key: str) -> NameTable:
    """Read and check the table; every key and value AMD could not use is refused, naming it."""
    data = read_small_file(str(path), source)
    try:
        table = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"is not JSON: {exc}", source) from None
    except RecursionError:  # a name table is one flat object; never let nesting take the host down
        raise ConfigError(key, "is not a table of names: its JSON is nested too deeply to read", source) from None
    if not isinstance(table, dict):
        raise ConfigError(key, f"must hold a JSON object of name rules, not {type(table).__name__}", source)
    rules = []
    for match, value in table.items():
        parts = match.split("-")
        if len(parts) != 3:
            raise ConfigError(f"{key}[{match!r}]", "must be <deviceType>-<shellVer>-<timestamp or 6-character "
                              "uuid> ('*' matches anything): AMD's plugin breaks on any other key", source)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}[{match!r}]", f"must be a non-empty string, not {value!r}", source)
        rules.append(Rule(match, (parts[0], parts[1], parts[2]), _parse_name(value, f"{key}[{match!r}]", source)))
    return NameTable(tuple(rules), source)


def _parse_name(value: str, key: str, source: str) -> tuple[tuple[bool, str], ...]:
    pieces = []
    for piece in value.split("+"):
        if "'" in piece:
            pieces.append((True, piece[1:-1]))  # AMD drops the first and last character
        elif piece in FIELDS:
            pieces.append((False, piece))
        elif piece == "index":
            raise ConfigError(key, "uses 'index', the order of a device in AMD's scan: it changes when a card "
                              "comes or goes, so multidp does not name resources after it", source)
        else:
            raise ConfigError(key, f"names {piece!r}, which is neither a quoted literal nor one of "
                              f"{', '.join(FIELDS)}", source)
    return tuple(pieces)


def amd_name(facts: Facts, common_names: bool, table: NameTable | None, legacy: bool) -> tuple[str, str]:
    """The full resource name AMD's plugin gives this device (``amd.com/...``), and a note when a rule was cut."""
    default = f"{facts.shellVer}-{facts.timestamp}"
    if common_names and U30_COMMON in facts.shellVer:
        return f"{AMD_PREFIX}/{facts.shellVer}", ""
    if table is not None:
        rule = table.match(facts)
        if rule is None:
            return f"{AMD_PREFIX}/{default}", ""
        name = rule.render(facts)
        if len(name) <= MAX_CUSTOM:
            return f"{AMD_PREFIX}/{name}", ""
        return f"{AMD_PREFIX}/{default}", (f"{table.source} rule {rule.key!r} gives {facts.DBDF} a name over "
                                           f"{MAX_CUSTOM} characters; using {default}, as AMD's plugin does")
    if facts.shellVer.casefold() == MA35.casefold():
        return f"{AMD_PREFIX}/{facts.shellVer}", ""
    return (f"{XILINX_PREFIX}/fpga-{default}" if legacy else f"{AMD_PREFIX}/{default}"), ""
