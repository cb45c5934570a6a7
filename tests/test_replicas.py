"""Replicas in the store, on both databases: heartbeats and what counts as live, one claim
per session across servers, taking a queued task once, and marking a gone server's turns
interrupted (while a live one's are left alone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import make_mocked_request

from claude_server.appkeys import STORE
from claude_server.claude.reaper import Reaper
from claude_server.errors import Conflict
from claude_server.forwarding import FORWARDED, target
from claude_server.replicas import Replicas, host_of
from claude_server.store import Store, TaskRow, now_iso
from tests.conftest import free_port

pytestmark = pytest.mark.backends

LEASE_S = 30.0


def ago(seconds: float) -> str:
    return now_iso(datetime.now(UTC) - timedelta(seconds=seconds))


async def live_ids(store: Store) -> list[str]:
    return [row["replica_id"] for row in await store.live_replicas(ago(LEASE_S))]


async def expire(store: Store, server_id: str) -> None:
    await store.db.execute("UPDATE replicas SET heartbeat_at = ? WHERE server_id = ?", (ago(LEASE_S * 2), server_id))


async def test_a_replica_starting_again_replaces_its_earlier_run(store: Store) -> None:
    assert await store.register_replica("h:1:a", "a", "http://h:3000") == []
    await store.register_replica("h:2:b", "b", "http://h:3001")
    assert await live_ids(store) == ["a", "b"]
    assert await store.register_replica("h:3:c", "a", "http://h:3000") == ["h:1:a"]
    assert [r["server_id"] for r in await store.live_replicas(ago(LEASE_S))] == ["h:3:c", "h:2:b"]
    await expire(store, "h:2:b")
    assert await live_ids(store) == ["a"]
    assert await store.heartbeat("h:2:b")  # renewed: live again
    assert await live_ids(store) == ["a", "b"]
    await store.unregister_replica("h:2:b")
    assert not await store.heartbeat("h:2:b")  # gone: the caller registers again


async def test_one_claim_per_session_across_servers(store: Store) -> None:
    await store.register_replica("h:1:a", "a", "http://h:3000")
    await store.register_replica("h:2:b", "b", "http://h:3001")
    cutoff = ago(LEASE_S)
    assert await store.claim_session("s1", "t1", "h:1:a", cutoff) is None
    assert await store.claim_session("s1", "t2", "h:2:b", cutoff) == "t1"  # busy elsewhere
    assert await store.claim_session("s1", "t3", "h:1:a", cutoff) is None  # its own line decides
    await store.release_session("s1", "t1")  # not the holder any more: nothing happens
    assert await store.claim_session("s1", "t2", "h:2:b", cutoff) == "t3"
    await store.release_session("s1", "t3")
    assert await store.claim_session("s1", "t2", "h:2:b", cutoff) is None
    await expire(store, "h:2:b")  # its server is gone: the claim may be taken over
    assert await store.claim_session("s1", "t4", "h:1:a", ago(LEASE_S)) is None


async def test_a_claim_refused_is_a_409_naming_the_turn(store: Store) -> None:
    class FakeTurn:  # what Replicas.claim reads of a turn
        def __init__(self, turn_id: str) -> None:
            self.id = turn_id
            self.session = None
            self.claimed: set[str] = set()

    reaper = Reaper()
    try:
        a = Replicas(store, reaper, "h:1:a", "a", "http://h:3000", LEASE_S)
        b = Replicas(store, reaper, "h:2:b", "b", "http://h:3001", LEASE_S)
        await a.register()
        await b.register()
        first, second = FakeTurn("t1"), FakeTurn("t2")
        await a.claim(first, "s1")  # type: ignore[arg-type]
        assert first.claimed == {"s1"}
        with pytest.raises(Conflict) as refused:
            await b.claim(second, "s1")  # type: ignore[arg-type]
        assert refused.value.code == "session_busy"
        assert refused.value.extra["turn_id"] == "t1"
        await a.release(first, lambda sid: None)  # type: ignore[arg-type]
        assert first.claimed == set()
        await b.claim(second, "s1")  # type: ignore[arg-type]
        assert (await a.public())[1]["self"] is False
    finally:
        reaper.close()


async def test_a_queued_task_is_taken_once(store: Store) -> None:
    await store.register_replica("h:1:a", "a", "http://h:3000")
    await store.register_replica("h:2:b", "b", "http://h:3001")
    row = TaskRow(
        "task-1",
        1,
        None,
        None,
        "queued",
        5,
        {"prompt": "x"},
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        0,
        now_iso(),
        None,
        None,
    )
    await store.insert_tasks([row])
    cutoff = ago(LEASE_S)
    assert await store.take_task("task-1", "h:1:a", cutoff)
    assert not await store.take_task("task-1", "h:2:b", cutoff)
    await store.untake_task("task-1")
    assert await store.take_task("task-1", "h:2:b", cutoff)
    await expire(store, "h:2:b")  # its taker is gone: another may take it
    assert await store.take_task("task-1", "h:1:a", ago(LEASE_S))
    await store.start_task("task-1", "turn-1", None)
    assert not await store.take_task("task-1", "h:1:a", ago(LEASE_S))  # running: not queued any more


async def test_only_the_turns_of_gone_servers_are_interrupted(store: Store) -> None:
    await store.register_replica("h:1:a", "a", "http://h:3000")
    await store.register_replica("h:2:b", "b", "http://h:3001")
    for turn_id, server in (("ta", "h:1:a"), ("tb", "h:2:b"), ("told", "h:0:old")):
        await store.insert_turn(
            turn_id, session_id=None, prompt="p", options={}, workspace_path="/w", detach=True, server_id=server
        )
    await store.claim_session("s-b", "tb", "h:2:b", ago(LEASE_S))
    reaper = Reaper()
    try:
        a = Replicas(store, reaper, "h:1:a", "a", "http://h:3000", LEASE_S)
        assert await a.reap() == ["told"]  # b is live; the old server has no heartbeat at all
        await expire(store, "h:2:b")
        assert await a.reap() == ["tb"]
        assert await a.reap() == []
    finally:
        reaper.close()
    statuses = {t: (await store.get_turn(t)).status for t in ("ta", "tb", "told")}  # type: ignore[union-attr]
    assert statuses == {"ta": "running", "tb": "interrupted", "told": "interrupted"}
    assert await live_ids(store) == ["a"]  # b's row and its claim are gone
    assert await store.claim_session("s-b", "tx", "h:1:a", ago(LEASE_S)) is None
    events = await store.events("tb", after=0)
    assert events[-1].name == "error"


async def test_session_ran_elsewhere(store: Store) -> None:
    await store.insert_turn(
        "t1", session_id="s1", prompt="p", options={}, workspace_path="/w", detach=True, server_id="h:1:a"
    )
    assert not await store.ran_elsewhere("s1", "t9", "h:1:a")
    assert await store.ran_elsewhere("s1", "t9", "h:2:b")
    assert not await store.ran_elsewhere(None, "t9", "h:2:b")


def test_host_of_a_server_id() -> None:
    assert host_of("my-host:1234:abcd1234") == "my-host"


async def test_a_control_message_for_a_gone_replica_is_a_503(client) -> None:  # type: ignore[no-untyped-def]
    store: Store = client.app[STORE]
    await store.register_replica("h:9:gone", "gone", "http://127.0.0.1:9")
    await expire(store, "h:9:gone")
    await store.insert_turn(
        "t-gone", session_id=None, prompt="p", options={}, workspace_path="/w", detach=True, server_id="h:9:gone"
    )
    resp = await client.post("/api/turns/t-gone/cancel")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["error"]["code"] == "replica_gone"
    assert resp.headers["Retry-After"] == "30"
    # A live replica that does not answer: 502.
    await store.register_replica("h:8:mute", "mute", f"http://127.0.0.1:{free_port()}")
    await store.insert_turn(
        "t-mute", session_id=None, prompt="p", options={}, workspace_path="/w", detach=True, server_id="h:8:mute"
    )
    resp = await client.post("/api/turns/t-mute/cancel")
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == "replica_unreachable"
    # A turn that runs nowhere is answered here.
    resp = await client.post("/api/turns/t-nowhere/cancel")
    assert resp.status == 404


def test_which_requests_are_control_messages() -> None:
    def of(method: str, path: str, forwarded: bool = False) -> tuple[str, str] | None:
        headers = {FORWARDED: "1"} if forwarded else {}
        return target(make_mocked_request(method, path, headers=headers))

    assert of("POST", "/api/turns/t1/cancel") == ("turn", "t1")
    assert of("POST", "/api/turns/t1/permissions/r1") == ("turn", "t1")
    assert of("GET", "/api/turns/t1/questions") == ("turn", "t1")
    assert of("POST", "/api/sessions/s1/interrupt") == ("session", "s1")
    assert of("DELETE", "/api/sessions/s1") == ("session", "s1")
    assert of("GET", "/api/sessions/s1") is None
    assert of("GET", "/api/turns/t1/events") is None
    assert of("POST", "/api/turns/t1/cancel", forwarded=True) is None


async def test_a_server_alone_on_its_database_takes_every_other_for_gone(store: Store) -> None:
    await store.register_replica("h:1:old", "h:3000", "http://h:3000")
    await store.claim_session("s1", "t-old", "h:1:old", ago(LEASE_S))
    reaper = Reaper()
    try:
        alone = Replicas(store, reaper, "h:2:new", "h:3001", "http://h:3001", LEASE_S, shared=False)
        assert alone.spared() is None  # restart recovery interrupts every other server's turns
        await alone.register()
        assert await live_ids(store) == ["h:3001"]
        assert await store.claim_session("s1", "t-new", "h:2:new", ago(LEASE_S)) is None
        shared = Replicas(store, reaper, "h:3:c", "c", "http://h:3002", LEASE_S)
        assert shared.spared() is not None
    finally:
        reaper.close()
