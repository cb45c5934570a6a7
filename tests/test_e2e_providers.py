"""End to end, providers: the real server runs the real CLI against two or three fake
Anthropic APIs, one per provider, which can be told to fail (``fail_with``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import FAKE_CLI, RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import marked_pids
from tests.test_e2e_core import ECHO_RE, JSON_HEADERS, get_json, run_turn

pytestmark = pytest.mark.e2e

KEYS = {"a": "sk-provider-a-0001-AAAA", "b": "sk-provider-b-0002-BBBB", "c": "sk-provider-c-0003-CCCC"}


@pytest.fixture(scope="module")
def apis() -> Iterator[dict[str, FakeAnthropic]]:
    started = {name: FakeAnthropic().start() for name in KEYS}
    yield started
    for api in started.values():
        api.stop()


@pytest.fixture(autouse=True)
def healthy_apis(apis: dict[str, FakeAnthropic]) -> None:
    for api in apis.values():
        api.fail_with = None
        api.requests.clear()


def providers_toml(
    apis: dict[str, FakeAnthropic], names: str, *, head: str = "", weights: dict[str, int] | None = None
) -> str:
    lines = [head]
    for name in names:
        lines += [
            "[[providers]]",
            f'id = "{name}"',
            f"weight = {(weights or {}).get(name, 1)}",
            f'api_key = "${{KEY_{name.upper()}}}"',
            f'base_url = "{apis[name].base_url}"',
            "",
        ]
    return "\n".join(lines)


async def server_with(tmp_path: Path, fake_api: FakeAnthropic, text: str, cli: Path | None = None) -> RunningServer:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    env = {"CLAUDE_SERVER_PROVIDERS_FILE": str(path), **{f"KEY_{n.upper()}": k for n, k in KEYS.items()}}
    return await asyncio.to_thread(start_server, tmp_path, fake_api, cli or real_cli_path(), env)


@pytest.fixture
async def stopping() -> AsyncIterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        await asyncio.to_thread(stop_server, server)


async def whole_turn(
    http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{server.url}/api/claude", data=json.dumps({**body, "stream": False}), headers=JSON_HEADERS
    ) as resp:
        return resp.status, dict(await resp.json())


async def provider_of(http: aiohttp.ClientSession, server: RunningServer, session_id: str) -> str:
    return str((await get_json(http, f"{server.url}/api/sessions/{session_id}"))["provider"])


def used_keys(api: FakeAnthropic) -> set[str]:
    return {r.headers.get("x-api-key", r.headers.get("X-Api-Key", "")) for r in api.requests}


async def test_new_sessions_follow_the_weights(
    http: aiohttp.ClientSession,
    apis: dict[str, FakeAnthropic],
    fake_api: FakeAnthropic,
    tmp_path: Path,
    stopping: list[RunningServer],
) -> None:
    # The choice is the server's: the fake CLI (which starts in milliseconds) serves here,
    # the real one in the tests below.
    server = await server_with(tmp_path, fake_api, providers_toml(apis, "ab", weights={"a": 3, "b": 1}), FAKE_CLI)
    stopping.append(server)
    limit = asyncio.Semaphore(4)

    async def one(n: int) -> str:
        async with limit:
            status, body = await whole_turn(http, server, {"prompt": f"session {n}"})
            assert status == 200, body
            return str(body["session_id"])

    sessions = await asyncio.gather(*(one(n) for n in range(100)))
    chosen = [await provider_of(http, server, sid) for sid in sessions]
    # Weighted 3:1: 75 expected of 100; the binomial's standard deviation is 4.3, and the
    # tolerance ±15 is 3.5 of them (a false failure about once in 2,000 runs).
    assert 60 <= chosen.count("a") <= 90 and chosen.count("a") + chosen.count("b") == 100, chosen.count("a")
    listed = {p["id"]: p for p in (await get_json(http, f"{server.url}/api/providers"))["providers"]}
    assert listed["a"]["bound_sessions"] == chosen.count("a") and listed["b"]["bound_sessions"] == chosen.count("b")


async def test_affinity_and_no_key_leaks(
    http: aiohttp.ClientSession,
    apis: dict[str, FakeAnthropic],
    fake_api: FakeAnthropic,
    tmp_path: Path,
    stopping: list[RunningServer],
) -> None:
    before = len(fake_api.requests)  # the API of the server's own ANTHROPIC_* variables
    head = 'strategy = "round_robin"\n'
    server = await server_with(tmp_path, fake_api, providers_toml(apis, "ab", head=head))
    stopping.append(server)
    sessions = [(await whole_turn(http, server, {"prompt": f"session {n}"}))[1]["session_id"] for n in range(4)]
    chosen = [await provider_of(http, server, sid) for sid in sessions]
    assert chosen == ["a", "b", "a", "b"]
    # Each API saw its own key only; the server's own key went nowhere.
    assert used_keys(apis["a"]) == {KEYS["a"]} and used_keys(apis["b"]) == {KEYS["b"]}
    assert len(fake_api.requests) == before
    # Affinity: the next turns of a session go to its provider, warm or not.
    sid, where = sessions[0], chosen[0]
    for prompt in ("two", "three"):
        turn = await run_turn(http, server, {"prompt": prompt, "session_id": sid})
        assert ECHO_RE.fullmatch(turn.texts[-1])
    other = "b" if where == "a" else "a"
    assert {r.session_id for r in apis[where].requests} >= {sid}
    assert sid not in {r.session_id for r in apis[other].requests}
    # The warm CLI's environment has its provider's key and nothing of the other's.
    turn_row = await get_json(http, f"{server.url}/api/turns/{turn.turn_id}")
    assert turn_row["provider"] == where
    for pid in marked_pids(turn_row["process_id"]):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"ANTHROPIC_API_KEY={KEYS[where]}".encode() in env
        assert not any(KEYS[other].encode() in entry or b"fake-key" in entry for entry in env)
    # No answer shows a key; /api/providers shows its last four characters only.
    listed = await get_json(http, f"{server.url}/api/providers")
    texts = [json.dumps(listed)]
    for url in (f"/api/sessions/{sid}", f"/api/turns/{turn.turn_id}", "/health", "/api/stats?group_by=provider"):
        texts.append(json.dumps(await get_json(http, server.url + url)))
    async with http.get(f"{server.url}/metrics") as resp:
        texts.append(await resp.text())
    assert not any(key in text for key in KEYS.values() for text in texts)
    by_id = {p["id"]: p for p in listed["providers"]}
    assert by_id["a"]["key_hint"].endswith("AAAA") and by_id["a"]["healthy"] is True
    assert by_id["a"]["bound_sessions"] == by_id["b"]["bound_sessions"] == 2
    assert by_id[where]["turns_today"] == 4
    stats = await get_json(http, f"{server.url}/api/stats?group_by=provider")
    assert {g["group"] for g in stats["groups"]} == {"a", "b"}


async def test_failover_after_the_threshold_recovery_after_the_timeout_and_no_provider(
    http: aiohttp.ClientSession,
    apis: dict[str, FakeAnthropic],
    fake_api: FakeAnthropic,
    tmp_path: Path,
    stopping: list[RunningServer],
) -> None:
    head = 'strategy = "round_robin"\nfailure_threshold = 2\nrecovery_timeout = 8\nmax_retries = 0\n'
    server = await server_with(tmp_path, fake_api, providers_toml(apis, "ab", head=head))
    stopping.append(server)
    status, first = await whole_turn(http, server, {"prompt": "one"})
    assert status == 200 and first["session_id"]
    sid = first["session_id"]
    assert await provider_of(http, server, sid) == "a"  # round robin starts with the first
    apis["a"].fail_with = 500
    for _ in range(2):
        status, body = await whole_turn(http, server, {"prompt": "again", "session_id": sid})
        assert status >= 400, body
    listed = {p["id"]: p for p in (await get_json(http, f"{server.url}/api/providers"))["providers"]}
    assert listed["a"]["healthy"] is False and listed["a"]["consecutive_failures"] >= 2
    assert "500" in (listed["a"]["last_error"] or "")
    # The session moves to b, with its whole history (the transcript is local).
    status, body = await whole_turn(http, server, {"prompt": "moved", "session_id": sid})
    assert status == 200, body
    assert await provider_of(http, server, sid) == "b"
    assert ECHO_RE.fullmatch(body["result"]) and int(ECHO_RE.fullmatch(body["result"])[1]) >= 3  # type: ignore[index]
    # New sessions skip a while it is unhealthy.
    status, fresh = await whole_turn(http, server, {"prompt": "new"})
    assert status == 200 and await provider_of(http, server, fresh["session_id"]) == "b"
    # b fails too: nothing is left.
    apis["b"].fail_with = 429
    for _ in range(2):
        await whole_turn(http, server, {"prompt": "x", "session_id": fresh["session_id"]})
    async with http.post(f"{server.url}/api/claude", data=json.dumps({"prompt": "x"}), headers=JSON_HEADERS) as resp:
        error = (await resp.json())["error"]
        assert resp.status == 503 and error["code"] == "no_provider", error
        assert int(resp.headers["Retry-After"]) >= 1
    # a comes back; once its recovery timeout ran out (8 s after it failed), one turn may
    # try it, and it is healthy again.
    apis["a"].fail_with = None
    await asyncio.sleep(8.5)
    status, body = await whole_turn(http, server, {"prompt": "back"})
    assert status == 200, body
    listed = {p["id"]: p for p in (await get_json(http, f"{server.url}/api/providers"))["providers"]}
    assert listed["a"]["healthy"] is True and listed["a"]["consecutive_failures"] == 0
    # The management routes.
    async with http.post(f"{server.url}/api/providers/b/reset") as resp:
        assert resp.status == 200 and (await resp.json())["consecutive_failures"] == 0
    async with http.post(f"{server.url}/api/providers/a/disable") as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "disabled"
    async with http.post(f"{server.url}/api/providers/nope/enable") as resp:
        assert resp.status == 404


async def test_reload_while_a_turn_runs_and_a_broken_file_is_refused(
    http: aiohttp.ClientSession,
    apis: dict[str, FakeAnthropic],
    fake_api: FakeAnthropic,
    tmp_path: Path,
    stopping: list[RunningServer],
) -> None:
    server = await server_with(tmp_path, fake_api, providers_toml(apis, "a"))
    stopping.append(server)
    first = await run_turn(http, server, {"prompt": "one"})
    sid = first.session_id
    path = tmp_path / "providers.toml"
    async with http.post(
        f"{server.url}/api/claude",
        data=json.dumps({"prompt": "[[slow: 3]] long", "session_id": sid}),
        headers=JSON_HEADERS,
    ) as slow:
        assert slow.status == 200
        path.write_text(providers_toml(apis, "bc"))
        async with http.post(f"{server.url}/api/admin/reload") as resp:
            changes = await resp.json()
            assert resp.status == 200, changes
        assert sorted(changes["providers"]["added"]) == ["b", "c"] and changes["providers"]["removed"] == ["a"]
        text = await slow.text()  # the running turn finishes on the provider it began with
    assert '"subtype":"success"' in text.replace(" ", "")
    turn = await run_turn(http, server, {"prompt": "after", "session_id": sid})
    assert ECHO_RE.fullmatch(turn.texts[-1]) and await provider_of(http, server, sid) in ("b", "c")
    # A broken file is refused whole, and the providers stay as they were.
    path.write_text(providers_toml(apis, "b") + '\n[[providers]]\nid = "b"\nbase_url = "http://x"\n')
    async with http.post(f"{server.url}/api/admin/reload") as resp:
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "reload_refused" and "b" in error["message"]
    ids = [p["id"] for p in (await get_json(http, f"{server.url}/api/providers"))["providers"]]
    assert ids == ["b", "c"]
    path.write_text("this is = not [ toml")
    os.kill(server.proc.pid, signal.SIGHUP)
    async with asyncio.timeout(10):
        while "reload refused" not in server.log_text():
            await asyncio.sleep(0.1)
    assert server.proc.poll() is None
