"""How a turn ends: one vocabulary for the broker, the store, the metrics and every route.

A turn has a ``TurnStatus``. A turn that did not succeed also has a ``TurnError`` whose
``code`` is a ``StopCode``: why the server ended it (``cancelled``, ``turn_timeout``, ...),
why the CLI could not run it (``cli_failed``, ``cli_not_found``, ...), or what the CLI's own
``result`` said went wrong (``not_logged_in``, ``api_error``, ``max_turns``, ...). A
non-streaming answer takes its HTTP status from ``HTTP_STATUS``, on the native and the
compatible routes alike. No aiohttp here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from claude_server.errors import ApiError, TooManyRequests


class TurnStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (TurnStatus.QUEUED, TurnStatus.RUNNING)


class StopCode(StrEnum):
    # The server ended the turn.
    CANCELLED = "cancelled"
    CLIENT_DISCONNECTED = "client_disconnected"
    SESSION_DELETED = "session_deleted"
    SERVER_SHUTDOWN = "server_shutdown"
    INTERRUPTED = "interrupted"
    TURN_TIMEOUT = "turn_timeout"
    INACTIVITY_TIMEOUT = "inactivity_timeout"
    QUEUE_TIMEOUT = "queue_timeout"
    LINE_TOO_LONG = "line_too_long"
    INTERNAL = "internal"
    # The CLI could not run it.
    CLI_NOT_FOUND = "cli_not_found"
    START_FAILED = "start_failed"
    CLI_FAILED = "cli_failed"
    # The CLI ran it and its result says it failed (``is_error``).
    NOT_LOGGED_IN = "not_logged_in"
    AUTHENTICATION_FAILED = "authentication_failed"
    API_RATE_LIMITED = "api_rate_limited"
    API_OVERLOADED = "api_overloaded"
    API_ERROR = "api_error"
    MAX_TURNS = "max_turns"
    MAX_BUDGET = "max_budget"
    CLI_ERROR = "cli_error"


# The status of a turn the server ended, by why.
STOP_STATUS: dict[StopCode, TurnStatus] = {
    StopCode.CANCELLED: TurnStatus.CANCELLED,
    StopCode.CLIENT_DISCONNECTED: TurnStatus.CANCELLED,
    StopCode.SESSION_DELETED: TurnStatus.CANCELLED,
    StopCode.SERVER_SHUTDOWN: TurnStatus.INTERRUPTED,
    StopCode.INTERRUPTED: TurnStatus.INTERRUPTED,
}

# How a non-streaming request whose turn failed is answered, on every route.
HTTP_STATUS: dict[StopCode, int] = {
    StopCode.CANCELLED: 409,
    StopCode.CLIENT_DISCONNECTED: 409,
    StopCode.SESSION_DELETED: 409,
    StopCode.SERVER_SHUTDOWN: 503,
    StopCode.INTERRUPTED: 503,
    StopCode.TURN_TIMEOUT: 504,
    StopCode.INACTIVITY_TIMEOUT: 504,
    StopCode.QUEUE_TIMEOUT: 429,
    StopCode.LINE_TOO_LONG: 502,
    StopCode.INTERNAL: 500,
    StopCode.CLI_NOT_FOUND: 503,
    StopCode.START_FAILED: 502,
    StopCode.CLI_FAILED: 502,
    StopCode.NOT_LOGGED_IN: 502,
    StopCode.AUTHENTICATION_FAILED: 502,
    StopCode.API_RATE_LIMITED: 429,
    StopCode.API_OVERLOADED: 503,
    StopCode.API_ERROR: 502,
    StopCode.MAX_TURNS: 502,
    StopCode.MAX_BUDGET: 502,
    StopCode.CLI_ERROR: 502,
}


def http_status(code: str) -> int:
    """The HTTP status for an error code (502 for one this server does not know: a failure
    of the CLI behind it)."""
    try:
        return HTTP_STATUS[StopCode(code)]
    except ValueError:
        return 502


@dataclass(frozen=True, slots=True)
class TurnError:
    """Why a turn did not succeed, as its ``error`` event, its row and its HTTP error say."""

    code: str
    message: str
    exit_code: int | None = None
    stderr_tail: str | None = None
    retry_after: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.exit_code is not None or self.stderr_tail is not None:
            out["exit_code"] = self.exit_code
            out["stderr_tail"] = self.stderr_tail
        return out

    def api_error(self, **extra: Any) -> ApiError:
        """The HTTP error a non-streaming request whose turn ended so is answered with."""
        if self.code == StopCode.QUEUE_TIMEOUT:
            return TooManyRequests(self.message, retry_after=float(self.retry_after or 1), code=self.code, **extra)
        details = {k: v for k, v in self.to_json().items() if k not in ("code", "message")}
        return ApiError(self.message, code=self.code, status=http_status(self.code), **details, **extra)

    def event(self) -> bytes:
        """The ``error`` event of the turn's log."""
        return json.dumps({"type": "error", **self.to_json()}).encode()

    @classmethod
    def from_json(cls, raw: Any) -> TurnError | None:
        """From a recorded ``error`` (a row, an event); None when it is not one."""
        if not isinstance(raw, dict):
            return None
        code, message = raw.get("code"), raw.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            return None
        exit_code, tail, retry = raw.get("exit_code"), raw.get("stderr_tail"), raw.get("retry_after")
        return cls(
            code,
            message,
            exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
            tail if isinstance(tail, str) else None,
            retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What the CLI's ``result`` line reported, read defensively (fields change across
    versions). ``total_cost_usd`` is what the CLI printed: on a resumed session it is the
    SESSION's running total (CLI-FACTS, "Costs on a resumed session"); the turn's own cost is
    ``cost_usd``, worked out by the broker from the session's previous total."""

    session_id: str | None
    text: str | None
    subtype: str | None
    is_error: bool
    total_cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None
    duration_ms: float | None
    api_error_status: int | None = None
    stop_reason: str | None = None
    model_usage: dict[str, Any] | None = field(default=None, repr=False)
    run_usage: dict[str, Any] | None = field(default=None, repr=False)  # model_usage_since_last_result
    errors: tuple[str, ...] = ()
    cost_usd: float | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> TurnResult:
        sid, text, subtype = obj.get("session_id"), obj.get("result"), obj.get("subtype")
        usage, model_usage, stop = obj.get("usage"), obj.get("modelUsage"), obj.get("stop_reason")
        run_usage, errors = obj.get("model_usage_since_last_result"), obj.get("errors")
        total = _number(obj.get("total_cost_usd"))
        return cls(
            session_id=sid if isinstance(sid, str) and sid else None,
            text=text if isinstance(text, str) else None,
            subtype=subtype if isinstance(subtype, str) else None,
            is_error=obj.get("is_error") is True,
            total_cost_usd=total,
            usage=usage if isinstance(usage, dict) else None,
            num_turns=_count(obj.get("num_turns")),
            duration_ms=_number(obj.get("duration_ms")),
            api_error_status=_count(obj.get("api_error_status")),
            stop_reason=stop if isinstance(stop, str) else None,
            model_usage=model_usage if isinstance(model_usage, dict) else None,
            run_usage=run_usage if isinstance(run_usage, dict) else None,
            errors=tuple(e for e in errors if isinstance(e, str)) if isinstance(errors, list) else (),
            cost_usd=total,
        )

    def tokens(self, kind: str) -> int:
        """A count from ``usage`` (0 when absent or not a count)."""
        value = (self.usage or {}).get(kind)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def run_cost_usd(self) -> float | None:
        """What this CLI run spent by its own account (``model_usage_since_last_result``
        summed over models), None when the CLI does not say."""
        if not self.run_usage:
            return None
        costs = [_number(f.get("costUSD")) for f in self.run_usage.values() if isinstance(f, dict)]
        known = [c for c in costs if c is not None]
        return sum(known) if known else None

    def public(self) -> dict[str, Any]:
        """The fields a non-streaming answer carries."""
        return {
            "session_id": self.session_id,
            "result": self.text,
            "subtype": self.subtype,
            "is_error": self.is_error,
            "total_cost_usd": self.total_cost_usd,
            "cost_usd": self.cost_usd,
            "usage": self.usage,
            "num_turns": self.num_turns,
            "duration_ms": self.duration_ms,
        }


# Below this a difference in dollars is rounding, not spend.
COST_EPSILON_USD = 1e-9


def own_cost(result: TurnResult, previous_total: float | None) -> float | None:
    """The turn's own cost from the CLI's ``total_cost_usd``.

    On a resumed (or forked) session the CLI reports the session's running total, kept in
    its transcript (measured on 2.1.330: 0.00028, 0.00056, 0.00084 for three alike turns; a
    fork starts from its parent's total), so the turn's cost is the difference to the total
    the session (for a fork: its parent) had after its previous turn. That difference also
    holds what a cancelled turn before it had already spent (the CLI counts its finished
    requests in the next total), so every dollar is counted once. A CLI whose total is
    this run's own figure (a total below the previous one, or equal to the sum of
    ``model_usage_since_last_result``) has it taken as it is."""
    total = result.total_cost_usd
    if total is None or previous_total is None:
        return total
    if total + COST_EPSILON_USD < previous_total:
        return total
    since = result.run_cost_usd()
    if since is not None and previous_total > COST_EPSILON_USD and abs(total - since) <= COST_EPSILON_USD:
        return total
    return max(0.0, total - previous_total)


def warm_cost(result: TurnResult, process_total_before: float | None) -> float | None:
    """The own cost of a turn in a CLI that served turns before it: the CLI's
    ``total_cost_usd`` there is its running total since it started (measured on 2.1.332),
    so the turn's cost is the difference to the total at its previous result; without
    that, ``model_usage_since_last_result``."""
    total = result.total_cost_usd
    if total is None or process_total_before is None or total + COST_EPSILON_USD < process_total_before:
        since = result.run_cost_usd()
        return since if since is not None else total
    return max(0.0, total - process_total_before)
