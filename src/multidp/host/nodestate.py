"""What this node's labels mean for the host: which drivers run, which per-node config each uses.

The label watcher (:mod:`multidp.host.labels`) reports the node's labels; the host
keeps them here and asks, per driver, whether it should run
(``multidp.io/<driver>``, else ``drivers.<name>.enabled``) and whether the
per-node config its labels select (:mod:`multidp.config.bylabel`) differs from the
one its running instance was built with, in which case it is rebuilt the way
a reload rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from multidp.config.bylabel import FRONTEND, FRONTENDS, Selection
from multidp.errors import ConfigError
from multidp.host.labels import Labels, Overrides, overrides_from
from multidp.names import LABEL_PREFIX
from multidp.plugins.factory import DriverFactory

log = logging.getLogger(__name__)


class NodeState:
    """This node's labels (None until read, or when not followed) and what was made of them."""

    def __init__(self) -> None:
        self.labels: Labels | None = None
        self.overrides: Overrides = {}
        self._warned: set[tuple[str, str]] = set()
        # drivers with configByLabel -> the config their running instance was built with ('': the section alone)
        self.per_node: dict[str, str] = {}
        self._noted: dict[str, Selection] = {}  # driver -> the selection last logged
        self._tried: dict[str, str | None] = {}  # driver -> the per-node config its last creation used
        self._last_good: dict[str, bool] = {}  # driver -> its multidp.io/<driver> label's last valid value
        self.refused: dict[str, str] = {}  # running drivers whose new per-node config failed -> why
        self.frontends: dict[str, str] = {}  # running drivers -> the front-end they were built for
        self._last_good_frontend: dict[str, str] = {}  # driver -> its frontend label's last valid value

    def update(self, labels: Mapping[str, str], drivers: Sequence[str]) -> None:
        """Take the node's labels. A ``multidp.io/<driver>`` value that is neither true nor false (a typo)
        keeps the last good one: a typo must not withdraw devices pods use (at first, the config's default)."""
        self.labels = self._frontend_labels(dict(labels), drivers)
        overrides = overrides_from(labels, drivers, self._warned)
        for driver, value in overrides.items():
            if value is not None:
                self._last_good[driver] = value
            elif LABEL_PREFIX + driver in labels:  # set, but to neither true nor false
                overrides[driver] = self._last_good.get(driver)
            else:  # not set: the config decides
                self._last_good.pop(driver, None)
        self.overrides = overrides

    def _frontend_labels(self, labels: Labels, drivers: Sequence[str]) -> Labels:
        """``multidp.io/<driver>.frontend`` checked: a value that is neither front-end keeps the last good one
        (at first, the config's), as a typo in the enable label does: devices in use must not move."""
        for driver in drivers:
            key = f"{LABEL_PREFIX}{driver}.{FRONTEND}"
            value = labels.get(key)
            if value is None:
                self._last_good_frontend.pop(driver, None)
            elif value.strip().lower() in FRONTENDS:
                labels[key] = self._last_good_frontend[driver] = value.strip().lower()
            else:
                if (driver, f"frontend={value}") not in self._warned:
                    self._warned.add((driver, f"frontend={value}"))
                    log.error("node label %s=%r is neither %s: ignored; driver %s keeps its last good front-end "
                              "(the config's if it had none)", key, value, " nor ".join(FRONTENDS), driver)
                if driver in self._last_good_frontend:
                    labels[key] = self._last_good_frontend[driver]
                else:
                    del labels[key]
        return labels

    def desired(self, name: str, factory: DriverFactory) -> tuple[bool, str]:
        """Whether a selected driver should run here: its node label, else its config default."""
        label = self.overrides.get(name)
        if label is False:
            return label, f"disabled by node label {LABEL_PREFIX}{name}=false"
        try:
            resolved = factory.resolved(name)
        except Exception:  # noqa: BLE001 - a bad config or a plugin hook that fails: creating it reports the
            return True, ""  # error and fails it alone; a label change must not stop half-applied
        paused = resolved.pause.paused_by(self.labels) if resolved.pause is not None else None
        if paused:  # over multidp.io/<name>=true too: mig-manager waits for the driver to let go
            return False, paused
        if label is not None:
            return label, ""
        return resolved.enabled, "disabled in config"

    @staticmethod
    def selection(name: str, factory: DriverFactory) -> Selection | None:
        """The per-node config the labels select (None: no configByLabel, or a config error that
        creating the driver reports)."""
        try:
            return factory.resolve(name).selection
        except ConfigError:
            return None

    def config_changed(self, name: str, factory: DriverFactory) -> bool:
        """Whether a running driver's per-node config (or front-end) is no longer the one the labels select."""
        running = self.frontends.get(name)
        try:
            if running is not None and factory.resolve(name).frontend != running:
                return True
        except ConfigError:
            pass  # creating it reports the error
        selection = self.selection(name, factory)
        return (selection.chosen if selection else None) != (self.per_node.get(name) or None)

    def _chosen(self, name: str, factory: DriverFactory) -> str | None:
        selection = self.selection(name, factory)
        return selection.chosen if selection else None

    def tried(self, name: str, factory: DriverFactory) -> None:
        """Record the per-node config a creation of ``name`` is about to be tried with."""
        self._tried[name] = self._chosen(name, factory)

    def try_would_differ(self, name: str, factory: DriverFactory) -> bool:
        """Whether the labels now select another per-node config than the failed driver's last try used
        (then it is worth trying at once; otherwise the failure would only repeat)."""
        return name not in self._tried or self._chosen(name, factory) != self._tried[name]

    def config_refused(self) -> dict[str, bool]:
        """Per driver with a per-node config: whether the one its label asks for cannot be used now."""
        # From the selection last noted for each driver: a scrape resolves no config.
        return {name: name in self.refused or bool((noted := self._noted.get(name)) and noted.unknown)
                for name in self.per_node.keys() | self.refused.keys()}

    def built(self, name: str, selection: Selection | None, frontend: str = FRONTENDS[0]) -> str:
        """Record the config (and front-end) a new instance was built with; the status reason to show."""
        self.refused.pop(name, None)
        self.frontends[name] = frontend
        if selection is None:
            self.per_node.pop(name, None)
        else:
            self.per_node[name] = selection.chosen or ""
        return self.note(name, selection)

    def note(self, name: str, selection: Selection | None) -> str:
        """Log what the label selects once per change (an error when it names no config)."""
        if selection is None:
            self._noted.pop(name, None)
            return ""
        if self._noted.get(name) != selection:
            self._noted[name] = selection
            log.log(logging.ERROR if selection.unknown else logging.INFO, "driver %s: %s", name,
                    selection.describe(name))
        return selection.describe(name)

    def forget(self, name: str) -> None:
        """The driver stopped: a later start logs its selection again."""
        self.per_node.pop(name, None)
        self._noted.pop(name, None)
        self._tried.pop(name, None)
        self.refused.pop(name, None)
        self.frontends.pop(name, None)
