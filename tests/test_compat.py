"""Units of the OpenAI/Anthropic compatibility layer, without HTTP: model names, messages to
text, history keys, the answer read from CLI events, error shapes, session placement, and the
SQL that matches a resent history to its session (on a real SQLite database)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from claude_server.compat.chat import MAX_SYSTEM_BYTES, ChatRequest, Placement, turn_options
from claude_server.compat.content import AnswerReader, failure, tool_line
from claude_server.compat.conversation import (
    HISTORY_INTRO,
    Conversation,
    Message,
    context_prompt,
    conversation,
    history_key,
    recorded_key,
    text_of,
)
from claude_server.compat.errors import Api, anthropic_error, api_for, openai_error
from claude_server.compat.models import DEFAULT_MODELS, ModelMap, parse_model_setting
from claude_server.config import ConfigError, Settings, load
from claude_server.errors import ApiError, BadRequest, NotFound
from claude_server.outcome import TurnError
from claude_server.store import Store
from claude_server.turn import Event

# ---- models ----------------------------------------------------------------------------------


def test_default_models_map_to_cli_models() -> None:
    models = ModelMap(DEFAULT_MODELS)
    assert [(m.id, m.cli_model) for m in models.all()] == [
        ("claude-code", None),
        ("claude-code-opus", "opus"),
        ("claude-code-sonnet", "sonnet"),
        ("claude-code-haiku", "haiku"),
    ]
    assert models.get("claude-code-opus").cli_model == "opus"


def test_unknown_model_is_404_listing_the_known_ones() -> None:
    with pytest.raises(NotFound) as err:
        ModelMap(DEFAULT_MODELS).get("gpt-4o")
    assert err.value.code == "model_not_found"
    assert err.value.extra["field"] == "model"
    assert "claude-code-haiku" in err.value.message


def test_model_setting_parses_and_checks() -> None:
    assert parse_model_setting(" fast = haiku , default= ") == ("fast=haiku", "default=")
    for bad in ("", "noequals", "a=b,a=c", "-x=opus", "ok=--danger"):
        with pytest.raises(ValueError):
            parse_model_setting(bad)


def test_compat_settings_load_from_the_environment() -> None:
    settings = load(
        environ={
            "CLAUDE_SERVER_COMPAT_MODELS": "mine=sonnet",
            "CLAUDE_SERVER_COMPAT_SYSTEM_PROMPT_MODE": "Replace",
            "CLAUDE_SERVER_COMPAT_TOOL_TRACE": "true",
        }
    )
    assert settings.compat_models == ("mine=sonnet",)
    assert settings.compat_system_prompt_mode == "replace"
    assert settings.compat_tool_trace is True
    assert load(environ={}).compat_models == DEFAULT_MODELS
    with pytest.raises(ConfigError):
        load(environ={"CLAUDE_SERVER_COMPAT_SYSTEM_PROMPT_MODE": "prepend"})


# ---- messages to text --------------------------------------------------------------------------


def test_text_of_joins_text_parts_and_refuses_the_rest() -> None:
    assert text_of("plain", "m") == "plain"
    assert text_of(None, "m") == ""
    assert text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}], "m") == "a\nb"
    with pytest.raises(BadRequest) as err:
        text_of([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}], "messages.0.content")
    assert err.value.extra["field"] == "messages.0.content.1"
    assert "image_url" in err.value.message


def test_conversation_splits_history_from_the_newest_user_message() -> None:
    msgs = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "next", "messages.3")]
    conv = conversation(msgs, ["be brief", " ", "and kind"])
    assert conv == Conversation("be brief\n\nand kind", (Message("user", "hi"), Message("assistant", "hello")), "next")
    assert conversation([Message("user", "x")]).system is None


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ([Message("user", "q"), Message("assistant", "prefill", "messages.1")], "messages.1.role"),
        ([Message("user", "  ", "messages.0")], "messages.0.content"),
    ],
)
def test_conversation_needs_a_last_user_message_with_text(messages: list[Message], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        conversation(messages)
    assert err.value.extra["field"] == field


def test_history_key_depends_on_roles_texts_and_order_only() -> None:
    a = [Message("user", "hi"), Message("assistant", "hello")]
    assert history_key(a) == history_key([Message("user", " hi\n", "x"), Message("assistant", "hello  ")])
    assert history_key(a) != history_key([Message("assistant", "hi"), Message("user", "hello")])
    assert history_key(a) != history_key(list(reversed(a)))
    assert history_key(a) != history_key([Message("user", "hi"), Message("assistant", "hello!")])
    # Joining is not ambiguous: the split between messages counts.
    assert history_key([Message("user", "a"), Message("user", "b")]) != history_key([Message("user", "a\nb")])


def test_recorded_key_only_when_the_session_saw_that_history() -> None:
    conv = Conversation(None, (Message("user", "hi"), Message("assistant", "hello")), "next")
    after = history_key([*conv.history, Message("user", "next"), Message("assistant", "answer")])
    # A new session got the history in its prompt; a matched session had it.
    assert recorded_key(conv, "answer", new_session=True, session_key=None) == after
    assert recorded_key(conv, "answer", new_session=False, session_key=history_key(conv.history)) == after
    # Resumed by header with some other history (or only the newest message): unknown.
    assert recorded_key(conv, "answer", new_session=False, session_key=None) is None
    assert recorded_key(conv, "answer", new_session=False, session_key=history_key([])) is None


def test_context_prompt_carries_earlier_history_once() -> None:
    assert context_prompt(Conversation(None, (), "hello")) == "hello"
    prompt = context_prompt(Conversation(None, (Message("user", "hi"), Message("assistant", "yo")), "next"))
    assert prompt.startswith(HISTORY_INTRO)
    assert "<user>\nhi\n</user>\n<assistant>\nyo\n</assistant>" in prompt
    assert prompt.endswith("</earlier_messages>\n\nnext")


# ---- turn options ------------------------------------------------------------------------------

CONV = Conversation("be brief", (Message("user", "hi"), Message("assistant", "yo")), "next")


def test_a_new_session_gets_history_and_system_prompt() -> None:
    req = ChatRequest(CONV, ModelMap(DEFAULT_MODELS).get("claude-code-opus"))
    opts = turn_options(req, Placement(None), Settings())
    assert opts.prompt == context_prompt(CONV)
    assert (opts.append_system_prompt, opts.system_prompt) == ("be brief", None)
    assert (opts.model, opts.session_id, opts.include_partial_messages) == ("opus", None, True)
    opts = turn_options(req, Placement(None), Settings(compat_system_prompt_mode="replace"))
    assert (opts.append_system_prompt, opts.system_prompt) == (None, "be brief")


def test_a_resumed_session_gets_the_newest_message_only_and_no_system_prompt() -> None:
    req = ChatRequest(CONV, ModelMap(DEFAULT_MODELS).get("claude-code"))
    opts = turn_options(req, Placement("sid-1", implicit=True), Settings())
    assert (opts.prompt, opts.session_id, opts.model) == ("next", "sid-1", None)
    assert opts.append_system_prompt is None and opts.system_prompt is None


def test_turn_options_enforce_argv_and_prompt_limits() -> None:
    model = ModelMap(DEFAULT_MODELS).get("claude-code")
    huge_system = Conversation("s" * (MAX_SYSTEM_BYTES + 1), (), "q")
    with pytest.raises(BadRequest):
        turn_options(ChatRequest(huge_system, model), Placement(None), Settings())
    # Not sent on resume, so not refused either.
    turn_options(ChatRequest(huge_system, model), Placement("sid"), Settings())
    with pytest.raises(ApiError) as err:
        turn_options(
            ChatRequest(Conversation(None, (), "q" * 2000), model), Placement(None), Settings(max_prompt_bytes=1000)
        )
    assert (err.value.status, err.value.code) == (413, "prompt_too_large")


# ---- the answer, from CLI events ------------------------------------------------------------------


def events_of(*lines: dict[str, Any]) -> list[Event]:
    out = []
    for seq, obj in enumerate(lines, 1):
        kind = obj["type"] if obj["type"] != "system" else f"system/{obj['subtype']}"
        out.append(Event(seq, json.dumps(obj).encode(), kind))
    return out


def read(events: list[Event], *, tool_trace: bool = False) -> tuple[list[str], AnswerReader]:
    reader = AnswerReader(tool_trace=tool_trace)
    pieces = [piece for ev in events for piece in reader.feed(ev)]
    return pieces, reader


def stream(event: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    return {"type": "stream_event", "event": event, "session_id": "s", "parent_tool_use_id": parent}


def assistant(*blocks: dict[str, Any], msg_id: str | None = None, parent: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": list(blocks)}
    if msg_id:
        message["id"] = msg_id
    return {"type": "assistant", "message": message, "parent_tool_use_id": parent, "session_id": "s"}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def delta(t: str) -> dict[str, Any]:
    return stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})


INIT = {"type": "system", "subtype": "init", "session_id": "s"}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "ignored",
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 12, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 1},
}


def test_partial_messages_give_the_text_once() -> None:
    # The order the real CLI prints (reference/stream-json/05-partial-messages.jsonl): the full
    # assistant message comes after the deltas, before content_block_stop.
    pieces, reader = read(
        events_of(
            INIT,
            stream({"type": "message_start", "message": {"id": "msg_1", "content": []}}),
            stream({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            delta("Echo(1):"),
            delta(" hello"),
            assistant(text("Echo(1): hello"), msg_id="msg_1"),
            stream({"type": "content_block_stop", "index": 0}),
            stream({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}}),
            stream({"type": "message_stop"}),
            RESULT,
        )
    )
    assert pieces == ["Echo(1):", " hello"]
    outcome = reader.outcome()
    assert (outcome.text, outcome.stop_reason, outcome.error) == ("Echo(1): hello", "end_turn", None)
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens, outcome.usage.prompt_tokens) == (10, 12, 16)


def test_without_partial_messages_the_assistant_text_is_used() -> None:
    pieces, reader = read(events_of(INIT, assistant(text("one")), assistant(text("two")), RESULT))
    assert pieces == ["one", "\n\ntwo"]
    assert reader.outcome().text == "one\n\ntwo"


# The tool turn of reference/stream-json/03-bash-tool.jsonl, reduced.
TOOL_TURN = (
    INIT,
    assistant(
        {
            "type": "tool_use",
            "id": "t1",
            "name": "Bash",
            "input": {"command": "echo hi > out.txt", "description": "run"},
        },
        msg_id="msg_1",
    ),
    {"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "content": "(no output)"}]}},
    assistant(text("Done with tool."), msg_id="msg_2"),
    RESULT,
)


def test_tool_activity_is_hidden_by_default() -> None:
    assert read(events_of(*TOOL_TURN))[1].outcome().text == "Done with tool."


def test_tool_trace_shows_one_line_per_tool_call() -> None:
    pieces, reader = read(events_of(*TOOL_TURN), tool_trace=True)
    assert pieces == ["> Bash: echo hi > out.txt", "\n\nDone with tool."]
    assert reader.outcome().text == "> Bash: echo hi > out.txt\n\nDone with tool."


def test_tool_line_picks_the_telling_field_and_shortens_it() -> None:
    assert tool_line({"name": "Read", "input": {"file_path": "/a/b.py"}}) == "> Read: /a/b.py"
    assert tool_line({"name": "Odd", "input": {"n": 1}}) == '> Odd: {"n": 1}'
    assert tool_line({"name": "NoInput", "input": {}}) == "> NoInput"
    long = tool_line({"name": "Bash", "input": {"command": "echo " + "x\n" * 500}})
    assert len(long) <= len("> Bash: ") + 200 and long.endswith("…") and "\n" not in long


def test_a_subagents_messages_are_not_the_answer() -> None:
    pieces, _ = read(
        events_of(INIT, delta("main"), assistant(text("sub"), parent="toolu_1"), stream(delta("x")["event"], "toolu_1"))
    )
    assert pieces == ["main"]


def test_segments_are_separated_without_doubling_newlines() -> None:
    pieces, _ = read(events_of(assistant(text("ends with newline\n")), assistant(text("next"))))
    assert pieces == ["ends with newline\n", "\nnext"]


def test_error_result_is_a_502() -> None:
    # reference/stream-json/07-api-errors-retrying.jsonl: a synthetic message, then is_error.
    _, reader = read(
        events_of(
            INIT,
            assistant(text("Not logged in · Please run /login"), msg_id="synthetic"),
            {**RESULT, "is_error": True, "result": "Not logged in · Please run /login"},
        )
    )
    err = reader.outcome().error
    assert err is not None and err.status == 502 and "Not logged in" in err.message


def test_broker_error_event_and_missing_result() -> None:
    reader = AnswerReader()
    error = {"type": "error", "code": "cli_failed", "message": "Claude Code exited with code 3"}
    reader.feed(Event(1, json.dumps(error).encode(), "error", name="error"))
    err = reader.outcome().error
    assert err is not None and (err.status, err.code, err.message) == (502, "cli_failed", error["message"])
    err = AnswerReader().outcome().error
    assert err is not None and err.status == 502


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("turn_timeout", 504),
        ("server_shutdown", 503),
        ("client_disconnected", 409),
        # One table for every route: it was 502 here and 409 on /api/claude.
        ("session_deleted", 409),
        ("not_logged_in", 502),
        ("api_rate_limited", 429),
        ("queue_timeout", 429),
    ],
)
def test_failure_statuses(code: str, status: int) -> None:
    err = failure({"code": code, "message": "m", "retry_after": 7})
    assert (err.status, err.code) == (status, code)
    assert TurnError(code, "m", retry_after=7).api_error().status == status  # the native routes' way
    if code == "queue_timeout":
        assert err.headers["Retry-After"] == "7"


# ---- error shapes -----------------------------------------------------------------------------------


def test_api_for_paths_and_headers() -> None:
    assert api_for("/api/claude", {}) is None
    assert api_for("/v1/messages", {}) is Api.ANTHROPIC
    assert api_for("/v1/chat/completions", {"anthropic-version": "2023-06-01"}) is Api.OPENAI
    assert api_for("/v1/models", {}) is Api.OPENAI
    assert api_for("/v1/models", {"anthropic-version": "2023-06-01"}) is Api.ANTHROPIC


def test_error_bodies() -> None:
    err = BadRequest("bad", code="invalid_field", field="messages.0")
    assert openai_error(err) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages.0", "code": "invalid_field"}
    }
    assert anthropic_error(err) == {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    gone = ApiError("x", status=502)
    assert openai_error(gone)["error"]["type"] == "server_error"
    assert anthropic_error(gone)["error"]["type"] == "api_error"
    assert anthropic_error(NotFound("x"))["error"]["type"] == "not_found_error"
    assert openai_error(ApiError("x", status=401))["error"]["type"] == "authentication_error"


# ---- matching a resent history to its session, in SQLite ---------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "t.db")
    yield store
    await store.close()


async def add_session(store: Store, sid: str, owner: str | None = None) -> None:
    await store.insert_session(sid, workspace_path=f"/w/{sid}", workspace_name=sid, first_prompt="hi", owner=owner)


async def add_turn(store: Store, turn_id: str, sid: str, key: str | None = "", owner: str | None = None) -> None:
    """A turn on ``sid``; a compatible exchange recording ``key`` unless ``key`` is ''."""
    await store.insert_turn(turn_id, session_id=sid, prompt="p", options={}, workspace_path=f"/w/{sid}", detach=False)
    if key != "":
        await store.insert_compat_turn(turn_id, session_id=sid, user_text="u", assistant_text="a", history_key=key)


async def test_only_a_sessions_newest_turn_matches(store: Store) -> None:
    await add_session(store, "s1")
    await add_turn(store, "t1", "s1", "k1")
    assert await store.compat_sessions_at("k1", None) == ["s1"]
    assert await store.compat_session_key("s1") == "k1"
    await add_turn(store, "t2", "s1", "k2")
    assert await store.compat_sessions_at("k1", None) == []
    assert await store.compat_sessions_at("k2", None) == ["s1"]
    # A native (or failed) turn afterwards: the session's context is no longer known.
    await add_turn(store, "t3", "s1")
    assert await store.compat_sessions_at("k2", None) == []
    assert await store.compat_session_key("s1") is None


async def test_identical_histories_keep_their_own_sessions(store: Store) -> None:
    for sid, turn in (("s1", "t1"), ("s2", "t2")):
        await add_session(store, sid)
        await add_turn(store, turn, sid, "same")
    assert await store.compat_sessions_at("same", None) == ["s1", "s2"]
    await add_turn(store, "t3", "s1", "next")  # the first chat went on with s1
    assert await store.compat_sessions_at("same", None) == ["s2"]


async def test_matching_stays_within_the_owner(store: Store) -> None:
    await add_session(store, "mine", owner="key_a")
    await add_turn(store, "t1", "mine", "k")
    assert await store.compat_sessions_at("k", "key_a") == ["mine"]
    assert await store.compat_sessions_at("k", "key_b") == []
    assert await store.compat_sessions_at("k", None) == []


async def test_deleting_a_session_deletes_its_exchanges(store: Store) -> None:
    await add_session(store, "s1")
    await add_turn(store, "t1", "s1", "k")
    assert await store.delete_session("s1") is True
    assert await store.db.fetchval("SELECT count(*) FROM compat_turns") == 0
    assert await store.delete_session("s1") is False
