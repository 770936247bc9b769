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
