"""Logging for the daemon: plain text, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


FIELDS = ("driver", "resource", "device", "code")  # what an operator filters JSON logs by


class ContextFields(logging.Filter):
    """Fields from the house style of our log lines: a message that starts ``driver %s`` names the driver,
    ``resource %s`` the resource, and ``resource %s: device %s`` a device too. Fields a call passes
    itself (``extra=``) win."""

    PATTERNS = (("driver %s", ("driver",)), ("resource %s: device %s", ("resource", "device")),
                ("resource %s", ("resource",)))

    def filter(self, record: logging.LogRecord) -> bool:
        message, args = record.msg, record.args
        if isinstance(message, str) and isinstance(args, tuple):
            for prefix, names in self.PATTERNS:
                if message.startswith(prefix) and len(args) >= len(names):
                    for name, value in zip(names, args, strict=False):
                        if not hasattr(record, name):
                            setattr(record, name, str(value))
                    break
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, then ``driver``, ``resource``, ``device`` and ``code``
    where the line has them, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((name, str(value)) for name in FIELDS if (value := getattr(record, name, None)) is not None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_format: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries whose debug lines say nothing about devices: watchdog logs every file event in the
    # watched folders (the plugin dir's parent is /tmp in tests), so --log-level debug would drown.
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(max(logging.INFO, root.level))


QUIET_LIBRARIES = ("watchdog", "httpx", "httpcore", "lightkube")
