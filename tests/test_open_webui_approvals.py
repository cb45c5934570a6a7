"""The pipe asks the user before a tool use and shows Claude's questions, through Open WebUI's
``__event_call__`` (see OPEN-WEBUI-FACTS.md, "Asking the user from a pipe").

The stand-in ``__event_call__`` answers the way Open WebUI 0.12.4's browser does: ``True`` or
``False`` for a tool approval, ``{"status": "cancelled"}`` for a dialog dismissed (or a chat the
tab is not showing), ``{"error": "Client session disconnected."}`` for a call without a browser
(a bare API call), and ``{"status": "answered", "answers": {"q1": {...}}}`` from the question
card. End to end: the real server, the real CLI, the fake Anthropic API (``[[bash: ...]]``
and ``[[ask: ...]]`` script the model's tool calls).
"""

from __future__ import annotations

import asyncio
import json
import types
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.test_open_webui_pipe import Chat, load_function, new_pipe, sessions_with, workspace_file

EventCall = Callable[[dict[str, Any]], Awaitable[Any]]
DISCONNECTED = {"error": "Client session disconnected."}
WRITE = "echo hi > f.txt && cat f.txt"


@pytest.fixture(scope="module")
def owui() -> Iterator[types.ModuleType]:
    module = load_function("claude_code_approvals")
    yield module


class Browser:
    """A stand-in for Open WebUI's __event_call__: records each event, answers with ``reply``
    (a value, or a function of the event)."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> Any:
        self.events.append(event)
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply(event) if callable(self.reply) else self.reply


def tool_results(api: FakeAnthropic, token: str) -> list[str]:
    """The tool_result texts the CLI sent the model in the sessions that mention ``token``."""
    sids = set(sessions_with(api, token))
    out = []
    for request in list(api.requests):
        if request.session_id not in sids:
            continue
        messages = request.body.get("messages") or []
        for block in messages[-1].get("content") or [] if messages else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
                out.append(str(content))
    return out


def descriptions(chat_events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["description"] for e in chat_events if e.get("type") == "status"]


# ---- the dialogs' shapes and replies (no server) ---------------------------------------------


def test_a_permission_request_becomes_open_webuis_tool_approval(owui: types.ModuleType) -> None:
    request = {
        "type": "permission_request",
        "request_id": "req-1",
        "tool_name": "Bash",
        "input": {"command": "ls"},
        "tool_use_id": "toolu_1",
    }
    assert owui.confirmation_event(request) == {
        "type": "confirmation",
        "data": {"tool_call": {"id": "toolu_1", "name": "Bash", "arguments": {"command": "ls"}}, "timeout_ms": 240_000},
    }
    without_tool_use_id = {k: v for k, v in request.items() if k != "tool_use_id"}
    assert owui.confirmation_event(without_tool_use_id)["data"]["tool_call"]["id"] == "req-1"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (True, None),
        (False, "the user denied it"),
        ({"status": "cancelled"}, "the approval dialog was dismissed"),
        (DISCONNECTED, "Open WebUI could not ask the user (Client session disconnected.)"),
        ({"error": "Event call timed out"}, "Open WebUI could not ask the user (Event call timed out)"),
        (None, "the user gave no answer"),
        ("yes", "the user gave no answer"),
        (1, "the user gave no answer"),
        ({"status": "confirmed"}, "the user gave no answer"),
    ],
)
def test_only_true_approves(owui: types.ModuleType, reply: Any, reason: str | None) -> None:
    assert owui.refusal_reason(reply) == reason


QUESTIONS = [
    {
        "question": "Which colour?",
        "header": "Colour",
        "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cold"}],
        "multiSelect": False,
    },
    {
        "question": "Which toppings?",
        "header": "",
        "options": [{"label": "cheese", "description": ""}, {"label": "ham", "description": ""}],
        "multiSelect": True,
    },
]


def test_questions_become_open_webuis_question_card(owui: types.ModuleType) -> None:
    event = owui.user_input_event(QUESTIONS)
    assert event["type"] == "request:user_input"
    assert event["data"]["allow_other"] is True and event["data"]["timeout_ms"] == 240_000
    first, second = event["data"]["questions"]
    assert first == {
        "id": "q1",
        "header": "Colour",
        "question": "Which colour?",
        "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cold"}],
        "allow_other": True,
    }
    assert second["id"] == "q2" and second["header"] == "Question 2"
    assert second["question"].startswith("Which toppings? (Several apply?")  # the card picks one


def test_answers_map_back_by_id_to_the_question_text(owui: types.ModuleType) -> None:
    reply = {
        "status": "answered",
        "answers": {
            "q1": {"type": "option", "option_index": 1, "label": "blue", "description": "cold"},
            "q2": {"type": "other", "text": " cheese, ham "},
        },
    }
    assert owui.question_answers(QUESTIONS, reply) == (
        {"Which colour?": "blue", "Which toppings?": "cheese, ham"},
        None,
    )
    assert owui.question_answers(QUESTIONS, {"status": "cancelled"}) == ({}, "the user dismissed the question")
    assert owui.question_answers(QUESTIONS, DISCONNECTED)[1] == (
        "Open WebUI could not ask the user (Client session disconnected.)"
    )
    assert owui.question_answers(QUESTIONS, None) == ({}, "the user gave no answer")
    assert owui.question_answers(QUESTIONS, {"status": "answered", "answers": {}}) == ({}, "the user gave no answer")


# ---- end to end ---------------------------------------------------------------------------


@pytest.mark.e2e
async def test_an_approved_tool_runs(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    browser = Browser(True)
    chat = Chat(new_pipe(owui, e2e_server.url), event_call=browser)
    answer = await chat.send(f"{token} [[bash: {WRITE}]]")

    [sid] = sessions_with(fake_api, token)
    assert await workspace_file(http, e2e_server, sid, "f.txt") == "hi\n"
    assert answer.text.endswith("Tool said: hi")
    [event] = browser.events
    assert event["type"] == "confirmation"
    tool_call = event["data"]["tool_call"]
    assert tool_call["name"] == "Bash" and tool_call["arguments"]["command"] == WRITE
    assert tool_call["id"].startswith("toolu_")  # the model's tool_use id
    shown = descriptions(answer.events)
    assert shown.index("Waiting for approval: Bash") < shown.index("Approved: Bash")
    assert shown[-1] == "Done"
    assert "not allowed" not in answer.text


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (False, "the user denied it"),
        ({"status": "cancelled"}, "the approval dialog was dismissed"),
        (DISCONNECTED, "Open WebUI could not ask the user (Client session disconnected.)"),
        (RuntimeError("socket gone"), "Open WebUI could not ask the user (RuntimeError: socket gone)"),
        (None, "Open WebUI could not ask the user (no browser session)"),  # no __event_call__ at all
    ],
    ids=["false", "cancelled", "disconnected", "exception", "no-event-call"],
)
async def test_a_tool_not_approved_is_denied_with_the_line_that_allows_it(
    owui: types.ModuleType,
    e2e_server: RunningServer,
    fake_api: FakeAnthropic,
    http: aiohttp.ClientSession,
    reply: Any,
    reason: str,
) -> None:
    token = uuid.uuid4().hex
    browser = Browser(reply) if reply is not None else None
    chat = Chat(new_pipe(owui, e2e_server.url), event_call=browser)
    answer = await chat.send(f"{token} [[bash: {WRITE}]]")

    [sid] = sessions_with(fake_api, token)
    assert await workspace_file(http, e2e_server, sid, "f.txt") is None
    expected = (
        f"Not allowed to use Bash: {reason}. To let Claude Code use Bash in this chat without asking, "
        'start a message with the line `allowedTools=["Bash"]`.'
    )
    assert tool_results(fake_api, token) == [expected]  # the model saw the refusal
    assert f"Tool said: {expected}" in answer.text
    assert "Denied: Bash" in descriptions(answer.events)
    if browser is not None:
        assert [e["type"] for e in browser.events] == ["confirmation"]

    # The line the message names does allow it, without asking.
    asked = len(browser.events) if browser else 0
    answer = await chat.send(f'allowedTools=["Bash"]\n{token} again [[bash: {WRITE}]]')
    assert await workspace_file(http, e2e_server, sid, "f.txt") == "hi\n"
    assert answer.text.endswith("Tool said: hi")
    assert (len(browser.events) if browser else 0) == asked


@pytest.mark.e2e
async def test_a_bare_api_call_is_denied_at_once_and_names_the_valve_when_locked(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    token = uuid.uuid4().hex
    pipe = new_pipe(owui, e2e_server.url, ALLOW_PERMISSION_OVERRIDES=False)
    browser = Browser(DISCONNECTED)  # what a bare POST /api/chat/completions gets
    answer = await Chat(pipe, bare=True, event_call=browser).send(f"{token} [[bash: {WRITE}]]")

    [result] = tool_results(fake_api, token)
    assert "Client session disconnected." in result
    assert "An administrator can allow Bash without asking in this model's ALLOWED_TOOLS valve." in result
    assert "session_id=" in answer.text  # the turn went on and ended normally


@pytest.mark.e2e
async def test_without_ask_permissions_nothing_is_asked(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    token = uuid.uuid4().hex
    browser = Browser(True)
    chat = Chat(new_pipe(owui, e2e_server.url, ASK_PERMISSIONS=False), event_call=browser)
    answer = await chat.send(f"{token} [[bash: {WRITE}]]")

    [sid] = sessions_with(fake_api, token)
    assert await workspace_file(http, e2e_server, sid, "f.txt") is None
    assert browser.events == []
    assert "Claude Code was not allowed to use `Bash`" in answer.text


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"type": "option", "option_index": 1, "label": "blue", "description": "Pick blue"}, "blue"),
        ({"type": "other", "text": "green"}, "green"),
    ],
    ids=["option", "other"],
)
async def test_claudes_question_is_answered_in_the_question_card(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, answer: dict[str, Any], said: str
) -> None:
    token = uuid.uuid4().hex
    browser = Browser({"status": "answered", "answers": {"q1": answer}})
    chat = Chat(new_pipe(owui, e2e_server.url), event_call=browser)
    reply = await chat.send(f"{token} [[ask: Which colour? | red | blue]]")

    [event] = browser.events
    assert event["type"] == "request:user_input"
    [question] = event["data"]["questions"]
    assert question["id"] == "q1" and question["question"] == "Which colour?"
    assert [o["label"] for o in question["options"]] == ["red", "blue"]
    [result] = tool_results(fake_api, token)
    assert '"Which colour?"' in result and f'"{said}"' in result  # the CLI's answer text for the model
    assert "Tool said:" in reply.text
    assert "Claude is asking you a question…" in descriptions(reply.events)


@pytest.mark.e2e
@pytest.mark.parametrize("reply", [{"status": "cancelled"}, DISCONNECTED], ids=["cancelled", "disconnected"])
async def test_a_question_left_unanswered_is_declined(
    owui: types.ModuleType, e2e_server: RunningServer, fake_api: FakeAnthropic, reply: Any
) -> None:
    token = uuid.uuid4().hex
    chat = Chat(new_pipe(owui, e2e_server.url), event_call=Browser(reply))
    answer = await chat.send(f"{token} [[ask: Which colour? | red | blue]]")

    [result] = tool_results(fake_api, token)
    assert "The question got no answer" in result and "make a reasonable choice" in result
    assert "Question left unanswered" in descriptions(answer.events)


@pytest.fixture
def quick_timeout_server(tmp_path: Path, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    server = start_server(tmp_path, fake_api, real_cli_path(), {"CLAUDE_SERVER_PERMISSION_TIMEOUT": "2"})
    yield server
    stop_server(server)


@pytest.mark.e2e
async def test_a_dialog_never_answered_does_not_block_the_stream(
    owui: types.ModuleType, quick_timeout_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    """The browser never answers: the server denies after its timeout, and the pipe, still
    reading the stream meanwhile, drops the open dialog and finishes the turn."""
    token = uuid.uuid4().hex
    cancelled = asyncio.Event()

    async def never(event: dict[str, Any]) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    chat = Chat(new_pipe(owui, quick_timeout_server.url), event_call=never)
    answer = await chat.send(f"{token} [[bash: {WRITE}]]")

    assert cancelled.is_set()
    [result] = tool_results(fake_api, token)
    assert "CLAUDE_SERVER_PERMISSION_TIMEOUT" in result
    assert "Denied: Bash" in descriptions(answer.events)
    assert answer.statuses[-1] == {"description": "Done", "done": True}


async def test_permission_prompts_are_requested_with_the_valve_and_answered_by_turn_id(
    owui: types.ModuleType,
) -> None:
    """Against a stub server: the request carries ``permission_prompt`` only with the valve, and
    the answer goes to the turn the X-Turn-Id header names."""
    bodies: list[dict[str, Any]] = []
    answers: list[tuple[str, dict[str, Any]]] = []
    answered = asyncio.Event()

    async def claude(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Turn-Id": "turn-9"})
        await resp.prepare(request)
        await resp.write(b'data: {"type":"system","subtype":"init","session_id":"s-1"}\n\n')
        if bodies[-1].get("permission_prompt"):
            ask = {"type": "permission_request", "request_id": "r-1", "tool_name": "Bash", "input": {"command": "ls"}}
            await resp.write(f"id: turn-9:2\nevent: permission_request\ndata: {json.dumps(ask)}\n\n".encode())
            await asyncio.wait_for(answered.wait(), 10)
            resolved = {"request_id": "r-1", "behavior": "allow", "by": "anonymous"}
            await resp.write(f"id: turn-9:3\nevent: permission_resolved\ndata: {json.dumps(resolved)}\n\n".encode())
        result = {"type": "result", "subtype": "success", "is_error": False, "result": "ok", "session_id": "s-1"}
        await resp.write(f"data: {json.dumps(result)}\n\n".encode())
        return resp

    async def permission(request: web.Request) -> web.Response:
        answers.append((request.path, await request.json()))
        answered.set()
        return web.json_response({"request_id": "r-1", "behavior": "allow", "by": "anonymous"})

    app = web.Application()
    app.router.add_post("/api/claude", claude)
    app.router.add_post("/api/turns/{turn}/permissions/{request}", permission)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        answer = await Chat(new_pipe(owui, url), event_call=Browser(True)).send("hello")
        assert bodies[-1]["permission_prompt"] is True
        assert answers == [("/api/turns/turn-9/permissions/r-1", {"behavior": "allow"})]
        assert "Approved: Bash" in descriptions(answer.events)
        await Chat(new_pipe(owui, url, ASK_PERMISSIONS=False), event_call=Browser(True)).send("hello")
        assert "permission_prompt" not in bodies[-1]
    finally:
        await runner.cleanup()
