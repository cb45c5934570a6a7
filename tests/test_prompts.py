"""Permission requests and questions of one turn: what is logged, what reaches the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from claude_server.errors import ApiError
from claude_server.outcome import TurnResult, warm_cost
from claude_server.prompts import Prompts

SUGGESTIONS = [
    {
        "type": "addRules",
        "rules": [{"toolName": "Bash", "ruleContent": "echo hi *"}],
        "behavior": "allow",
        "destination": "localSettings",
    },
    {"type": "addDirectories", "directories": ["/w"], "destination": "session"},
    {"type": "setMode", "mode": "bypassPermissions", "destination": "session"},
    {"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "deny", "destination": "session"},
]
BASH = {
    "subtype": "can_use_tool",
    "tool_name": "Bash",
    "input": {"command": "echo hi > f.txt"},
    "description": "write",
    "permission_suggestions": SUGGESTIONS,
    "tool_use_id": "toolu_1",
}
QUESTION = {
    "subtype": "can_use_tool",
    "tool_name": "AskUserQuestion",
    "input": {"questions": [{"question": "Which colour?", "options": [{"label": "red"}, {"label": "blue"}]}]},
}


class Recorder:
    def __init__(self, timeout_s: float = 60.0) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.prompts = Prompts(lambda rid, d: self.sent.append((rid, d)), self.events.append, timeout_s)


async def test_a_permission_request_is_logged_and_an_allow_reaches_the_cli() -> None:
    r = Recorder()
    r.prompts.ask("r1", BASH)
    assert r.events[0]["type"] == "permission_request"
    assert r.events[0]["tool_name"] == "Bash" and r.events[0]["suggestions"] == SUGGESTIONS
    assert r.events[0]["tool_use_id"] == "toolu_1"
    assert r.prompts.waiting_since is not None
    r.prompts.allow(r.prompts.find("r1", "permission"), None, False, "alice")
    assert r.sent == [("r1", {"behavior": "allow", "updatedInput": {"command": "echo hi > f.txt"}})]
    assert r.events[1] == {"type": "permission_resolved", "request_id": "r1", "behavior": "allow", "by": "alice"}
    assert r.prompts.waiting_since is None and not r.prompts.pending


async def test_remember_sends_only_allow_rules_and_directories_for_the_session() -> None:
    r = Recorder()
    r.prompts.ask("r1", BASH)
    r.prompts.allow(r.prompts.find("r1", "permission"), {"command": "echo ok > f.txt"}, True, "alice")
    decision = r.sent[0][1]
    assert decision["updatedInput"] == {"command": "echo ok > f.txt"}
    assert decision["updatedPermissions"] == [
        {**SUGGESTIONS[0], "destination": "session"},
        {**SUGGESTIONS[1], "destination": "session"},
    ]
    assert r.events[-1]["remember"] is True


async def test_answered_twice_is_409_and_unknown_or_other_kind_is_404() -> None:
    r = Recorder()
    r.prompts.ask("r1", BASH)
    r.prompts.ask("q1", QUESTION)
    with pytest.raises(ApiError) as info:
        r.prompts.find("q1", "permission")
    assert info.value.status == 404
    r.prompts.deny(r.prompts.find("r1", "permission"), "no", False, "bob")
    with pytest.raises(ApiError) as info:
        r.prompts.find("r1", "permission")
    assert info.value.status == 409 and info.value.code == "already_answered"
    with pytest.raises(ApiError) as info:
        r.prompts.find("nope", "question")
    assert info.value.status == 404 and info.value.code == "question_not_found"


async def test_a_question_is_answered_through_the_updated_input() -> None:
    r = Recorder()
    r.prompts.ask("q1", QUESTION)
    assert r.events[0]["type"] == "question" and r.events[0]["questions"] == QUESTION["input"]["questions"]
    pending = r.prompts.find("q1", "question")
    with pytest.raises(ApiError, match="must be a string"):
        r.prompts.answer_question(pending, {"Which colour?": 2}, "alice")
    r.prompts.answer_question(pending, {"Which colour?": "blue"}, "alice")
    assert r.sent == [
        ("q1", {"behavior": "allow", "updatedInput": {**QUESTION["input"], "answers": {"Which colour?": "blue"}}})
    ]
    assert r.events[-1]["type"] == "question_resolved" and r.events[-1]["answers"] == {"Which colour?": "blue"}


async def test_an_unanswered_request_is_denied_at_the_timeout() -> None:
    r = Recorder(timeout_s=0.05)
    r.prompts.ask("r1", BASH)
    await asyncio.sleep(0.15)
    assert r.sent[0][1]["behavior"] == "deny" and "not answered within 0.05s" in r.sent[0][1]["message"]
    assert r.events[-1]["by"] == "timeout" and not r.prompts.pending


async def test_deny_all_and_a_withdrawn_request() -> None:
    r = Recorder()
    r.prompts.ask("r1", BASH)
    r.prompts.ask("r2", BASH)
    r.prompts.cancelled("r2")
    assert [e["by"] for e in r.events if e["type"] == "permission_resolved"] == ["claude"]
    assert r.sent == []  # the CLI withdrew it: nothing to tell it
    assert r.prompts.deny_all("stopped", "interrupt", interrupt=True) == 1
    assert r.sent == [("r1", {"behavior": "deny", "message": "stopped", "interrupt": True})]
    assert r.prompts.deny_all("again", "server") == 0


def result(total: float | None, since: float | None = None) -> TurnResult:
    obj: dict[str, Any] = {"type": "result", "total_cost_usd": total}
    if since is not None:
        obj["model_usage_since_last_result"] = {"m": {"costUSD": since}}
    return TurnResult.of(obj)


def test_a_warm_turn_costs_the_difference_of_the_cli_running_totals() -> None:
    assert warm_cost(result(0.003, 0.001), 0.002) == pytest.approx(0.001)
    # No earlier total known, or a total that went down: the CLI's own figure for the run.
    assert warm_cost(result(0.003, 0.001), None) == pytest.approx(0.001)
    assert warm_cost(result(0.001, 0.001), 0.002) == pytest.approx(0.001)
    assert warm_cost(result(None, 0.0005), 0.002) == pytest.approx(0.0005)
    assert warm_cost(result(0.004), None) == pytest.approx(0.004)
