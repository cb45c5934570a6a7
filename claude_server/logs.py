"""Logging: text or JSON lines, each carrying the request id of the request it belongs to
(the id travels in a context variable, so a turn's task inherits its request's).

Both formats carry the fields a log call passes as ``extra=``: JSON as keys, text as
``key=value`` pairs after the message (``turn 1f… succeeded session_id=… key=alice
duration_ms=2113.0 cost_usd=0.002 model=sonnet``). The text line leaves out what it
would only repeat: fields that are None, fields whose value is already a word of the
message (the ``status`` of ``turn … succeeded``), and the fields a record names in
``_text_omit`` (the access log's, whose message already shows method, path, status, size and
time; its text line gains only ``remote=`` and ``key=``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from claude_server.auth import PRINCIPAL

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# The attributes every LogRecord has; anything else was passed as ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "request_id"}
# Values that need quotes in a text line, so that each key=value pair stays one word.
_NEEDS_QUOTES = re.compile(r'[\s"=]')


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the log call passed as ``extra=`` (names starting with ``_`` are markers, not fields)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or _NEEDS_QUOTES.search(text) else text


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            out["request_id"] = record.request_id  # type: ignore[attr-defined]
        out.update(extra_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value… [request <id>]``, then the traceback if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Here, not in format(): a traceback comes after the whole first line.
        text = super().formatMessage(record)
        omit = set(getattr(record, "_text_omit", ()))
        words = set(record.message.split())
        pairs = []
        for name, value in extra_fields(record).items():
            if value is None or name in omit:
                continue
            shown = _text_value(value)
            if shown not in words:
                pairs.append(f"{name}={shown}")
        if pairs:
            text = f"{text} {' '.join(pairs)}"
        rid = getattr(record, "request_id", None)
        return f"{text} [request {rid}]" if rid else text


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, size, time, key, request id."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.method == "UNKNOWN" and response.status == 400:
            # aiohttp's stand-in for a request it could not parse: quiet_log.BadRequestFilter
            # already logs those, rate-limited.
            return
        principal = request.get(PRINCIPAL) if isinstance(request, web.Request) else None
        self.logger.info(
            "%s %s %s %s %.1fms",
            request.method,
            request.path_qs,
            response.status,
            response.body_length,
            time * 1000,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": round(time * 1000, 1),
                "remote": request.remote,
                "key": getattr(principal, "name", None),
                "_text_omit": ("method", "path", "status", "bytes", "duration_ms"),
            },
        )


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """The server's log level (at start, and on a reload)."""
    logging.getLogger().setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(level)
    # At DEBUG aiosqlite logs every statement with its parameters: whole events, whole prompts.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLevelName(level)))
