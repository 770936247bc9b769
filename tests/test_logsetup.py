"""multidp.cli.logsetup: ``--log-format json`` writes one JSON object a line."""

from __future__ import annotations


def test_json_log_lines(capsys):
    import json
    import logging

    from multidp.cli.logsetup import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("json", "info")
    try:
        logging.getLogger("multidp.test").warning("resource %s: %s", "example.com/w", "waiting")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("multidp.test").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "multidp.test"
    assert lines[0]["message"] == "resource example.com/w: waiting" and lines[0]["time"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exception"]


def test_json_lines_carry_driver_resource_device_and_code(capsys):
    import json
    import logging

    from multidp.cli.logsetup import setup_logging
    from multidp.serving.lograte import RateLimitedLog

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging("json", "info")
    log = logging.getLogger("multidp.test")
    try:
        log.error("driver %s (%s) failed: %s", "nvidia", "multidp-nvidia 0.1.0", "NVML not loaded")
        log.warning("resource %s: device %s is Unhealthy: %s", "nvidia.com/gpu", "GPU-1", "XID 79")
        log.info("resource %s: registered", "rdma/hca")
        RateLimitedLog(log)(logging.WARNING, "resource fpga.intel.com/x: allocation refused (INVALID_ARGUMENT): ...",
                            resource="fpga.intel.com/x", driver="fpga", code="INVALID_ARGUMENT")
        log.info("nothing to say about any of them")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    fields = [{k: v for k, v in line.items() if k in ("driver", "resource", "device", "code")} for line in lines]
    assert fields == [
        {"driver": "nvidia"},
        {"resource": "nvidia.com/gpu", "device": "GPU-1"},
        {"resource": "rdma/hca"},
        {"resource": "fpga.intel.com/x", "driver": "fpga", "code": "INVALID_ARGUMENT"},
        {},
    ]


def test_watchdogs_shutdown_race_line_is_dropped_and_nothing_else(caplog):
    import logging

    import multidp.host.watch  # noqa: F401 - installs the filter

    inotify = logging.getLogger("watchdog.observers.inotify")
    inotify.error("InotifyEmitter.queue_events() called when the thread is inactive")
    inotify.error("inotify watch limit reached")
    assert [r.getMessage() for r in caplog.records] == ["inotify watch limit reached"]
