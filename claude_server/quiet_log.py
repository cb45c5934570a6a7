"""Logging what clients control without letting them flood the log: ``RateLimitedLog`` (at
most one line per kind per interval, plus a count of the rest), ``one_line`` (client text made
safe for a log line) and ``BadRequestFilter`` (aiohttp's ERROR-with-traceback for a request
it could not parse becomes one INFO line)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import HttpProcessingError

log = logging.getLogger("claude_server.connections")

# Each kind of notice (a kind of bad request, refusals, timeouts) is logged at most once per
# interval; how many were left out is logged at its end.
LOG_INTERVAL_S = 10.0
MAX_DETAIL_CHARS = 200


@dataclass
class _Window:
    ends_at: float
    level: int
    left_out: int = 0


class RateLimitedLog:
    """At most one line per kind per interval; the lines left out are counted and reported
    in one line when the interval ends."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._windows: dict[str, _Window] = {}

    def allow(self, kind: str, level: int) -> bool:
        """True when a line of this kind may be logged now; else it is counted."""
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is not None and now >= window.ends_at:
            self._report(kind, window)  # before its timer (or without one: no running loop)
            window = None
        if window is None:
            self._windows[kind] = _Window(now + self._interval_s, level)
            return True
        window.left_out += 1
        if window.left_out == 1:
            # Without a running loop the count waits for the next line of its kind.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(window.ends_at - now, self._report, kind, window)
        return False

    def log(self, kind: str, level: int, msg: str, *args: object) -> None:
        if self._logger.isEnabledFor(level) and self.allow(kind, level):
            self._logger.log(level, msg, *args)

    def _report(self, kind: str, window: _Window) -> None:
        if self._windows.get(kind) is not window:
            return  # reported already
        del self._windows[kind]
        if window.left_out:
            msg = "%d more like it (%s) in the last %g s"
            self._logger.log(window.level, msg, window.left_out, kind, self._interval_s)


def one_line(text: str) -> str:
    """Text a client controls, safe for a log line: one line, printable, bounded."""
    flat = " ".join(text.split())[:MAX_DETAIL_CHARS]
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in flat)


class BadRequestFilter(logging.Filter):
    """For the ``aiohttp.server`` logger: a request aiohttp could not parse (``handle_error``
    in ``web_protocol.py`` logs an ``HttpProcessingError`` at ERROR with its traceback, and
    so does ``start`` for a body that fails to decode while it drains what no handler read)
    becomes one INFO line, rate-limited per kind. Every other record passes unchanged: an
    error of aiohttp or of our code stays an ERROR with its traceback."""

    def __init__(self, limiter: RateLimitedLog) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError) and isinstance(exc.__cause__, HttpProcessingError):
            # A body no handler read, failing to decode while aiohttp drains it after the
            # answer ("Unhandled exception" in web_protocol.py's start()).
            exc = exc.__cause__
        if not isinstance(exc, HttpProcessingError):
            return True
        level = min(record.levelno, logging.INFO)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        if not self._limiter.allow(type(exc).__name__, level):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg = "bad request from %s: %s: %s"
        record.args = (remote, type(exc).__name__, one_line(exc.message or str(exc)))
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = None
        return True


async def bad_request_log_ctx(app: web.Application) -> AsyncIterator[None]:
    """Install ``BadRequestFilter`` for the application's lifetime."""
    server_log = logging.getLogger("aiohttp.server")
    bad_requests = BadRequestFilter(RateLimitedLog(log))
    server_log.addFilter(bad_requests)
    yield
    server_log.removeFilter(bad_requests)
