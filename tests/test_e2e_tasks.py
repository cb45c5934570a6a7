"""End to end, background tasks: the real server runs the real CLI against the fake Anthropic
API (``Echo(<messages>): <text>``; ``[[slow: S]]`` spreads an answer over S seconds), and a
webhook receiver of the test's own listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.test_e2e_core import ECHO_RE, JSON_HEADERS, get_json, run_turn

pytestmark = pytest.mark.e2e

FINAL = ("succeeded", "failed", "cancelled", "interrupted")
SECRET = "hook-secret"


async def submit(http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]) -> str:
    async with http.post(f"{server.url}/api/tasks", data=json.dumps(body), headers=JSON_HEADERS) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
        return str(answer["task_id"])


async def task_of(http: aiohttp.ClientSession, server: RunningServer, task_id: str) -> dict[str, Any]:
    return await get_json(http, f"{server.url}/api/tasks/{task_id}")


async def deliveries_of(http: aiohttp.ClientSession, server: RunningServer, task_id: str) -> list[dict[str, Any]]:
    return list((await get_json(http, f"{server.url}/api/tasks/{task_id}/deliveries"))["deliveries"])


async def until(
    http: aiohttp.ClientSession, server: RunningServer, task_id: str, statuses: tuple[str, ...] = FINAL
) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            task = await task_of(http, server, task_id)
            if task["status"] in statuses:
                return task
            await asyncio.sleep(0.1)


@pytest.fixture
async def server(
    fake_api: FakeAnthropic, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """A server of the test's own with one slot (and the settings of its ``server_env`` mark)."""
    mark = request.node.get_closest_marker("server_env")
    extra = {"CLAUDE_SERVER_MAX_CONCURRENT": "1", **(dict(mark.args[0]) if mark else {})}
    running = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path(), extra)
    yield running
    await asyncio.to_thread(stop_server, running)


class Receiver:
    """A webhook receiver that fails its first ``failures`` deliveries with a 500."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        if len(self.seen) <= self.failures:
            return web.Response(status=500, text="not yet")
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """What the README tells receivers to do."""
    timestamp = headers["X-Claude-Server-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(expected, headers["X-Claude-Server-Signature"])


# ---- order ---------------------------------------------------------------------------------


async def test_tasks_start_by_priority_and_an_interactive_turn_goes_first(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    blocker = await submit(http, server, {"prompt": "[[slow: 3]] first"})
    await until(http, server, blocker, ("running",))
    ids = {name: await submit(http, server, {"prompt": name, "priority": p}) for name, p in (("low", 2), ("high", 9))}
    interactive = await run_turn(http, server, {"prompt": "me first"})  # waits for the slot, ahead of the tasks
    assert ECHO_RE.fullmatch(interactive.texts[-1])
    turn = await get_json(http, f"{server.url}/api/turns/{interactive.turn_id}")
    done = {name: await until(http, server, tid) for name, tid in ids.items()}
    assert all(t["status"] == "succeeded" for t in done.values()), done
    assert turn["finished_at"] <= done["high"]["started_at"] <= done["high"]["ended_at"] <= done["low"]["started_at"]
    assert ECHO_RE.fullmatch(done["high"]["result"]) and done["high"]["cost_usd"] > 0


async def test_tasks_on_one_session_run_in_order_and_cancel_works_queued_or_running(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    first = await run_turn(http, server, {"prompt": "one"})
    sid = first.session_id
    a = await submit(http, server, {"prompt": "two", "session_id": sid, "priority": 1})
    b = await submit(http, server, {"prompt": "three", "session_id": sid, "priority": 10})
    ta, tb = await until(http, server, a), await until(http, server, b)
    # The second has the whole history: it ran after the first, in the same session.
    assert ECHO_RE.fullmatch(ta["result"])[1] == "3" and ECHO_RE.fullmatch(tb["result"])[1] == "5"  # type: ignore[index]
    assert ta["session_id"] == tb["session_id"] == sid
    running = await submit(http, server, {"prompt": "[[slow: 30]] long"})
    await until(http, server, running, ("running",))
    queued = await submit(http, server, {"prompt": "never"})
    for task_id in (queued, running):
        async with http.post(f"{server.url}/api/tasks/{task_id}/cancel") as resp:
            assert resp.status == 200, await resp.text()
    assert (await until(http, server, running))["status"] == "cancelled"
    never = await until(http, server, queued)
    assert never["status"] == "cancelled" and never["turn_id"] is None


# ---- webhooks --------------------------------------------------------------------------------


@pytest.mark.server_env({"CLAUDE_SERVER_WEBHOOK_ALLOW_PRIVATE": "true"})
async def test_a_webhook_is_signed_and_retried_until_it_is_taken(
    http: aiohttp.ClientSession, server: RunningServer, receiver: Receiver
) -> None:
    task_id = await submit(
        http,
        server,
        {"prompt": "tell me", "webhook_url": receiver.url, "webhook_secret": SECRET, "metadata": {"job": 7}},
    )
    await asyncio.wait_for(receiver.arrived.wait(), 60)
    assert len(receiver.seen) == 3  # two failures, then taken
    headers, body = receiver.seen[-1]
    assert verify(headers, body, SECRET) and not verify(headers, body, "wrong secret")
    assert headers["X-Claude-Server-Event"] == "task.finished" and headers["Content-Type"] == "application/json"
    assert len({h["X-Claude-Server-Delivery"] for h, _ in receiver.seen}) == 1
    payload = json.loads(body)
    assert payload["task_id"] == task_id and payload["status"] == "succeeded" and payload["metadata"] == {"job": 7}
    assert ECHO_RE.fullmatch(payload["result"]) and payload["turn_id"] and payload["session_id"]
    assert "webhook_secret" not in payload
    async with asyncio.timeout(10):  # the receiver answered; the server records it next
        while (deliveries := await deliveries_of(http, server, task_id))[0]["status"] == "pending":
            await asyncio.sleep(0.05)
    assert len(deliveries) == 1 and deliveries[0]["status"] == "delivered"
    assert [t["status_code"] for t in deliveries[0]["tries"]] == [500, 500, 204]
    async with http.post(f"{server.url}/api/tasks/{task_id}/redeliver") as resp:
        assert resp.status == 202
    async with asyncio.timeout(20):
        while len(receiver.seen) < 4:
            await asyncio.sleep(0.05)
    assert json.loads(receiver.seen[-1][1]) == payload


async def test_webhooks_to_non_public_addresses_are_refused(http: aiohttp.ClientSession, server: RunningServer) -> None:
    for url in (
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
    ):
        async with http.post(
            f"{server.url}/api/tasks", data=json.dumps({"prompt": "x", "webhook_url": url}), headers=JSON_HEADERS
        ) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["field"] == "webhook_url", (url, error)
    body = {"tasks": [{"prompt": "fine"}, {"prompt": "x", "webhook_url": "http://10.0.0.1/"}]}
    async with http.post(f"{server.url}/api/tasks/batch", data=json.dumps(body), headers=JSON_HEADERS) as resp:
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["field"] == "tasks[1].webhook_url"
    assert (await get_json(http, f"{server.url}/api/tasks"))["tasks"] == []


# ---- restarts and retries ------------------------------------------------------------------


async def test_after_kill_9_queued_tasks_run_and_the_running_one_runs_again(
    http: aiohttp.ClientSession, server: RunningServer, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    running = await submit(http, server, {"prompt": "[[slow: 30]] long"})
    await until(http, server, running, ("running",))
    queued = [await submit(http, server, {"prompt": f"queued {n}"}) for n in range(2)]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    again = await asyncio.to_thread(
        start_server, tmp_path, fake_api, real_cli_path(), {"CLAUDE_SERVER_MAX_CONCURRENT": "1"}
    )
    try:
        for task_id in queued:
            assert (await until(http, again, task_id))["status"] == "succeeded"
        retried = await task_of(http, again, running)
        assert retried["attempts"] == 2 and retried["status"] in ("running", "succeeded"), retried
        async with http.post(f"{again.url}/api/tasks/{running}/cancel") as resp:
            assert resp.status in (200, 409)
    finally:
        await asyncio.to_thread(stop_server, again)


async def test_a_cli_that_fails_its_first_start_is_started_again(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    flag = tmp_path / "failed-once"
    wrapper = tmp_path / "flaky-claude"
    wrapper.write_text(
        "#!/bin/sh\n"
        '# The first turn\'s CLI exits at once, printing nothing; "--version" and later ones run.\n'
        f'case " $* " in *" -p "*) if [ ! -e "{flag}" ]; then touch "{flag}"; exit 1; fi;; esac\n'
        f'exec "{real_cli_path()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, wrapper, {})
    try:
        task = await until(http, server, await submit(http, server, {"prompt": "hello"}))
        assert task["status"] == "succeeded" and ECHO_RE.fullmatch(task["result"]), task
        assert flag.exists()
        assert "ended before printing anything" in server.log_text()
    finally:
        await asyncio.to_thread(stop_server, server)
    assert os.path.exists(flag)
