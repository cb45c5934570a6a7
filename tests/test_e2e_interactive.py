"""End to end, interactive sessions: warm CLIs, if_busy, interrupts that keep the CLI,
permission requests and Claude's questions over HTTP. The real server runs the real CLI
against the fake Anthropic API; the fake model answers ``Echo(<messages>): <text>``,
``[[bash: cmd]]`` calls Bash, ``[[ask: Q | a | b]]`` calls AskUserQuestion, and
``[[slow: S]]`` spreads its answer over S seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import marked_pids, wait_until
from tests.test_e2e_core import (
    ECHO_RE,
    SseReader,
    get_json,
    post,
    run_turn,
    turn_processes_running,
    wait_turn_finished,
)

pytestmark = pytest.mark.e2e

GONE_TIMEOUT_S = 5.0
# A process the turn's Bash tool leaves running on its own (new session, no pipes to the CLI).
ORPHAN_CMDLINE = b"time.sleep(301)"
ORPHAN_PROMPT = "[[bash: setsid -f python3 -c 'import time; time.sleep(301)' </dev/null >/dev/null 2>&1]]"


def echo_count(texts: list[str]) -> int:
    counts = [int(m.group(1)) for text in texts if (m := ECHO_RE.fullmatch(text))]
    assert counts, texts
    return counts[-1]


async def turn_row(http: aiohttp.ClientSession, server: RunningServer, turn_id: str) -> dict[str, Any]:
    return await get_json(http, f"{server.url}/api/turns/{turn_id}")


async def process_of(http: aiohttp.ClientSession, server: RunningServer, turn_id: str) -> str:
    process = (await turn_row(http, server, turn_id))["process_id"]
    assert process, "the turn has no process"
    return str(process)


async def gone(process_id: str, timeout: float = GONE_TIMEOUT_S) -> bool:
    return await asyncio.to_thread(wait_until, lambda: not marked_pids(process_id), timeout)


async def warm_stats(http: aiohttp.ClientSession, server: RunningServer) -> dict[str, Any]:
    return dict((await get_json(http, f"{server.url}/health"))["warm"])


@pytest.fixture
async def server(
    fake_api: FakeAnthropic, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """A server of the test's own, with the settings of its ``server_env`` mark."""
    mark = request.node.get_closest_marker("server_env")
    extra = dict(mark.args[0]) if mark else {}
    running = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path(), extra)
    yield running
    await asyncio.to_thread(stop_server, running)


# ---- warm CLIs -------------------------------------------------------------------------------


async def test_three_turns_run_in_one_cli_with_the_history_and_their_own_costs(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid = first.session_id
    turns = [first]
    for prompt in ("two", "three"):
        turns.append(await run_turn(http, server, {"prompt": prompt, "session_id": sid}))
    processes = {await process_of(http, server, t.turn_id) for t in turns}
    assert len(processes) == 1, processes
    assert [echo_count(t.texts) for t in turns] == [1, 3, 5]
    assert [t.init["session_id"] for t in turns] == [sid] * 3
    rows = [await wait_turn_finished(http, server, t.turn_id) for t in turns]
    # Each turn's own cost, not the CLI's running total (0.00028, 0.00056, 0.00084).
    costs = [row["cost_usd"] for row in rows]
    assert costs == pytest.approx([costs[0]] * 3) and costs[0] > 0
    assert [t.last["total_cost_usd"] for t in turns] == pytest.approx([costs[0] * n for n in (1, 2, 3)])
    stats = await get_json(http, f"{server.url}/api/stats")
    assert stats["total"]["cost_usd"] == pytest.approx(sum(costs))
    session = await get_json(http, f"{server.url}/api/sessions/{sid}")
    assert session["total_cost_usd"] == pytest.approx(sum(costs))
    warm = await warm_stats(http, server)
    assert warm["hits"] == 2 and warm["size"] == 1
    metrics = await (await http.get(f"{server.url}/metrics")).text()
    assert "claude_server_warm_hits_total 2.0" in metrics and "claude_server_warm_clis 1.0" in metrics


@pytest.mark.server_env({"CLAUDE_SERVER_WARM_IDLE_TIMEOUT": "0"})
async def test_without_warm_clis_every_turn_has_a_cli_of_its_own(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    second = await run_turn(http, server, {"prompt": "two", "session_id": first.session_id})
    a, b = await process_of(http, server, first.turn_id), await process_of(http, server, second.turn_id)
    assert a != b and echo_count(second.texts) == 3
    assert await gone(a) and await gone(b)
    rows = [await wait_turn_finished(http, server, t.turn_id) for t in (first, second)]
    assert rows[0]["cost_usd"] == pytest.approx(rows[1]["cost_usd"])
    assert rows[1]["exit_code"] == 0


@pytest.mark.server_env({"CLAUDE_SERVER_WARM_IDLE_TIMEOUT": "1"})
async def test_an_idle_cli_ends_after_the_timeout_and_the_next_turn_resumes(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    process = await process_of(http, server, first.turn_id)
    assert marked_pids(process)
    assert await gone(process, 5)
    assert (await warm_stats(http, server))["expired"] == 1
    again = await run_turn(http, server, {"prompt": "two", "session_id": first.session_id})
    assert await process_of(http, server, again.turn_id) != process
    assert echo_count(again.texts) == 3


@pytest.mark.server_env({"CLAUDE_SERVER_MAX_WARM": "1"})
async def test_beyond_the_pool_limit_the_least_recently_used_cli_ends(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    a = await run_turn(http, server, {"prompt": "a"})
    b = await run_turn(http, server, {"prompt": "b"})
    pa, pb = await process_of(http, server, a.turn_id), await process_of(http, server, b.turn_id)
    assert await gone(pa)
    assert marked_pids(pb)
    assert (await warm_stats(http, server))["evictions"] == 1


async def test_an_option_fixed_at_start_restarts_cold_and_the_model_changes_in_place(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid, process = first.session_id, await process_of(http, server, first.turn_id)
    model = await run_turn(http, server, {"prompt": "two", "session_id": sid, "model": "claude-haiku-4-5"})
    assert await process_of(http, server, model.turn_id) == process
    assert model.init["model"] == "claude-haiku-4-5"
    assert fake_api.for_session(sid)[-1].body["model"] == "claude-haiku-4-5"
    tools = await run_turn(
        http, server, {"prompt": "three", "session_id": sid, "model": "claude-haiku-4-5", "allowed_tools": ["Read"]}
    )
    assert await process_of(http, server, tools.turn_id) != process
    assert echo_count(tools.texts) == 5
    assert await gone(process)


async def test_a_warm_cli_killed_between_turns_is_replaced_and_nothing_is_lost(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    process = await process_of(http, server, first.turn_id)
    for pid in marked_pids(process):
        os.kill(pid, signal.SIGKILL)
    assert await gone(process)
    again = await run_turn(http, server, {"prompt": "two", "session_id": first.session_id})
    assert again.last["subtype"] == "success" and echo_count(again.texts) == 3
    assert await process_of(http, server, again.turn_id) != process


# ---- interrupts and if_busy ----------------------------------------------------------------


async def start_slow(
    http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, SseReader]:
    """A streaming turn whose answer takes 20 s; returns once its text started."""
    resp = await post(http, server, {"prompt": "[[slow: 20]] take your time", **body})
    assert resp.status == 200, await resp.text()
    reader = SseReader(resp)
    await reader.until(lambda ev: ev.event is None and '"stream_event"' not in ev.data and '"init"' in ev.data)
    return resp, reader


async def test_an_interrupt_ends_the_turn_at_once_and_keeps_the_cli(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid, process = first.session_id, await process_of(http, server, first.turn_id)
    resp, reader = await start_slow(http, server, {"session_id": sid})
    async with resp:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with http.post(f"{server.url}/api/sessions/{sid}/interrupt") as answer:
            assert answer.status == 200, await answer.text()
        elapsed = loop.time() - started
        events = await reader.rest()
    assert elapsed < 1.0, elapsed
    assert events[-1].event == "error" and events[-1].json()["code"] == "cancelled"
    assert any('"result"' in ev.data for ev in events)  # the CLI's own result came first
    row = await wait_turn_finished(http, server, resp.headers["X-Turn-Id"])
    assert row["status"] == "cancelled" and row["process_id"] == process
    assert marked_pids(process)
    again = await run_turn(http, server, {"prompt": "still there?", "session_id": sid})
    assert await process_of(http, server, again.turn_id) == process
    assert echo_count(again.texts) >= 3


async def test_a_client_that_leaves_interrupts_its_turn_and_the_cli_stays(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid, process = first.session_id, await process_of(http, server, first.turn_id)
    resp, _ = await start_slow(http, server, {"session_id": sid})
    turn_id = resp.headers["X-Turn-Id"]
    resp.close()
    row = await wait_turn_finished(http, server, turn_id)
    assert row["status"] == "cancelled" and row["error"]["code"] == "client_disconnected"
    assert marked_pids(process)
    again = await run_turn(http, server, {"prompt": "back", "session_id": sid})
    assert await process_of(http, server, again.turn_id) == process


async def test_if_busy_queue_runs_the_message_after_the_current_turn(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid = first.session_id
    resp = await post(http, server, {"prompt": "[[slow: 2]] slowly", "session_id": sid})
    async with resp:
        busy = await post(http, server, {"prompt": "rejected", "session_id": sid})
        assert busy.status == 409
        busy.close()
        queued = await post(http, server, {"prompt": "next", "session_id": sid, "if_busy": "queue"})
        async with queued:
            assert queued.status == 200
            reader = SseReader(queued)
            events = await reader.rest()
        slow_events = await SseReader(resp).rest()
    assert events[0].event == "queued" and events[0].json()["position"] == 1
    assert slow_events[-1].json()["type"] == "result"
    texts = [ev.json()["result"] for ev in events if ev.event is None and '"type":"result"' in ev.data]
    assert texts and texts[-1] == "Echo(5): next"
    ids = [resp.headers["X-Turn-Id"], queued.headers["X-Turn-Id"]]
    assert len({await process_of(http, server, t) for t in ids}) == 1


async def test_if_busy_interrupt_stops_the_running_turn_and_sends_at_once(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid = first.session_id
    resp, reader = await start_slow(http, server, {"session_id": sid})
    async with resp:
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = await run_turn(http, server, {"prompt": "stop and do this", "session_id": sid, "if_busy": "interrupt"})
        elapsed = loop.time() - started
        slow = await reader.rest()
    assert elapsed < 3.0, elapsed
    assert slow[-1].event == "error" and slow[-1].json()["code"] == "cancelled"
    assert now.last["subtype"] == "success" and now.texts[-1].endswith("stop and do this")
    assert now.turn_id != resp.headers["X-Turn-Id"]


# ---- permission requests and questions -------------------------------------------------------


async def answer(http: aiohttp.ClientSession, url: str, body: Any, status: int = 200) -> dict[str, Any]:
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        assert resp.status == status, data
        return dict(data)


def requests_of(events: list[Any], name: str) -> list[dict[str, Any]]:
    return [ev.json() for ev in events if ev.event == name]


async def test_a_tool_waits_for_approval_over_http_and_runs_once_allowed(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic
) -> None:
    word = uuid.uuid4().hex[:8]
    resp = await post(http, server, {"prompt": f"[[bash: echo {word} > f.txt]]", "permission_prompt": True})
    async with resp:
        turn_id = resp.headers["X-Turn-Id"]
        reader = SseReader(resp)
        asked = (await reader.until(lambda ev: ev.event == "permission_request")).json()
        assert asked["tool_name"] == "Bash" and asked["input"]["command"] == f"echo {word} > f.txt"
        assert asked["suggestions"]
        listed = await get_json(http, f"{server.url}/api/turns/{turn_id}/permissions")
        assert [p["request_id"] for p in listed["permissions"]] == [asked["request_id"]]
        # A client that reconnects sees the request again in the replay.
        async with http.get(f"{server.url}/api/turns/{turn_id}/events") as replay:
            again = SseReader(replay)
            await again.until(lambda ev: ev.event == "permission_request")
        url = f"{server.url}/api/turns/{turn_id}/permissions/{asked['request_id']}"
        await answer(http, url, {"behavior": "maybe"}, 400)
        await answer(http, f"{server.url}/api/turns/{turn_id}/permissions/nope", {"behavior": "allow"}, 404)
        assert (await answer(http, url, {"behavior": "allow"}))["behavior"] == "allow"
        await answer(http, url, {"behavior": "allow"}, 409)
        events = await reader.rest()
    resolved = requests_of(events, "permission_resolved")
    assert resolved == [
        {"type": "permission_resolved", "request_id": asked["request_id"], "behavior": "allow", "by": "anonymous"}
    ]
    assert events[-1].json()["subtype"] == "success"
    cwd = Path(events[0].json()["cwd"])
    assert (cwd / "f.txt").read_text().strip() == word


async def test_a_denied_tool_is_refused_and_the_turn_goes_on(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic
) -> None:
    resp = await post(http, server, {"prompt": "[[bash: echo no > denied.txt]]", "permission_prompt": True})
    async with resp:
        turn_id = resp.headers["X-Turn-Id"]
        reader = SseReader(resp)
        asked = (await reader.until(lambda ev: ev.event == "permission_request")).json()
        url = f"{server.url}/api/turns/{turn_id}/permissions/{asked['request_id']}"
        await answer(http, url, {"behavior": "deny", "message": "not in this repo"})
        events = await reader.rest()
    assert events[-1].json()["subtype"] == "success"
    assert any("not in this repo" in text for text in [ev.data for ev in events if '"tool_result"' in ev.data])
    assert not (Path(events[0].json()["cwd"]) / "denied.txt").exists()


async def test_remember_allows_the_same_command_for_the_rest_of_the_session(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    prompt = "[[bash: python3 -c 'print(42)']]"
    resp = await post(http, server, {"prompt": prompt, "permission_prompt": True})
    async with resp:
        turn_id = resp.headers["X-Turn-Id"]
        reader = SseReader(resp)
        asked = (await reader.until(lambda ev: ev.event == "permission_request")).json()
        url = f"{server.url}/api/turns/{turn_id}/permissions/{asked['request_id']}"
        await answer(http, url, {"behavior": "allow", "remember": True})
        events = await reader.rest()
    assert requests_of(events, "permission_resolved")[0]["remember"] is True
    sid = events[0].json()["session_id"]
    again = await run_turn(http, server, {"prompt": prompt, "session_id": sid, "permission_prompt": True})
    assert not requests_of(again.events, "permission_request")
    assert any("Tool said: 42" in text for text in again.texts), again.texts


@pytest.mark.server_env({"CLAUDE_SERVER_PERMISSION_TIMEOUT": "2"})
async def test_an_unanswered_request_is_denied_at_the_timeout(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    run = await run_turn(http, server, {"prompt": "[[bash: echo late > late.txt]]", "permission_prompt": True})
    resolved = requests_of(run.events, "permission_resolved")
    assert resolved[0]["by"] == "timeout" and "CLAUDE_SERVER_PERMISSION_TIMEOUT" in resolved[0]["message"]
    assert run.last["subtype"] == "success"


async def test_an_interrupt_while_a_request_waits_denies_it(http: aiohttp.ClientSession, server: RunningServer) -> None:
    resp = await post(http, server, {"prompt": "[[bash: echo x > x.txt]]", "permission_prompt": True})
    async with resp:
        turn_id = resp.headers["X-Turn-Id"]
        reader = SseReader(resp)
        await reader.until(lambda ev: ev.event == "permission_request")
        async with http.post(f"{server.url}/api/turns/{turn_id}/cancel") as cancel:
            assert cancel.status == 200
        events = await reader.rest()
    assert requests_of(events, "permission_resolved")[0]["behavior"] == "deny"
    assert events[-1].json()["code"] == "cancelled"
    assert (await get_json(http, f"{server.url}/api/turns/{turn_id}/permissions"))["permissions"] == []


async def test_a_question_is_streamed_and_its_answer_reaches_claude(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic
) -> None:
    resp = await post(http, server, {"prompt": "[[ask: Which colour? | red | blue]]", "permission_prompt": True})
    async with resp:
        turn_id = resp.headers["X-Turn-Id"]
        reader = SseReader(resp)
        asked = (await reader.until(lambda ev: ev.event == "question")).json()
        assert asked["questions"][0]["question"] == "Which colour?"
        assert [o["label"] for o in asked["questions"][0]["options"]] == ["red", "blue"]
        listed = await get_json(http, f"{server.url}/api/turns/{turn_id}/questions")
        assert [q["request_id"] for q in listed["questions"]] == [asked["request_id"]]
        url = f"{server.url}/api/turns/{turn_id}/questions/{asked['request_id']}"
        await answer(http, url, {"answers": {"Which colour?": 3}}, 400)
        await answer(http, url, {"answers": {"Which colour?": "blue"}})
        events = await reader.rest()
    assert requests_of(events, "question_resolved")[0]["answers"] == {"Which colour?": "blue"}
    sid = events[0].json()["session_id"]
    assert '\\"Which colour?\\"=\\"blue\\"' in fake_api.for_session(sid)[-1].text()


# ---- restarts ------------------------------------------------------------------------------


async def test_a_server_killed_with_warm_clis_leaves_none_after_its_restart(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    try:
        # The warm CLI leaves a detached process behind: the CLI itself ends when the kill
        # closes its stdin, so this is what the restart has to find and end.
        first = await run_turn(http, server, {"prompt": ORPHAN_PROMPT, "dangerously-skip-permissions": True})
        process = await process_of(http, server, first.turn_id)
        assert await asyncio.to_thread(wait_until, lambda: turn_processes_running(process, ORPHAN_CMDLINE), 10.0)
        server.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.proc.wait, 10)
        assert turn_processes_running(process, ORPHAN_CMDLINE)  # orphaned by the kill
    finally:
        await asyncio.to_thread(stop_server, server)
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    try:
        await get_json(http, f"{server.url}/health")
        assert await gone(process)
        again = await run_turn(http, server, {"prompt": "two", "session_id": first.session_id})
        assert echo_count(again.texts) == 5  # the tool exchange, the answer, then this prompt
    finally:
        await asyncio.to_thread(stop_server, server)


async def test_a_clean_shutdown_ends_the_warm_clis(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    try:
        first = await run_turn(http, server, {"prompt": "one"})
        process = await process_of(http, server, first.turn_id)
        assert marked_pids(process)
    finally:
        await asyncio.to_thread(stop_server, server)
    assert server.proc.returncode == 0
    assert await gone(process)


async def test_deleting_a_session_ends_its_warm_cli(http: aiohttp.ClientSession, server: RunningServer) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    process = await process_of(http, server, first.turn_id)
    async with http.delete(f"{server.url}/api/sessions/{first.session_id}") as resp:
        assert resp.status in (200, 204), await resp.text()
    assert await gone(process)
    assert (await warm_stats(http, server))["size"] == 0
