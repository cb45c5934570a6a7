"""The OpenAI-compatible API: fast tests through the app with the fake CLI, then end to end with
the official ``openai`` SDK against the real server running the real CLI and the fake
Anthropic API (whose model answers ``Echo(<number of messages>): <newest user text>``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.appkeys import BROKER
from claude_server.compat.conversation import HISTORY_INTRO
from claude_server.config import Settings
from tests.conftest import RunningServer
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import eventually, marked_pids, parse_sse, process_of

URL = "/v1/chat/completions"
SESSION = "X-Claude-Session-Id"
# The broker ends a turn whose client left within 2 s (test_e2e_core); a margin for CI.
CLEANUP_TIMEOUT_S = 3.0


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def complete(
    client: TestClient, messages: list[dict[str, Any]], headers: dict[str, str] | None = None, **extra: Any
) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    resp = await client.post(URL, json={"model": "claude-code", "messages": messages, **extra}, headers=headers)
    return resp, await resp.json()


def content(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


async def stream_chunks(
    client: TestClient, messages: list[dict[str, Any]], **extra: Any
) -> tuple[aiohttp.ClientResponse, list[str]]:
    """The ``data:`` payloads of a streamed answer, in order."""
    resp = await client.post(URL, json={"model": "claude-code", "messages": messages, "stream": True, **extra})
    assert resp.status == 200, await resp.text()
    return resp, [ev.data for ev in parse_sse(await resp.text())]


async def turn_row(client: TestClient, turn_id: str) -> dict[str, Any]:
    """The turn as the native API records it: the prompt the CLI got, the options."""
    resp = await client.get(f"/api/turns/{turn_id}")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


def assert_openai_error(body: dict[str, Any], kind: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert error["type"] == kind and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# ---- shapes ---------------------------------------------------------------------------------------


async def test_models_list_and_retrieve(client: TestClient) -> None:
    resp = await client.get("/v1/models")
    body = await resp.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["claude-code", "claude-code-opus", "claude-code-sonnet", "claude-code-haiku"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] for m in body["data"])
    one = await (await client.get("/v1/models/claude-code-opus")).json()
    assert one["id"] == "claude-code-opus"
    resp = await client.get("/v1/models/gpt-4o")
    assert resp.status == 404
    assert assert_openai_error(await resp.json(), "invalid_request_error")["code"] == "model_not_found"


async def test_configured_models_choose_the_cli_model(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, compat_models=("fast=haiku", "plain="))))
    assert [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]] == ["fast", "plain"]
    resp = await client.post(URL, json={"model": "fast", "messages": [user("hi")]})
    assert (await resp.json())["model"] == "fast"
    assert (await turn_row(client, resp.headers["X-Turn-Id"]))["options"]["model"] == "haiku"
    resp = await client.post(URL, json={"model": "plain", "messages": [user("hi")]})
    assert "model" not in (await turn_row(client, resp.headers["X-Turn-Id"]))["options"]


async def test_completion_shape_and_headers(client: TestClient) -> None:
    resp, body = await complete(client, [user("hello")], temperature=0.2, max_tokens=5, top_p=1, stop=["x"], seed=1)
    assert resp.status == 200, body
    assert resp.headers[SESSION] and resp.headers["X-Turn-Id"]
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "claude-code" and isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "fake answer 1: hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["prompt_tokens"] == 10 and body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == 22


async def test_stream_sends_deltas_then_finish_usage_and_done(client: TestClient) -> None:
    resp, datas = await stream_chunks(client, [user("hello there @partial")], stream_options={"include_usage": True})
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers[SESSION] and resp.headers["X-Turn-Id"]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    # The fake CLI streams 8-character deltas, and repeats the text in its assistant line:
    # each delta arrives once, the repetition never.
    assert len(deltas) > 2 and all(len(d) <= 8 for d in deltas)
    assert "".join(deltas) == "fake answer 1: hello there @partial"
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 22


async def test_stream_without_usage_option_and_without_partial_lines(client: TestClient) -> None:
    _, datas = await stream_chunks(client, [user("plain")])
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "fake answer 1: plain"


async def test_streamed_and_whole_answers_are_the_same_text(client: TestClient) -> None:
    prompt = "same @partial @lines=3"
    _, datas = await stream_chunks(client, [user(prompt)])
    streamed = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas[:-1])
    _, body = await complete(client, [user(prompt)])
    assert streamed == content(body) == "fake answer 1: same @partial @lines=3\n\nline 1\n\nline 2"


# ---- sessions -------------------------------------------------------------------------------------


async def test_a_resent_history_continues_its_session(client: TestClient) -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    sessions, prompts = [], []
    for i, text in enumerate(("one", "two", "three"), 1):
        history.append(user(text))
        resp, body = await complete(client, history)
        assert content(body) == f"fake answer {i}: {text}"
        history.append(assistant(content(body)))
        sessions.append(resp.headers[SESSION])
        prompts.append((await turn_row(client, resp.headers["X-Turn-Id"]))["prompt"])
    assert len(set(sessions)) == 1
    assert prompts == ["one", "two", "three"]  # only the newest message, never pasted history


async def test_identical_chats_keep_separate_sessions(client: TestClient) -> None:
    firsts = [await complete(client, [user("hi")]) for _ in range(2)]
    assert content(firsts[0][1]) == content(firsts[1][1])
    started = {resp.headers[SESSION] for resp, _ in firsts}
    assert len(started) == 2
    history = [user("hi"), assistant(content(firsts[0][1]))]
    seconds = [await complete(client, [*history, user(f"chat {n}")]) for n in (1, 2)]
    # Each second turn took one of the two sessions, and resumed it (two prompts seen).
    assert {resp.headers[SESSION] for resp, _ in seconds} == started
    assert [content(body) for _, body in seconds] == ["fake answer 2: chat 1", "fake answer 2: chat 2"]
    # A third chat with the same start finds no free session: a new one, given the history.
    resp, body = await complete(client, [*history, user("chat 3")])
    assert resp.headers[SESSION] not in started
    assert HISTORY_INTRO in content(body)


async def test_an_unknown_history_starts_a_session_given_it_once(client: TestClient) -> None:
    history = [user("from elsewhere"), assistant("an answer this server never gave"), user("go on")]
    resp, body = await complete(client, history)
    prompt = (await turn_row(client, resp.headers["X-Turn-Id"]))["prompt"]
    assert prompt.startswith(HISTORY_INTRO) and "an answer this server never gave" in prompt
    assert prompt.endswith("go on")
    # That session now holds the whole history: the next turn resumes it with one message.
    resp2, body2 = await complete(client, [*history, assistant(content(body)), user("and more")])
    assert resp2.headers[SESSION] == resp.headers[SESSION]
    assert (await turn_row(client, resp2.headers["X-Turn-Id"]))["prompt"] == "and more"


async def test_a_changed_reply_or_a_native_turn_breaks_the_match(client: TestClient) -> None:
    resp, body = await complete(client, [user("start")])
    sid = resp.headers[SESSION]
    edited, _ = await complete(client, [user("start"), assistant("edited by the user"), user("next")])
    assert edited.headers[SESSION] != sid
    native = await client.post("/api/claude", json={"prompt": "native", "session_id": sid, "stream": False})
    assert native.status == 200
    after, _ = await complete(client, [user("start"), assistant(content(body)), user("next")])
    assert after.headers[SESSION] != sid


async def test_session_header_resumes_with_the_newest_message_only(client: TestClient) -> None:
    resp, _ = await complete(client, [user("first")])
    sid = resp.headers[SESSION]
    resp2, body2 = await complete(client, [user("second")], headers={SESSION: sid})
    assert resp2.headers[SESSION] == sid
    assert content(body2) == "fake answer 2: second"
    # A system message cannot change a session's system prompt: it is not sent on resume.
    resp3, _ = await complete(client, [{"role": "system", "content": "new rules"}, user("third")], {SESSION: sid})
    assert resp3.status == 200
    assert "append_system_prompt" not in (await turn_row(client, resp3.headers["X-Turn-Id"]))["options"]
    resp4, body4 = await complete(client, [user("x")], headers={SESSION: "no-such-session"})
    assert resp4.status == 404
    assert assert_openai_error(body4, "invalid_request_error")["code"] == "session_not_found"


async def test_conversation_header_binds_and_resumes(client: TestClient) -> None:
    headers = {"X-Conversation-Id": "chat-42"}
    resp, _ = await complete(client, [{"role": "system", "content": "rules"}, user("a")], headers)
    resp2, body2 = await complete(client, [{"role": "system", "content": "rules"}, user("b")], headers)
    assert resp2.headers[SESSION] == resp.headers[SESSION]
    assert content(body2) == "fake answer 2: b"


async def test_the_system_message_goes_to_a_new_session(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    for mode, option in (("append", "append_system_prompt"), ("replace", "system_prompt")):
        client = await aiohttp_client(create_app(replace(settings, compat_system_prompt_mode=mode)))
        messages = [{"role": "system", "content": "rule 1"}, {"role": "developer", "content": "rule 2"}, user("q")]
        resp, body = await complete(client, messages)
        options = (await turn_row(client, resp.headers["X-Turn-Id"]))["options"]
        assert options[option] == "rule 1\n\nrule 2"
        # Later turns may change the system message: it is left out of the match, and not sent.
        changed = [{"role": "system", "content": "rule 3"}, user("q"), assistant(content(body)), user("q2")]
        resp2, _ = await complete(client, changed)
        assert resp2.headers[SESSION] == resp.headers[SESSION]
        assert option not in (await turn_row(client, resp2.headers["X-Turn-Id"]))["options"]


async def test_a_busy_session_is_409(client: TestClient) -> None:
    slow = await client.post(URL, json={"model": "claude-code", "messages": [user("wait @sleep=5")], "stream": True})
    assert slow.status == 200
    resp, body = await complete(client, [user("me too")], headers={SESSION: slow.headers[SESSION]})
    assert resp.status == 409
    assert assert_openai_error(body, "invalid_request_error")["code"] == "session_busy"
    slow.close()


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [user("x")]}, "model", "invalid_field"),
        ({"model": "claude-code"}, "messages", "invalid_field"),
        ({"model": "claude-code", "messages": "hello"}, "messages", "invalid_field"),
        ({"model": "claude-code", "messages": [user("x")], "stream": "yes"}, "stream", "invalid_field"),
        ({"model": 4, "messages": [user("x")]}, "model", "invalid_field"),
        ({"model": "claude-code", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "invalid_field"),
        ({"model": "claude-code", "messages": []}, "messages", "invalid_field"),
        ({"model": "claude-code", "messages": [user("q"), assistant("prefill")]}, "messages.1.role", "invalid_field"),
        ({"model": "claude-code", "messages": [user("x")], "n": 2}, "n", "invalid_field"),
        (
            {
                "model": "claude-code",
                "messages": [user("x")],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "tools",
            "tools_not_supported",
        ),
        (
            {"model": "claude-code", "messages": [user("x")], "tool_choice": "required"},
            "tool_choice",
            "tools_not_supported",
        ),
        (
            {"model": "claude-code", "messages": [user("x")], "functions": [{"name": "f"}]},
            "functions",
            "tools_not_supported",
        ),
        (
            {"model": "claude-code", "messages": [user("x"), {"role": "tool", "content": "r", "tool_call_id": "1"}]},
            "messages.1",
            "tools_not_supported",
        ),
        (
            {
                "model": "claude-code",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}],
            },
            "messages.0.content.0",
            "unsupported_content",
        ),
    ],
)
async def test_bad_requests_are_400_in_openai_shape(
    client: TestClient, body: dict[str, Any], param: str, code: str
) -> None:
    resp = await client.post(URL, json=body)
    assert resp.status == 400
    error = assert_openai_error(await resp.json(), "invalid_request_error", param)
    assert error["code"] == code


async def test_empty_tool_fields_are_accepted(client: TestClient) -> None:
    resp, body = await complete(client, [user("x")], tools=[], tool_choice="none", parallel_tool_calls=False)
    assert resp.status == 200, body


@pytest.mark.parametrize(
    ("data", "headers", "status"),
    [
        ("{not json", {"Content-Type": "application/json"}, 400),
        ("[1, 2]", {"Content-Type": "application/json"}, 400),
        ("model=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
async def test_bad_bodies_in_openai_shape(client: TestClient, data: str, headers: dict[str, str], status: int) -> None:
    resp = await client.post(URL, data=data, headers=headers)
    assert resp.status == status
    assert_openai_error(await resp.json(), "invalid_request_error")


async def test_unknown_model_and_routes_in_openai_shape(client: TestClient) -> None:
    resp, body = await complete(client, [user("x")], model="gpt-4o")
    assert resp.status == 404
    assert assert_openai_error(body, "invalid_request_error", "model")["code"] == "model_not_found"
    resp = await client.get(URL)
    assert resp.status == 405
    assert_openai_error(await resp.json(), "invalid_request_error")
    resp = await client.post("/v1/embeddings", json={})
    assert resp.status == 404
    assert_openai_error(await resp.json(), "invalid_request_error")


async def test_missing_cli_is_503(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, claude_bin="claude-is-not-installed")))
    for stream in (False, True):
        resp, body = await complete(client, [user("x")], stream=stream)
        assert resp.status == 503
        assert assert_openai_error(body, "server_error")["code"] == "cli_not_found"


async def test_cli_failure_mid_turn(client: TestClient) -> None:
    resp, body = await complete(client, [user("@exit=3")])
    assert resp.status == 502
    assert "code 3" in assert_openai_error(body, "server_error")["message"]
    assert resp.headers["X-Turn-Id"]
    # Streaming: the headers are out; the error comes as a chunk, and the stream ends.
    resp, datas = await stream_chunks(client, [user("@exit=3")])
    assert resp.headers[SESSION]
    last = json.loads(datas[-1])
    assert_openai_error(last, "server_error")
    assert "[DONE]" not in datas


async def test_cli_death_before_init_is_502_even_for_a_stream(client: TestClient) -> None:
    for stream in (False, True):
        resp, body = await complete(client, [user("@die-before-init")], stream=stream)
        assert resp.status == 502
        assert_openai_error(body, "server_error")


async def test_client_disconnect_interrupts_the_turn(client: TestClient) -> None:
    # 50 lines 0.2 s apart: 10 s if nobody stopped it.
    body = {"model": "claude-code", "messages": [user("long @partial @lines=50 @slow=0.2")], "stream": True}
    resp = await client.post(URL, json=body)
    turn_id = resp.headers["X-Turn-Id"]
    await resp.content.readuntil(b"fake ans")
    process = await process_of(client, turn_id)
    assert marked_pids(process)
    resp.close()
    broker = client.app[BROKER]
    assert await eventually(lambda: broker.get(turn_id) is None, CLEANUP_TIMEOUT_S)
    assert marked_pids(process)  # interrupted: the CLI stays warm for the conversation
    row = await turn_row(client, turn_id)
    assert (row["status"], row["error"]["code"]) == ("cancelled", "client_disconnected")


async def test_keys_are_required_when_configured(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=("sk-right",))))
    resp, body = await complete(client, [user("x")])
    assert resp.status == 401
    assert_openai_error(body, "authentication_error")
    resp, body = await complete(client, [user("x")], headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status == 401
    resp = await client.get("/v1/models")
    assert resp.status == 401
    resp, body = await complete(client, [user("x")], headers={"Authorization": "Bearer sk-right"})
    assert resp.status == 200, body


async def test_a_history_matches_only_the_keys_own_sessions(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=("sk-alice", "sk-bob"))))
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    resp, body = await complete(client, [user("hi")], headers=alice)
    history = [user("hi"), assistant(content(body)), user("next")]
    theirs, _ = await complete(client, history, headers=bob)
    assert theirs.headers[SESSION] != resp.headers[SESSION]
    hers, _ = await complete(client, history, headers=alice)
    assert hers.headers[SESSION] == resp.headers[SESSION]
    # Nor can another key resume it by header.
    resp, body = await complete(client, [user("x")], headers={**bob, SESSION: hers.headers[SESSION]})
    assert resp.status == 404


# ---- end to end: the openai SDK, the real CLI ---------------------------------------------------------


def sdk(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="anything", max_retries=0)


def conversation_sizes(api: FakeAnthropic, session_id: str) -> list[int]:
    """Per request the fake API received for a session: how many conversation messages."""
    return [
        len([m for m in r.body["messages"] if m.get("role") in ("user", "assistant")])
        for r in api.for_session(session_id)
    ]


@pytest.mark.e2e
async def test_sdk_models_list(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        models = [m.id async for m in client.models.list()]
    assert models[0] == "claude-code" and "claude-code-haiku" in models


@pytest.mark.e2e
async def test_sdk_create_and_stream(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-code", messages=[{"role": "user", "content": "hello"}]
        )
        completion = raw.parse()
        assert raw.headers[SESSION]
        assert completion.choices[0].message.content == "Echo(1): hello"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens > 0

        deltas = []
        stream = await client.chat.completions.create(
            model="claude-code",
            messages=[{"role": "user", "content": "stream this please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    # The fake API sends 8-character deltas; the CLI passes them on as partial messages.
    assert len(deltas) > 1
    assert "".join(deltas) == "Echo(1): stream this please"
    assert usage is not None and usage.total_tokens > 0


@pytest.mark.e2e
async def test_sdk_chat_ui_history_runs_as_one_session(e2e_server: RunningServer, fake_api: FakeAnthropic) -> None:
    tag = uuid.uuid4().hex[:8]  # the server is shared: no other test's chat has this history
    messages: list[Any] = [{"role": "system", "content": "You are terse."}]
    sessions = []
    async with sdk(e2e_server) as client:
        for i, text in enumerate((f"first question {tag}", "second question", "third question")):
            messages.append({"role": "user", "content": text})
            raw = await client.chat.completions.with_raw_response.create(
                model="claude-code", messages=messages, stream=i == 1
            )
            sessions.append(raw.headers[SESSION])
            if i == 1:
                answer = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
            else:
                answer = raw.parse().choices[0].message.content or ""
            assert answer == f"Echo({2 * i + 1}): {text}"
            messages.append({"role": "assistant", "content": answer})
    assert len(set(sessions)) == 1
    # The CLI resumed one session: the API saw the history grow by one exchange per turn.
    assert conversation_sizes(fake_api, sessions[0]) == [1, 3, 5]
    assert "You are terse." in json.dumps(fake_api.for_session(sessions[0])[0].body["system"])


@pytest.mark.e2e
async def test_sdk_identical_chats_stay_apart(e2e_server: RunningServer, fake_api: FakeAnthropic) -> None:
    async with sdk(e2e_server) as client:

        async def ask(messages: list[Any]) -> tuple[str, str]:
            raw = await client.chat.completions.with_raw_response.create(model="claude-code", messages=messages)
            return raw.headers[SESSION], raw.parse().choices[0].message.content or ""

        hi = f"hi {uuid.uuid4().hex[:8]}"  # the server is shared: no other test's chat starts so
        (sid_a, first_a), (sid_b, first_b) = [await ask([{"role": "user", "content": hi}]) for _ in range(2)]
        assert first_a == first_b == f"Echo(1): {hi}" and sid_a != sid_b
        seconds = [
            await ask(
                [
                    {"role": "user", "content": hi},
                    {"role": "assistant", "content": first_a},
                    {"role": "user", "content": q},
                ]
            )
            for q in ("chat A again", "chat B again")
        ]
    assert {sid for sid, _ in seconds} == {sid_a, sid_b}
    assert [text for _, text in seconds] == ["Echo(3): chat A again", "Echo(3): chat B again"]
    assert conversation_sizes(fake_api, sid_a) == conversation_sizes(fake_api, sid_b) == [1, 3]


@pytest.mark.e2e
async def test_sdk_session_header_resumes(e2e_server: RunningServer, fake_api: FakeAnthropic) -> None:
    async with sdk(e2e_server) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-code", messages=[{"role": "user", "content": "remember 7"}]
        )
        sid = raw.headers[SESSION]
        again = await client.chat.completions.create(
            model="claude-code",
            messages=[{"role": "user", "content": "what number?"}],
            extra_headers={SESSION: sid},
        )
    assert again.choices[0].message.content == "Echo(3): what number?"
    assert conversation_sizes(fake_api, sid) == [1, 3]


@pytest.mark.e2e
async def test_sdk_errors(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="claude-code",
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            )
        assert bad.value.code == "tools_not_supported" and bad.value.param == "tools"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert missing.value.code == "model_not_found"


@pytest.mark.e2e
async def test_tool_activity_is_hidden_by_default(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        done = await client.chat.completions.create(
            model="claude-code", messages=[{"role": "user", "content": "[[bash: echo tool-output]]"}]
        )
    assert done.choices[0].message.content == "Tool said: tool-output"


@pytest.mark.e2e
async def test_disconnect_mid_stream_interrupts_the_turn(
    e2e_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    # The fake model spreads a long answer over 20 s (in many small deltas, so the first one
    # comes soon): only a cancelled turn ends sooner.
    body = {"model": "claude-code", "messages": [user("a long one [[slow: 20]] [[big: 800]]")], "stream": True}
    async with http.post(f"{e2e_server.url}/v1/chat/completions", json=body) as resp:
        turn_id = resp.headers["X-Turn-Id"]
        while b'"content": "Echo' not in await resp.content.readline():
            pass  # the role chunk, then the first text delta
        resp.close()
    for _ in range(50):  # the turn is recorded once the CLI's own result came
        async with http.get(f"{e2e_server.url}/api/turns/{turn_id}") as turn:
            row = await turn.json()
        if row["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert (row["status"], row["error"]["code"]) == ("cancelled", "client_disconnected")
    assert marked_pids(row["process_id"])  # interrupted: the CLI stays warm
