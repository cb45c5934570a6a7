"""Log lines: JSON or text, each with the request id of its request."""

from __future__ import annotations

import json
import logging

from claude_server import logs


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("claude_server.turns", logging.INFO, __file__, 1, message, None, None)
    rec.__dict__.update(extra)
    logs.RequestIdFilter().filter(rec)
    return rec


def test_json_lines_carry_the_request_id_and_the_extra_fields() -> None:
    token = logs.REQUEST_ID.set("req-1")
    try:
        line = logs.JsonFormatter().format(record("turn t1 succeeded", turn_id="t1", cost_usd=0.5))
    finally:
        logs.REQUEST_ID.reset(token)
    out = json.loads(line)
    assert out["message"] == "turn t1 succeeded" and out["level"] == "INFO"
    assert out["request_id"] == "req-1" and out["turn_id"] == "t1" and out["cost_usd"] == 0.5
    assert out["time"].endswith("Z")


def test_text_lines_name_the_request() -> None:
    token = logs.REQUEST_ID.set("req-2")
    try:
        line = logs.TextFormatter().format(record("hello"))
    finally:
        logs.REQUEST_ID.reset(token)
    assert line.endswith("hello [request req-2]")
    assert "[request" not in logs.TextFormatter().format(record("outside a request"))
