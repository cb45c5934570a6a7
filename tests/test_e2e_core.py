"""End to end: the real server (a subprocess) running the real Claude Code CLI against the
fake Anthropic API (tests/fake_anthropic.py), driven over HTTP exactly as a client would.

The fake model answers ``Echo(<number of conversation messages>): <newest user text>``, so
the number tells whether a resumed or forked session kept its history."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic, Recorded
from tests.helpers import SseEvent, marked_pids, parse_sse, session_of, turn_processes_running, wait_until

pytestmark = pytest.mark.e2e

JSON_HEADERS = {"Content-Type": "application/json"}
UNKNOWN_SESSION = "00000000-0000-0000-0000-000000000000"
# A Bash tool that outlives any test's patience; the CLI refuses a bare `sleep N`.
LONG_TOOL_PROMPT = "[[bash: python3 -c 'import time; time.sleep(30)']]"
LONG_TOOL_CMDLINE = b"time.sleep(30)"
STREAM_TIMEOUT_S = 60.0
TOOL_START_TIMEOUT_S = 30.0
# What the brief promises: a turn's processes are gone this soon after its client left.
CLEANUP_TIMEOUT_S = 2.0
SHUTDOWN_TIMEOUT_S = 15.0
ECHO_RE = re.compile(r"Echo\((\d+)\): (.*)", re.S)


# ---- reading turns ------------------------------------------------------------------------


def data_objects(events: list[SseEvent]) -> list[dict[str, Any]]:
    """The CLI lines of a stream (server events such as ``event: error`` left out)."""
    return [ev.json() for ev in events if ev.event is None]


def content_blocks(events: list[SseEvent], message_type: str, block_type: str) -> list[dict[str, Any]]:
    """Content blocks of ``block_type`` in the ``message_type`` (assistant/user) lines."""
    return [
        block
        for obj in data_objects(events)
        if obj.get("type") == message_type
        for block in obj["message"]["content"]
        if isinstance(block, dict) and block.get("type") == block_type
    ]


def answer_texts(events: list[SseEvent]) -> list[str]:
    return [block["text"] for block in content_blocks(events, "assistant", "text")]


def has_tool_use(ev: SseEvent) -> bool:
    return bool(content_blocks([ev], "assistant", "tool_use"))


def is_init(ev: SseEvent) -> bool:
    return ev.event is None and ev.json().get("type") == "system" and ev.json().get("subtype") == "init"


@dataclass
class TurnStream:
    """A finished streaming turn as the client saw it."""

    headers: dict[str, str]
    events: list[SseEvent]

    @property
    def turn_id(self) -> str:
        return self.headers["X-Turn-Id"]

    @property
    def init(self) -> dict[str, Any]:
        first = data_objects(self.events)[0]
        assert (first.get("type"), first.get("subtype")) == ("system", "init"), first
        return first

    @property
    def session_id(self) -> str:
        return str(self.init["session_id"])

    @property
    def cwd(self) -> Path:
        return Path(self.init["cwd"])

    @property
    def texts(self) -> list[str]:
        return answer_texts(self.events)

    @property
    def last(self) -> dict[str, Any]:
        return dict(self.events[-1].json())


class SseReader:
    """Reads an open SSE response incrementally. Frames events from raw chunks, since
    aiohttp's line reader refuses lines over 128 KiB and CLI lines can be megabytes."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: list[SseEvent] = []
        self._buffer = b""

    async def _next(self) -> SseEvent | None:
        """The next event, or None at the end of the stream; comments (": ping") skipped."""
        parsed: list[SseEvent] = []
        while not parsed:
            while b"\n\n" not in self._buffer:
                chunk = await self.resp.content.readany()
                if not chunk:
                    return None
                self._buffer += chunk.replace(b"\r\n", b"\n")
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            parsed = parse_sse(block.decode() + "\n\n")
        self.events.append(parsed[0])
        return parsed[0]

    async def until(self, predicate: Callable[[SseEvent], bool], timeout: float = STREAM_TIMEOUT_S) -> SseEvent:
        """The first (further) event that matches; fails if the stream ends or time runs out."""
        async with asyncio.timeout(timeout):
            while (ev := await self._next()) is not None:
                if predicate(ev):
                    return ev
        raise AssertionError(f"the stream ended without the awaited event: {self.events!r}")

    async def rest(self, timeout: float = STREAM_TIMEOUT_S) -> list[SseEvent]:
        """Everything up to the end of the stream."""
        async with asyncio.timeout(timeout):
            while await self._next() is not None:
                pass
        return self.events


async def post(http: aiohttp.ClientSession, server: RunningServer, body: Any) -> aiohttp.ClientResponse:
    # A file-like body: aiohttp warns about (and blocks the loop on) large bytes bodies.
    data = io.BytesIO(json.dumps(body).encode())
    return await http.post(f"{server.url}/api/claude", data=data, headers=JSON_HEADERS)


async def run_turn(http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]) -> TurnStream:
    """POST a streaming turn and read it to its end."""
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        async with await post(http, server, body) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            return TurnStream(dict(resp.headers), parse_sse(text))


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> dict[str, Any]:
    async with http.get(url) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return dict(body)


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    """An error answered before any stream, in the documented shape; returns ``error``."""
    async with resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        assert "X-Turn-Id" not in resp.headers
        error = (await resp.json())["error"]
    assert error["code"] == code, error
    assert error["message"]
    return dict(error)


async def wait_turn_finished(http: aiohttp.ClientSession, server: RunningServer, turn_id: str) -> dict[str, Any]:
    """The turn's record once the server has finished it."""
    async with asyncio.timeout(10):
        while True:
            turn = await get_json(http, f"{server.url}/api/turns/{turn_id}")
            if turn["status"] not in ("queued", "running"):
                return turn
            await asyncio.sleep(0.05)


def conversation(request: Recorded) -> list[dict[str, Any]]:
    """The user/assistant messages of an API request (the CLI also sends role "system")."""
    return [m for m in request.body.get("messages") or [] if m.get("role") in ("user", "assistant")]


async def process_of(http: aiohttp.ClientSession, server: RunningServer, turn_id: str) -> str:
    """The marker of the CLI process a turn runs in (its ``process_id``)."""
    process = (await get_json(http, f"{server.url}/api/turns/{turn_id}"))["process_id"]
    assert process, f"turn {turn_id} has no process"
    return str(process)


async def start_long_tool(
    http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any] | None = None
) -> tuple[aiohttp.ClientResponse, SseReader, str]:
    """Start a streaming turn whose Bash tool runs 30 s; returns once that tool is running,
    with the turn's CLI process id."""
    resp = await post(http, server, {"prompt": LONG_TOOL_PROMPT, "dangerously-skip-permissions": True, **(body or {})})
    try:
        assert resp.status == 200, await resp.text()
        reader = SseReader(resp)
        await reader.until(has_tool_use, TOOL_START_TIMEOUT_S)
        process = await process_of(http, server, resp.headers["X-Turn-Id"])
        started = await asyncio.to_thread(wait_until, lambda: turn_processes_running(process, LONG_TOOL_CMDLINE), 10.0)
        assert started, f"the tool did not start; marked processes: {marked_pids(process)}"
    except BaseException:
        resp.close()
        raise
    return resp, reader, process


async def no_process_left(process_id: str, timeout: float) -> bool:
    return await asyncio.to_thread(wait_until, lambda: not marked_pids(process_id), timeout)


async def tool_ended(process_id: str, timeout: float) -> bool:
    """Whether the long tool of ``start_long_tool`` is gone (its CLI may stay warm)."""
    return await asyncio.to_thread(
        wait_until, lambda: not turn_processes_running(process_id, LONG_TOOL_CMDLINE), timeout
    )


# ---- the happy paths ----------------------------------------------------------------------


async def test_new_session_streams_the_cli_lines_as_sse(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    turn = await run_turn(http, e2e_server, {"prompt": "hello"})

    assert turn.headers["Content-Type"] == "text/event-stream"
    assert turn.headers["Cache-Control"] == "no-cache"
    assert turn.turn_id
    assert [ev.id for ev in turn.events] == [f"{turn.turn_id}:{seq}" for seq in range(1, len(turn.events) + 1)]
    assert turn.events[0].event is None  # the very first event is the CLI's init line
    assert turn.init["session_id"]
    assert turn.cwd.parent == e2e_server.workspace_root.resolve()
    assert turn.cwd.name.startswith("session-")
    suffix = turn.cwd.name.removeprefix("session-")
    assert str(uuid.UUID(suffix)) == suffix
    assert turn.cwd.is_dir()
    assert "Echo(1): hello" in turn.texts
    assert turn.events[-1].event is None
    assert turn.last["type"] == "result"
    assert turn.last["subtype"] == "success"

    session = await get_json(http, f"{e2e_server.url}/api/sessions/{turn.session_id}")
    assert session["session_id"] == turn.session_id
    assert session["workspace_path"] == str(turn.cwd)
    assert session["created_at"] <= session["last_used_at"]


async def test_resume_keeps_the_session_its_workspace_and_history(
    http: aiohttp.ClientSession, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    first = await run_turn(http, e2e_server, {"prompt": "hello"})
    second = await run_turn(http, e2e_server, {"prompt": "and now?", "session_id": first.session_id})

    assert second.session_id == first.session_id
    assert second.cwd == first.cwd
    assert "Echo(3): and now?" in second.texts
    assert second.last["type"] == "result"
    last_request = fake_api.for_session(first.session_id)[-1]
    assert [m["role"] for m in conversation(last_request)] == ["user", "assistant", "user"]


async def test_stream_false_answers_one_json_result(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    async def turn_json(body: dict[str, Any]) -> dict[str, Any]:
        async with await post(http, e2e_server, {**body, "stream": False}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "application/json"
            assert resp.headers["X-Turn-Id"]
            return dict(await resp.json())

    first = await turn_json({"prompt": "one"})
    for key in ("session_id", "result", "subtype", "is_error", "total_cost_usd", "usage", "num_turns", "duration_ms"):
        assert key in first, (key, first)
    assert first["result"] == "Echo(1): one"
    assert first["subtype"] == "success"
    assert first["is_error"] is False

    second = await turn_json({"prompt": "two", "session_id": first["session_id"]})
    assert second["session_id"] == first["session_id"]
    assert second["result"] == "Echo(3): two"


async def test_fork_starts_a_new_session_with_the_history(
    http: aiohttp.ClientSession, e2e_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    parent = await run_turn(http, e2e_server, {"prompt": "hello"})
    fork = await run_turn(http, e2e_server, {"prompt": "forked", "session_id": parent.session_id, "fork_session": True})

    assert fork.session_id != parent.session_id
    assert fork.cwd == parent.cwd
    assert "Echo(3): forked" in fork.texts
    seen = fake_api.for_session(fork.session_id)
    assert seen, "the fake API saw no request for the forked session"
    assert len(conversation(seen[-1])) > 1
    detail = await get_json(http, f"{e2e_server.url}/api/sessions/{fork.session_id}")
    assert detail["workspace_path"] == str(parent.cwd)
    assert detail["forked_from"] == parent.session_id

    # The parent goes on without the fork's turn in its history.
    again = await run_turn(http, e2e_server, {"prompt": "still here?", "session_id": parent.session_id})
    assert again.session_id == parent.session_id
    assert again.cwd == parent.cwd
    assert "Echo(3): still here?" in again.texts


async def test_bash_tool_writes_into_the_session_workspace(
    http: aiohttp.ClientSession, e2e_server: RunningServer
) -> None:
    turn = await run_turn(
        http,
        e2e_server,
        {"prompt": "[[bash: echo made-by-tool > tool.txt]]", "dangerously-skip-permissions": True},
    )

    tool_uses = content_blocks(turn.events, "assistant", "tool_use")
    assert [block["name"] for block in tool_uses] == ["Bash"]
    results = content_blocks(turn.events, "user", "tool_result")
    assert [block["tool_use_id"] for block in results] == [tool_uses[0]["id"]]
    assert not results[0].get("is_error"), results
    assert (turn.cwd / "tool.txt").read_text() == "made-by-tool\n"
    assert turn.last["type"] == "result"
    assert turn.last["is_error"] is False


async def test_a_one_mib_prompt_goes_through_stdin(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    prompt = "x" * (1 << 20) + " " + marker
    turn = await run_turn(http, e2e_server, {"prompt": prompt})

    assert turn.last["type"] == "result"
    assert turn.last["is_error"] is False
    echoes = [text for text in turn.texts if text.startswith("Echo(1): ")]
    assert len(echoes) == 1, [text[:80] for text in turn.texts]
    assert echoes[0].endswith(marker)
    assert len(echoes[0]) > 1 << 20


# ---- refused before any stream ------------------------------------------------------------


async def test_unknown_session_is_404(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    error = await expect_error(
        await post(http, e2e_server, {"prompt": "hi", "session_id": UNKNOWN_SESSION}), 404, "session_not_found"
    )
    assert UNKNOWN_SESSION in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "prompt", id="missing-prompt"),
        pytest.param({"prompt": "   "}, "prompt", id="empty-prompt"),
        pytest.param({"prompt": "hi", "temperature": 0.5}, "temperature", id="unknown-field"),
        pytest.param({"prompt": 42}, "prompt", id="prompt-not-a-string"),
        pytest.param({"prompt": "hi", "max_turns": "3"}, "max_turns", id="max-turns-not-an-int"),
        pytest.param(
            {"prompt": "hi", "session_id": UNKNOWN_SESSION, "system_prompt": "be brief"},
            "system_prompt",
            id="system-prompt-with-session-id",
        ),
    ],
)
async def test_invalid_requests_are_400_naming_the_field(
    http: aiohttp.ClientSession, e2e_server: RunningServer, body: dict[str, Any], field: str
) -> None:
    error = await expect_error(await post(http, e2e_server, body), 400, "invalid_field")
    assert error["field"] == field
    assert field in error["message"]


async def test_a_body_that_is_not_json_is_415(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    resp = await http.post(f"{e2e_server.url}/api/claude", data="hello", headers={"Content-Type": "text/plain"})
    await expect_error(resp, 415, "unsupported_media_type")


# ---- one turn per session, ending turns ---------------------------------------------------


async def test_a_second_turn_on_a_busy_session_is_409(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    async with await post(http, e2e_server, {"prompt": "[[slow: 3]] take your time"}) as resp:
        assert resp.status == 200, await resp.text()
        reader = SseReader(resp)
        session_id = (await reader.until(is_init)).json()["session_id"]

        error = await expect_error(
            await post(http, e2e_server, {"prompt": "me too", "session_id": session_id}), 409, "session_busy"
        )
        assert error["turn_id"] == resp.headers["X-Turn-Id"]

        events = await reader.rest()
    assert any(text.startswith("Echo(1): [[slow: 3]]") for text in answer_texts(events))
    assert events[-1].json()["type"] == "result"


async def test_client_disconnect_ends_every_process_of_the_turn(
    http: aiohttp.ClientSession, e2e_server: RunningServer
) -> None:
    resp, reader, process = await start_long_tool(http, e2e_server)
    turn_id = resp.headers["X-Turn-Id"]
    session_id = session_of(reader.events)

    resp.close()  # drops the connection, not just the response

    # The turn is interrupted: its tool ends, its CLI stays warm for the session.
    assert await tool_ended(process, CLEANUP_TIMEOUT_S), f"still running: {marked_pids(process)}"
    assert marked_pids(process)
    finished = await wait_turn_finished(http, e2e_server, turn_id)
    assert finished["status"] == "cancelled"
    assert finished["error"]["code"] == "client_disconnected"

    # The interrupted exchange stays in the history, so the echo counts more than 1 message.
    again = await run_turn(http, e2e_server, {"prompt": "are you there?", "session_id": session_id})
    assert again.session_id == session_id
    assert again.last["type"] == "result"
    echoes = [m for text in again.texts if (m := ECHO_RE.fullmatch(text))]
    assert [m.group(2) for m in echoes] == ["are you there?"], again.texts
    assert int(echoes[0].group(1)) >= 3, again.texts


async def test_server_shutdown_ends_the_running_cli(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    try:
        resp, reader, process = await start_long_tool(http, server)
        async with resp:
            server.proc.send_signal(signal.SIGTERM)
            events = await reader.rest(SHUTDOWN_TIMEOUT_S)

        assert events[-1].event == "error", events[-1]
        assert events[-1].json()["type"] == "error"
        assert events[-1].json()["code"] == "server_shutdown"
        exit_code = await asyncio.to_thread(server.proc.wait, SHUTDOWN_TIMEOUT_S)
        assert exit_code == 0, server.log_text()
        assert await no_process_left(process, CLEANUP_TIMEOUT_S), f"still running: {marked_pids(process)}"
    finally:
        await asyncio.to_thread(stop_server, server)
