"""A follower on one server of a turn that another server runs on the same database: woken
by PostgreSQL's LISTEN/NOTIFY when the other server stores its events or ends it, polling
on SQLite, and listening again after the listening connection was lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from claude_server import subscription
from claude_server.store import Store, TurnChanges, pg_listen
from claude_server.subscription import Subscription
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.backends

# Longer than any wait below: a follower that was not woken by a notification would time out.
NO_SAFETY_NET_S = 60.0
WAIT_S = 10.0


@pytest.fixture
async def servers(database: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two servers' stores on one database, both sharing it as replicas do."""
    here, there = await Store.open(database), await Store.open(database)
    await here.listen_for_changes()
    await there.listen_for_changes()
    try:
        yield here, there
    finally:
        await here.close()
        await there.close()


async def until(predicate, timeout: float = WAIT_S) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def later(write):  # type: ignore[no-untyped-def]
    """``write`` once the follower waits."""
    await asyncio.sleep(0.2)
    await write


async def running_elsewhere(there: Store, turn_id: str) -> None:
    await there.insert_turn(
        turn_id, session_id=None, prompt="p", options={}, workspace_path="/w", detach=True, server_id="there"
    )


async def finish(store: Store, turn_id: str, last_seq: int) -> None:
    await store.finish_turn(
        turn_id, status="succeeded", exit_code=0, cost_usd=None, session_cost_usd=None, usage=None,
        num_turns=None, error=None, last_seq=last_seq,
    )  # fmt: skip


def test_a_change_wakes_the_watchers_of_that_turn_only() -> None:
    changes = TurnChanges()
    with changes.watch("a") as a, changes.watch("b") as b:
        changes.notified("a")
        assert a.is_set() and not b.is_set()
        # Listening starting or stopping wakes everyone: what was sent meanwhile was not heard.
        changes.listening(True)
        assert b.is_set() and changes.live
    assert changes.watched == 0
    changes.notified("a")  # nobody watches: nothing to do
    assert changes.received == 2


async def test_a_follower_is_woken_by_the_other_servers_events_and_end(
    servers: tuple[Store, Store], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = servers
    if backend == "sqlite":
        # SQLite has no notifications: the follower polls, and still reads everything.
        assert not here.notifies and not here.changes.live
    else:
        assert here.notifies and there.notifies
        assert await until(lambda: here.changes.live)
        monkeypatch.setattr(subscription, "SAFETY_S", NO_SAFETY_NET_S)
    await running_elsewhere(there, "t1")
    sub = Subscription(here, "t1", 0, live=None, elsewhere=True)

    writing = asyncio.create_task(later(there.insert_chunks([("t1", 1, 2, None, b'{"n":1}\n{"n":2}')])))
    batch = await sub.next_batch(timeout_s=WAIT_S)
    await writing
    assert batch is not None and [e.seq for e in batch] == [1, 2]
    # The end: the turn's row says it finished, and nothing is after the last event read.
    ending = asyncio.create_task(later(finish(there, "t1", 2)))
    assert await sub.next_batch(timeout_s=WAIT_S) is None  # woken by the end (not a timeout: [])
    await ending
    if backend != "sqlite":
        assert here.changes.received >= 2


async def test_listening_again_after_the_connection_was_lost(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_listen, "RETRY_S", 0.1)
    monkeypatch.setattr(subscription, "SAFETY_S", NO_SAFETY_NET_S)
    url = await postgres_server.new_database()
    here, there = await Store.open(url), await Store.open(url)
    try:
        await here.listen_for_changes()
        await there.listen_for_changes()
        assert await until(lambda: here.changes.live and there.changes.live)
        conn = await asyncpg.connect(url)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                pg_listen.APPLICATION_NAME,
            )
        finally:
            await conn.close()
        assert killed == 2  # both servers' listeners
        assert await until(lambda: not here.changes.live)
        assert await until(lambda: here.changes.live)
        await running_elsewhere(there, "t2")
        heard = here.changes.received
        sub = Subscription(here, "t2", 0, live=None, elsewhere=True)
        writing = asyncio.create_task(later(there.insert_chunks([("t2", 1, 1, None, b"{}")])))
        batch = await sub.next_batch(timeout_s=WAIT_S)
        await writing
        assert batch is not None and [e.seq for e in batch] == [1]
        assert here.changes.received > heard
    finally:
        await here.close()
        await there.close()
        await postgres_server.drop_database(url)
