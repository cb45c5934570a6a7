"""What the CLI asks the client during a turn: permission for a tool, and Claude's questions.

With ``--permission-prompt-tool stdio`` the CLI asks about every tool use that its
permission mode and rules leave open with a ``can_use_tool`` control request, and waits
(CLI-FACTS, "Interactive mode"); its question tool ``AskUserQuestion`` arrives the same way.
Each request becomes an event of the turn's log (``permission_request`` or ``question``,
replayed on reconnect like any event); the answer comes over HTTP, goes back to the CLI as
the control response, and is logged as ``permission_resolved`` or ``question_resolved``.
Unanswered requests are denied after the timeout, and when the turn ends. No aiohttp here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from claude_server.errors import BadRequest, Conflict, NotFound

log = logging.getLogger(__name__)

QUESTION_TOOL = "AskUserQuestion"
# The suggestions a client may have remembered: rules and directories, never a mode (the
# operator's policy on modes is checked when a turn starts, not here).
REMEMBERABLE = ("addRules", "addDirectories")


@dataclass
class Pending:
    request_id: str
    kind: str  # "permission" or "question"
    tool_name: str
    input: dict[str, Any]
    request: dict[str, Any] = field(repr=False)
    asked_at: float = field(default_factory=time.time)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def event(self) -> dict[str, Any]:
        if self.kind == "question":
            questions = self.input.get("questions")
            return {
                "type": "question",
                "request_id": self.request_id,
                "questions": questions if isinstance(questions, list) else [],
                "asked_at": self.asked_at,
            }
        suggestions = self.request.get("permission_suggestions")
        out: dict[str, Any] = {
            "type": "permission_request",
            "request_id": self.request_id,
            "tool_name": self.tool_name,
            "input": self.input,
            "description": self.request.get("description"),
            "suggestions": suggestions if isinstance(suggestions, list) else [],
            "asked_at": self.asked_at,
        }
        for key in ("tool_use_id", "blocked_path", "display_name"):
            if isinstance(self.request.get(key), str):
                out[key] = self.request[key]
        return out


def _remembered(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The CLI's own suggestions for "allow this kind of use from now on", for this session."""
    suggestions = request.get("permission_suggestions")
    if not isinstance(suggestions, list):
        return []
    out = []
    for suggestion in suggestions:
        if not isinstance(suggestion, dict) or suggestion.get("type") not in REMEMBERABLE:
            continue
        if suggestion.get("type") == "addRules" and suggestion.get("behavior", "allow") != "allow":
            continue
        out.append({**suggestion, "destination": "session"})
    return out


class Prompts:
    """The open requests of one turn. ``answer`` is how a decision reaches the CLI;
    ``log`` appends a server event to the turn's log."""

    def __init__(
        self,
        answer: Callable[[str, dict[str, Any]], None],
        log_event: Callable[[dict[str, Any]], None],
        timeout_s: float,
    ) -> None:
        self._answer = answer
        self._log = log_event
        self.timeout_s = timeout_s
        self.pending: dict[str, Pending] = {}
        self._resolved: set[str] = set()
        self.waiting_since: float | None = None  # monotonic: the inactivity timeout does not run meanwhile

    def ask(self, request_id: str, request: dict[str, Any]) -> None:
        """The CLI asks about a tool use: log it, wait for the client."""
        tool = request.get("tool_name")
        tool_input = request.get("input")
        pending = Pending(
            request_id,
            "question" if tool == QUESTION_TOOL else "permission",
            tool if isinstance(tool, str) else "unknown",
            tool_input if isinstance(tool_input, dict) else {},
            request,
        )
        self.pending[request_id] = pending
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(self.timeout_s, self._timed_out, request_id)
        self._log(pending.event())

    def _timed_out(self, request_id: str) -> None:
        pending = self.pending.get(request_id)
        if pending is not None:
            what = "question" if pending.kind == "question" else f"permission request for {pending.tool_name}"
            message = (
                f"The {what} was not answered within {self.timeout_s:g}s (CLAUDE_SERVER_PERMISSION_TIMEOUT); denied"
            )
            self._resolve(pending, {"behavior": "deny", "message": message}, "timeout")

    def find(self, request_id: str, kind: str) -> Pending:
        """The open request, or 404 (never asked, or of another kind) / 409 (answered)."""
        pending = self.pending.get(request_id)
        if pending is not None and pending.kind == kind:
            return pending
        if request_id in self._resolved:
            raise Conflict(f"Request {request_id} was already answered", code="already_answered")
        raise NotFound(f"No {kind} request {request_id} in this turn", code=f"{kind}_not_found")

    def allow(self, pending: Pending, updated_input: dict[str, Any] | None, remember: bool, by: str) -> None:
        decision: dict[str, Any] = {"behavior": "allow", "updatedInput": updated_input or pending.input}
        if remember:
            decision["updatedPermissions"] = _remembered(pending.request)
        self._resolve(pending, decision, by, remember=remember)

    def deny(self, pending: Pending, message: str, interrupt: bool, by: str) -> None:
        self._resolve(pending, {"behavior": "deny", "message": message, "interrupt": interrupt}, by)

    def answer_question(self, pending: Pending, answers: dict[str, Any], by: str) -> None:
        for question, answer in answers.items():
            if not isinstance(answer, str):
                raise BadRequest(
                    f"answers[{question!r}] must be a string (the chosen label; several joined with ', ')",
                    code="invalid_request",
                    field="answers",
                )
        self._resolve(pending, {"behavior": "allow", "updatedInput": {**pending.input, "answers": answers}}, by)

    def cancelled(self, request_id: str) -> None:
        """The CLI stopped waiting for the request (its turn was interrupted)."""
        pending = self.pending.get(request_id)
        if pending is not None:
            decision = {"behavior": "deny", "message": "Claude Code withdrew the request"}
            self._resolve(pending, decision, "claude", tell_cli=False)

    def deny_all(self, message: str, by: str, *, interrupt: bool = False, tell_cli: bool = True) -> int:
        """Deny every open request (the turn is being interrupted, or ended)."""
        open_requests = list(self.pending.values())
        for pending in open_requests:
            decision = {"behavior": "deny", "message": message, "interrupt": interrupt}
            self._resolve(pending, decision, by, tell_cli=tell_cli)
        return len(open_requests)

    def _resolve(
        self, pending: Pending, decision: dict[str, Any], by: str, *, remember: bool = False, tell_cli: bool = True
    ) -> None:
        del self.pending[pending.request_id]
        self._resolved.add(pending.request_id)
        if pending.timer is not None:
            pending.timer.cancel()
        if not self.pending:
            self.waiting_since = None
        if tell_cli:
            self._answer(pending.request_id, decision)
        behavior = decision["behavior"]
        event: dict[str, Any] = {
            "type": "question_resolved" if pending.kind == "question" else "permission_resolved",
            "request_id": pending.request_id,
            "behavior": behavior,
            "by": by,
        }
        if behavior == "deny":
            event["message"] = decision["message"]
        elif pending.kind == "question":
            event["answers"] = decision["updatedInput"].get("answers", {})
        elif remember:
            event["remember"] = True
        log.info("request %s (%s %s): %s by %s", pending.request_id, pending.kind, pending.tool_name, behavior, by)
        self._log(event)

    def public(self) -> list[dict[str, Any]]:
        return [p.event() for p in self.pending.values()]


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()
