"""The Anthropic-compatible API: fast tests through the app with the fake CLI, then end to end
with the official ``anthropic`` SDK against the real server running the real CLI and the fake
Anthropic API (whose model answers ``Echo(<number of messages>): <newest user text>``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import parse_sse

URL = "/v1/messages"
SESSION = "X-Claude-Session-Id"


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


async def create(
    client: TestClient, messages: list[dict[str, Any]], headers: dict[str, str] | None = None, **extra: Any
) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    body = {"model": "claude-code", "max_tokens": 1024, "messages": messages, **extra}
    resp = await client.post(URL, json=body, headers=headers)
    return resp, await resp.json()


def text(body: dict[str, Any]) -> str:
    return "".join(block["text"] for block in body["content"])


def assert_anthropic_error(body: dict[str, Any], kind: str) -> str:
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == kind
    message: str = body["error"]["message"]
    assert message
    return message


async def turn_options(client: TestClient, resp: aiohttp.ClientResponse) -> dict[str, Any]:
    row = await (await client.get(f"/api/turns/{resp.headers['X-Turn-Id']}")).json()
    options: dict[str, Any] = row["options"]
    return options


# ---- shapes ---------------------------------------------------------------------------------------


async def test_message_shape_and_headers(client: TestClient) -> None:
    resp, body = await create(client, [user("hello")], temperature=0.5, top_k=3, stop_sequences=["x"])
    assert resp.status == 200, body
    assert resp.headers[SESSION] and resp.headers["X-Turn-Id"]
    assert body["id"].startswith("msg_")
    assert {k: body[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message",
        "role": "assistant",
        "model": "claude-code",
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    assert body["content"] == [{"type": "text", "text": "fake answer 1: hello"}]
    assert body["usage"]["input_tokens"] == 10 and body["usage"]["output_tokens"] == 12


async def test_stream_sends_the_messages_event_sequence(client: TestClient) -> None:
    resp = await client.post(
        URL, json={"model": "claude-code", "max_tokens": 9, "messages": [user("stream me @partial")], "stream": True}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream" and resp.headers[SESSION]
    events = parse_sse(await resp.text())
    names = [ev.event for ev in events]
    assert all(ev.json()["type"] == ev.event for ev in events)
    deltas = names.count("content_block_delta")
    assert deltas > 2
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0].json()["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    streamed = "".join(ev.json()["delta"]["text"] for ev in events if ev.event == "content_block_delta")
    assert streamed == "fake answer 1: stream me @partial"
    final = events[-2].json()
    assert final["delta"]["stop_reason"] == "end_turn" and final["usage"]["output_tokens"] == 12


async def test_system_as_text_or_blocks(client: TestClient) -> None:
    for system in ("be brief", [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]):
        resp, _ = await create(client, [user("q")], system=system)
        assert (await turn_options(client, resp))["append_system_prompt"] == "be brief"


async def test_a_resent_history_of_content_blocks_continues_its_session(client: TestClient) -> None:
    resp, first = await create(client, [user("one")])
    # As an SDK user does: the answer's content blocks go back as they came.
    history = [user([{"type": "text", "text": "one"}]), assistant(first["content"]), user("two")]
    resp2, second = await create(client, history)
    assert resp2.headers[SESSION] == resp.headers[SESSION]
    assert text(second) == "fake answer 2: two"


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [user("x")]},
        {"model": "claude-code"},
        {"model": "claude-code", "messages": {"role": "user"}},
        {"model": "claude-code", "messages": [user("x")], "stream": 1},
        {"model": "claude-code", "messages": [{"role": "system", "content": "x"}]},
        {"model": "claude-code", "messages": [user("q"), assistant("prefill")]},
        {"model": "claude-code", "messages": [user("x")], "tools": [{"name": "f", "input_schema": {}}]},
        {"model": "claude-code", "messages": [user("x")], "tool_choice": {"type": "any"}},
        {"model": "claude-code", "messages": [user([{"type": "image", "source": {"type": "base64"}}])]},
        {"model": "claude-code", "messages": [user([{"type": "tool_result", "tool_use_id": "t", "content": "r"}])]},
        {"model": "claude-code", "messages": [user("x")], "system": [{"type": "image"}]},
    ],
)
async def test_bad_requests_are_400_in_anthropic_shape(client: TestClient, body: dict[str, Any]) -> None:
    resp = await client.post(URL, json=body)
    assert resp.status == 400
    assert_anthropic_error(await resp.json(), "invalid_request_error")


async def test_bad_json_unknown_model_and_method(client: TestClient) -> None:
    resp = await client.post(URL, data="{oops", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_anthropic_error(await resp.json(), "invalid_request_error")
    resp, body = await create(client, [user("x")], model="claude-3-opus")
    assert resp.status == 404
    assert "claude-code" in assert_anthropic_error(body, "not_found_error")
    resp = await client.get(URL)
    assert resp.status == 405
    assert_anthropic_error(await resp.json(), "invalid_request_error")
    # The shared models route answers an Anthropic client in its shape.
    resp = await client.get("/v1/models/claude-3-opus", headers={"anthropic-version": "2023-06-01"})
    assert resp.status == 404
    assert_anthropic_error(await resp.json(), "not_found_error")


async def test_cli_failure_mid_turn(client: TestClient) -> None:
    resp, body = await create(client, [user("@exit=3")])
    assert resp.status == 502
    assert_anthropic_error(body, "api_error")
    resp = await client.post(
        URL, json={"model": "claude-code", "max_tokens": 5, "messages": [user("@exit=3")], "stream": True}
    )
    assert resp.status == 200 and resp.headers[SESSION]
    events = parse_sse(await resp.text())
    assert [ev.event for ev in events[:3]] == ["message_start", "content_block_start", "ping"]
    assert events[-1].event == "error" and "message_stop" not in [ev.event for ev in events]
    assert "code 3" in assert_anthropic_error(events[-1].json(), "api_error")


async def test_a_busy_session_is_409(client: TestClient) -> None:
    body = {"model": "claude-code", "max_tokens": 5, "messages": [user("wait @sleep=5")], "stream": True}
    slow = await client.post(URL, json=body)
    resp, error = await create(client, [user("me too")], headers={SESSION: slow.headers[SESSION]})
    assert resp.status == 409
    assert "already running" in assert_anthropic_error(error, "invalid_request_error")
    slow.close()


async def test_x_api_key_is_checked(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=("sk-ant-right",))))
    resp, body = await create(client, [user("x")])
    assert resp.status == 401
    assert_anthropic_error(body, "authentication_error")
    resp, body = await create(client, [user("x")], headers={"x-api-key": "sk-ant-wrong"})
    assert resp.status == 401
    resp, body = await create(client, [user("x")], headers={"x-api-key": "sk-ant-right"})
    assert resp.status == 200, body


# ---- end to end: the anthropic SDK, the real CLI ---------------------------------------------------


@pytest.fixture(scope="module")
def trace_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    """A server that shows Claude Code's tool activity in compatible answers."""
    running = start_server(
        tmp_path_factory.mktemp("compat-trace"), fake_api, real_cli_path(), {"CLAUDE_SERVER_COMPAT_TOOL_TRACE": "true"}
    )
    yield running
    stop_server(running)


def sdk(server: RunningServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="anything", max_retries=0)


@pytest.mark.e2e
async def test_sdk_create_stream_and_models(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-code", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
        )
        message = await raw.parse()
        assert raw.headers[SESSION]
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].text == "Echo(1): hello"  # type: ignore[union-attr]
        assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0

        async with client.messages.stream(
            model="claude-code-sonnet", max_tokens=100, messages=[{"role": "user", "content": "stream this please"}]
        ) as stream:
            deltas = [delta async for delta in stream.text_stream]
            final = await stream.get_final_message()
        models = [m.id async for m in client.models.list()]
    assert len(deltas) > 1 and "".join(deltas) == "Echo(1): stream this please"
    assert final.content[0].text == "Echo(1): stream this please"  # type: ignore[union-attr]
    assert final.model == "claude-code-sonnet" and final.usage.output_tokens > 0
    assert "claude-code-opus" in models


@pytest.mark.e2e
async def test_sdk_chat_history_runs_as_one_session(e2e_server: RunningServer, fake_api: FakeAnthropic) -> None:
    messages: list[Any] = []
    sessions = []
    async with sdk(e2e_server) as client:
        tag = uuid.uuid4().hex[:8]  # the server is shared: no other test's chat has this history
        for i, question in enumerate((f"first {tag}", "second", "third")):
            messages.append({"role": "user", "content": question})
            raw = await client.messages.with_raw_response.create(
                model="claude-code", max_tokens=100, system="You are terse.", messages=messages
            )
            sessions.append(raw.headers[SESSION])
            reply = await raw.parse()
            assert reply.content[0].text == f"Echo({2 * i + 1}): {question}"  # type: ignore[union-attr]
            messages.append({"role": "assistant", "content": [block.model_dump() for block in reply.content]})
    assert len(set(sessions)) == 1
    sizes = [
        len([m for m in r.body["messages"] if m.get("role") in ("user", "assistant")])
        for r in fake_api.for_session(sessions[0])
    ]
    assert sizes == [1, 3, 5]


@pytest.mark.e2e
async def test_sdk_errors(e2e_server: RunningServer) -> None:
    async with sdk(e2e_server) as client:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(
                model="claude-code",
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
                tools=[{"name": "f", "input_schema": {"type": "object"}}],
            )
        assert "tools" in str(bad.value)
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(
                model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(
                model="claude-code",
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
                extra_headers={SESSION: "00000000-0000-0000-0000-000000000000"},
            )


@pytest.mark.e2e
async def test_tool_trace_shows_claude_codes_tools(trace_server: RunningServer) -> None:
    prompt = [{"role": "user", "content": "[[bash: echo traced]]"}]
    async with sdk(trace_server) as client:
        whole = await client.messages.create(model="claude-code", max_tokens=10, messages=prompt)
        async with client.messages.stream(model="claude-code", max_tokens=10, messages=prompt) as stream:
            streamed = "".join([delta async for delta in stream.text_stream])
    expected = "> Bash: echo traced\n\nTool said: traced"
    assert whole.content[0].text == expected  # type: ignore[union-attr]
    assert streamed == expected
