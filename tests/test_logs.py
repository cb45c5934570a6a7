"""Log lines: JSON or text, each with the request id of its request."""

from __future__ import annotations

import json
import logging
import sys

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from claude_server import logs
from claude_server.auth import PRINCIPAL
from claude_server.principal import Principal


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


def test_text_lines_carry_the_extra_fields_the_message_does_not_say() -> None:
    rec = record(
        "turn t1 succeeded",
        turn_id="t1",
        session_id="s1",
        key="alice",
        status="succeeded",
        exit_code=0,
        duration_ms=2113.0,
        cost_usd=0.002,
        model="sonnet",
        error_code=None,
    )
    line = logs.TextFormatter().format(rec)
    assert line.endswith(
        ": turn t1 succeeded session_id=s1 key=alice exit_code=0 duration_ms=2113.0 cost_usd=0.002 model=sonnet"
    )


def test_text_values_with_spaces_or_quotes_are_quoted() -> None:
    line = logs.TextFormatter().format(record("turn t1 failed", error='no "such" file', empty="", tools=["a", "b"]))
    assert line.endswith(r'failed error="no \"such\" file" empty="" tools="[\"a\", \"b\"]"')


def test_extra_fields_and_the_request_id_stay_on_the_first_line_of_a_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("claude_server.turns", logging.ERROR, __file__, 1, "turn t1 crashed", None, True)
        rec.exc_info = sys.exc_info()
    rec.__dict__["session_id"] = "s1"
    token = logs.REQUEST_ID.set("req-3")
    try:
        logs.RequestIdFilter().filter(rec)
    finally:
        logs.REQUEST_ID.reset(token)
    first, *rest = logs.TextFormatter().format(rec).splitlines()
    assert first.endswith("turn t1 crashed session_id=s1 [request req-3]")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "RuntimeError: boom"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_access_line_in_text_adds_only_what_its_message_does_not_say() -> None:
    logger = logging.getLogger("tests.access")
    logger.setLevel(logging.INFO)
    collect = Collect()
    logger.addHandler(collect)
    try:
        request = make_mocked_request("GET", "/api/sessions?limit=5")
        request[PRINCIPAL] = Principal("k1", "alice", admin=False)
        logs.AccessLogger(logger, "").log(request, web.Response(status=200), 0.0015)
    finally:
        logger.removeHandler(collect)
    (rec,) = collect.records
    text = logs.TextFormatter().format(rec)
    # remote is None for a mocked request: left out like every None.
    assert text.endswith(": GET /api/sessions?limit=5 200 0 1.5ms key=alice"), text
    out = json.loads(logs.JsonFormatter().format(rec))
    assert {k: out[k] for k in ("method", "path", "status", "bytes", "duration_ms")} == {
        "method": "GET",
        "path": "/api/sessions",
        "status": 200,
        "bytes": 0,
        "duration_ms": 1.5,
    }
    assert "_text_omit" not in out
