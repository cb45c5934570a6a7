"""End to end: two replicas on one database, one workspace root and one Claude configuration
directory, with the real CLI and the fake API, on SQLite (WAL mode, one machine) and on
PostgreSQL (what replicas on several machines share; see the README's "Deployment").

A session created on one resumes on the other; two turns on one session through the two
replicas at once: exactly one 409 ``session_busy``; a turn followed and reconnected through
the replica that does not run it gets every seq once; a replica killed with ``kill -9``
mid-turn: the other marks the turn interrupted once the lease expired, the session resumes
there, and none of the killed turn's processes is left once the dead replica starts again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import SseEvent, marked_pids, wait_until
from tests.test_e2e_core import SseReader, answer_texts, get_json, is_init, post, run_turn
from tests.test_e2e_crash import seq_of
from tests.test_e2e_sessions import kill_leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.backends]

LEASE_S = 2.0


@dataclass
class Pair:
    shared: Path
    database: str
    fake_api: FakeAnthropic
    a: RunningServer
    b: RunningServer

    def start(self, name: str) -> RunningServer:
        return start_replica(self.shared, self.database, name, self.fake_api)


def start_replica(
    shared: Path, database: str, name: str, api: FakeAnthropic, extra: dict[str, str] | None = None
) -> RunningServer:
    env = {
        **(extra or {}),
        "CLAUDE_SERVER_DB": database,
        "CLAUDE_SERVER_WORKSPACE_ROOT": str(shared / "workspace"),
        "CLAUDE_SERVER_CLAUDE_CONFIG_DIR": str(shared / "claude-config"),
        "CLAUDE_SERVER_REPLICA_ID": name,
        "CLAUDE_SERVER_LEASE_SECONDS": str(LEASE_S),
    }
    return start_server(shared / name, api, real_cli_path(), env)


@pytest.fixture
def pair(tmp_path: Path, database: str, fake_api: FakeAnthropic) -> Iterator[Pair]:
    """Two replicas on the test's database (a SQLite file, or a PostgreSQL database)."""
    a = start_replica(tmp_path, database, "a", fake_api)
    try:
        b = start_replica(tmp_path, database, "b", fake_api)
    except BaseException:
        stop_server(a)
        raise
    running = Pair(tmp_path, database, fake_api, a, b)
    try:
        yield running
    finally:
        stop_server(running.a)
        stop_server(running.b)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def started(http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]) -> tuple[SseReader, str]:
    """A streaming turn read up to its init: its reader and its turn id."""
    resp = await post(http, server, body)
    assert resp.status == 200, await resp.text()
    reader = SseReader(resp)
    await reader.until(is_init)
    return reader, resp.headers["X-Turn-Id"]


def seqs(events: list[SseEvent], turn_id: str) -> list[int]:
    return [seq_of(ev, turn_id) for ev in events if ev.id is not None]


async def test_session_resumes_on_the_other_replica_and_health_names_each(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    first = await run_turn(http, pair.a, {"prompt": "remember plums"})
    sid = first.last["session_id"]
    again = await run_turn(http, pair.b, {"prompt": "and pears", "session_id": sid})
    # Three messages: the first prompt, its answer, the new prompt: the history came along.
    assert any(text.startswith("Echo(3): and pears") for text in answer_texts(again.events)), again.events
    health_a = await get_json(http, f"{pair.a.url}/health")
    health_b = await get_json(http, f"{pair.b.url}/health")
    assert (health_a["replica"]["id"], health_b["replica"]["id"]) == ("a", "b")
    assert health_a["database"]["backend"] == ("postgres" if pair.database.startswith("postgres") else "sqlite")
    listed = await get_json(http, f"{pair.a.url}/api/admin/replicas")
    assert sorted(r["replica_id"] for r in listed["data"]) == ["a", "b"]
    assert [r["self"] for r in listed["data"]] == [True, False]


async def test_one_turn_per_session_across_replicas_and_following_elsewhere(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    first = await run_turn(http, pair.a, {"prompt": "hello"})
    sid = first.last["session_id"]
    reader, turn_id = await started(http, pair.a, {"prompt": "[[slow: 6]] a long answer", "session_id": sid})
    try:
        # The other replica refuses a second turn on the session, naming the running one.
        resp = await post(http, pair.b, {"prompt": "me too", "session_id": sid})
        async with resp:
            body = await resp.json()
            assert resp.status == 409, body
        assert body["error"]["code"] == "session_busy"
        assert body["error"]["turn_id"] == turn_id
        listed = await get_json(http, f"{pair.b.url}/api/admin/replicas")
        of_a = next(r for r in listed["data"] if r["replica_id"] == "a")
        assert [t["turn_id"] for t in of_a["turns"]] == [turn_id]
        # Followed through b, which does not run it: part of it, then a reconnect.
        async with http.get(f"{pair.b.url}/api/turns/{turn_id}/events") as resp:
            assert resp.status == 200
            follower = SseReader(resp)
            await follower.until(is_init)
            seen = list(follower.events)
        last_id = [ev.id for ev in seen if ev.id is not None][-1]
        async with http.get(f"{pair.b.url}/api/turns/{turn_id}/events", headers={"Last-Event-ID": last_id}) as resp:
            assert resp.status == 200
            rest = await SseReader(resp).rest()
        owner = await reader.rest()
    finally:
        reader.resp.close()
    followed = seqs(seen, turn_id) + seqs(rest, turn_id)
    assert followed == seqs(owner, turn_id)  # every seq once, in order
    assert followed == list(range(1, len(followed) + 1))
    assert [ev.data for ev in seen + rest if ev.id] == [ev.data for ev in owner if ev.id]
    # Free again: the next turn may run on b.
    after = await run_turn(http, pair.b, {"prompt": "now b", "session_id": sid})
    assert after.last.get("subtype") == "success", after.last


async def test_the_rate_limit_counts_the_turns_of_every_replica(
    tmp_path: Path, database: str, fake_api: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    limit = {"CLAUDE_SERVER_RATE_LIMIT_PER_MIN": "3"}
    a = start_replica(tmp_path, database, "a", fake_api, limit)
    try:
        b = start_replica(tmp_path, database, "b", fake_api, limit)
    except BaseException:
        stop_server(a)
        raise
    try:
        sid = (await run_turn(http, a, {"prompt": "one"})).last["session_id"]
        reader, _ = await started(http, a, {"prompt": "[[slow: 4]] two", "session_id": sid})
        try:
            # Busy on a: refused by b before it started, so it does not count.
            async with await post(http, b, {"prompt": "not counted", "session_id": sid}) as resp:
                assert resp.status == 409, await resp.text()
            await reader.rest()
        finally:
            reader.resp.close()
        assert (await run_turn(http, b, {"prompt": "three"})).last.get("subtype") == "success"
        # b started one turn, a two: the fourth is refused on either, the limit is theirs together.
        for server in (b, a):
            async with await post(http, server, {"prompt": "four"}) as resp:
                body = await resp.json()
                assert resp.status == 429, body
            assert body["error"]["code"] == "rate_limited" and int(resp.headers["Retry-After"]) >= 1
        assert "refused before it started" in b.log_text() and "start_failed" not in b.log_text()
    finally:
        stop_server(a)
        stop_server(b)


async def test_interrupts_and_answers_through_the_other_replica(pair: Pair, http: aiohttp.ClientSession) -> None:
    first = await run_turn(http, pair.a, {"prompt": "hello"})
    sid = first.last["session_id"]
    # A cancel of the turn through b reaches a, which runs it.
    reader, turn_id = await started(http, pair.a, {"prompt": "[[slow: 30]] long", "session_id": sid})
    try:
        async with http.post(f"{pair.b.url}/api/turns/{turn_id}/cancel") as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert body["turn_id"] == turn_id
        rest = await reader.rest(timeout=15)
    finally:
        reader.resp.close()
    assert rest[-1].json()["code"] == "cancelled", rest[-1]
    # The session's interrupt through b likewise; the lists of waiting prompts too.
    reader, turn_id = await started(http, pair.a, {"prompt": "[[slow: 30]] long", "session_id": sid})
    try:
        assert await get_json(http, f"{pair.b.url}/api/turns/{turn_id}/permissions") == {"permissions": []}
        async with http.post(f"{pair.b.url}/api/sessions/{sid}/interrupt") as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert body["turn_id"] == turn_id
        rest = await reader.rest(timeout=15)
    finally:
        reader.resp.close()
    assert rest[-1].json()["code"] == "cancelled", rest[-1]
    row = await get_json(http, f"{pair.b.url}/api/turns/{turn_id}")
    assert row["status"] == "cancelled"
    # Nothing runs any more: b answers itself.
    async with http.post(f"{pair.b.url}/api/turns/{turn_id}/cancel") as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "not_running"


async def test_deleting_a_session_through_the_other_replica_ends_its_warm_cli(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    first = await run_turn(http, pair.a, {"prompt": "hello"})
    sid = first.last["session_id"]
    process = (await get_json(http, f"{pair.a.url}/api/turns/{first.turn_id}"))["process_id"]
    assert marked_pids(process)  # warm on a, between turns
    async with http.delete(f"{pair.b.url}/api/sessions/{sid}") as resp:
        assert resp.status == 204, await resp.text()
    assert await asyncio.to_thread(wait_until, lambda: not marked_pids(process), 5.0)
    for server in (pair.a, pair.b):
        async with http.get(f"{server.url}/api/sessions/{sid}") as resp:
            assert resp.status == 404


async def test_a_replica_killed_mid_turn(pair: Pair, http: aiohttp.ClientSession) -> None:
    first = await run_turn(http, pair.a, {"prompt": "hello"})
    sid = first.last["session_id"]
    reader, turn_id = await started(http, pair.a, {"prompt": "[[slow: 60]] a very long answer", "session_id": sid})
    row = await get_json(http, f"{pair.b.url}/api/turns/{turn_id}")
    process_id = row["process_id"]
    assert marked_pids(process_id)
    try:
        pair.a.proc.send_signal(signal.SIGKILL)
        pair.a.proc.wait(10)
        reader.resp.close()
        killed_at = time.monotonic()
        # Its lease still runs: a cancel through b is sent on to a, which does not answer.
        async with http.post(f"{pair.b.url}/api/turns/{turn_id}/cancel") as resp:
            body = await resp.json()
            assert resp.status == 502, body
        assert body["error"]["code"] == "replica_unreachable"
        # b refuses the session while the dead replica's lease runs ...
        resp = await post(http, pair.b, {"prompt": "too soon", "session_id": sid})
        async with resp:
            assert resp.status == 409, await resp.text()
        # ... and marks the turn interrupted once it expired (a beat is a third of the lease).
        deadline = killed_at + LEASE_S * 3 + 5
        while time.monotonic() < deadline:
            row = await get_json(http, f"{pair.b.url}/api/turns/{turn_id}")
            if row["status"] != "running":
                break
            await asyncio.sleep(0.2)
        assert row["status"] == "interrupted", row
        # Not before the lease ran out: at least two thirds of it after the kill (its last beat came
        # at most a third of a lease before).
        assert time.monotonic() - killed_at >= LEASE_S * 2 / 3 - 0.1
        resumed = await run_turn(http, pair.b, {"prompt": "after the crash", "session_id": sid})
        assert resumed.last.get("subtype") == "success", resumed.last
        # The dead replica starts again under its name: nothing of its turn is left.
        pair.a = pair.start("a")
        assert wait_until(lambda: not marked_pids(process_id), timeout=5.0), marked_pids(process_id)
        health = await get_json(http, f"{pair.a.url}/health")
        assert health["replica"]["id"] == "a"
        listed = await get_json(http, f"{pair.b.url}/api/admin/replicas")
        assert sorted(r["replica_id"] for r in listed["data"]) == ["a", "b"]  # its earlier run is gone
    finally:
        kill_leftovers(process_id)


def test_replica_settings_are_checked(tmp_path: Path, fake_api: FakeAnthropic) -> None:
    bad = {"CLAUDE_SERVER_ADVERTISE_URL": "ftp://x", "CLAUDE_SERVER_REPLICA_ID": "x"}
    with pytest.raises(RuntimeError, match="CLAUDE_SERVER_ADVERTISE_URL"):
        start_server(tmp_path, fake_api, real_cli_path(), bad)
