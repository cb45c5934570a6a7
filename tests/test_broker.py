"""The broker without HTTP: admission tickets given back on every path, cancellation that a
leaving caller cannot cut short, events durable before anyone sees them, bounded memory,
and costs counted once. A real SQLite store and the fake CLI; failures are made real (a
SQLite trigger, a missing binary, a file where a workspace should go)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from claude_server import turn as turn_module
from claude_server.broker import Broker
from claude_server.broker_settings import BrokerSettings
from claude_server.claude.command import TurnOptions, build_env
from claude_server.claude.probe import probe_cli
from claude_server.errors import ApiError
from claude_server.gate import Gate, GateSettings
from claude_server.outcome import StopCode, TurnStatus
from claude_server.principal import Principal
from claude_server.store import Store
from claude_server.subscription import Subscription
from claude_server.turn import kind_of
from claude_server.workspaces import Workspaces
from tests.conftest import FAKE_API_KEY, FAKE_CLI, base_environ
from tests.helpers import eventually, pid_alive


@dataclass
class Rig:
    broker: Broker
    store: Store
    root: Path

    @property
    def gate(self) -> Gate:
        return self.broker.gate

    def slots(self) -> tuple[int, int]:
        """(running, queued) as admission counts them."""
        return self.gate.running, self.gate.queued


async def make_rig(tmp_path: Path, cli: Path = FAKE_CLI, **gate: Any) -> Rig:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environ = {**base_environ(home), "ANTHROPIC_API_KEY": FAKE_API_KEY}
    store = await Store.open(tmp_path / "sessions.db")
    info = await probe_cli(str(cli), build_env(environ, "probe"))
    settings = BrokerSettings(claude_bin=str(cli), environ=environ, queue_timeout_s=5.0, server_id="test")
    broker = Broker(settings, Gate(GateSettings(**gate), store), store, Workspaces(tmp_path / "workspace"), info)
    await broker.open()
    return Rig(broker, store, tmp_path)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path, max_concurrent=1, max_queue=2)
    yield made
    await made.broker.shutdown()
    await made.store.close()


async def drain(sub: Subscription) -> list[Any]:
    out = []
    while (batch := await sub.next_batch(5)) is not None:
        out.extend(batch)
    return out


async def finished_turn(rig: Rig, prompt: str, **options: Any) -> Subscription:
    sub = await rig.broker.start(TurnOptions(prompt=prompt, **options))
    await drain(sub)
    sub.close()
    return sub


# ---- admission: a ticket is given back on every path -----------------------------------------


async def refused(start: Awaitable[Subscription]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await start
    return caught.value


async def test_a_workspace_that_cannot_be_had_leaves_the_slots_as_they_were(rig: Rig) -> None:
    (rig.root / "workspace").mkdir(exist_ok=True)
    (rig.root / "workspace" / "taken").write_text("a file, not a directory")
    err = await refused(rig.broker.start(TurnOptions(prompt="x"), workspace_name="taken"))
    assert err.status == 409 and err.code == "workspace_unavailable"
    assert rig.slots() == (0, 0) and not rig.broker.running()


async def test_a_database_that_refuses_the_turn_leaves_the_slots_as_they_were(rig: Rig) -> None:
    await rig.store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON turns BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
    )
    with pytest.raises(Exception, match="disk is full"):
        await rig.broker.start(TurnOptions(prompt="x"))
    assert rig.slots() == (0, 0) and not rig.broker.running()


async def test_a_cli_that_cannot_start_leaves_the_slots_as_they_were(tmp_path: Path) -> None:
    cli = tmp_path / "claude"
    shutil.copy(FAKE_CLI, cli)
    made = await make_rig(tmp_path, cli, max_concurrent=1, max_queue=2)
    try:
        cli.unlink()  # gone after the probe found it
        err = await refused(made.broker.start(TurnOptions(prompt="x")))
        assert err.status == 503 and err.code == "cli_not_found"
        assert made.slots() == (0, 0) and not made.broker.running()
    finally:
        await made.broker.shutdown()
        await made.store.close()


async def test_a_conversation_bound_meanwhile_leaves_the_slots_as_they_were(rig: Rig) -> None:
    await finished_turn(rig, "first")
    (row,) = await rig.store.list_sessions(limit=5)
    await rig.store.bind_conversation(row.session_id, "chat-1")
    await finished_turn(rig, "second")
    (other, _) = await rig.store.list_sessions(limit=5)
    # The request resumes `other` and binds it to chat-1, which `row` holds already.
    err = await refused(
        rig.broker.start(TurnOptions(prompt="x", session_id=other.session_id), conversation_id="chat-1")
    )
    assert err.status in (400, 409)
    assert rig.slots() == (0, 0) and not rig.broker.running()


async def test_refusals_before_a_ticket_take_nothing(rig: Rig) -> None:
    busy = await rig.broker.start(TurnOptions(prompt="@sleep=5"))
    await eventually(lambda: busy.turn is not None and busy.turn.session_id is not None)
    assert busy.turn is not None and busy.turn.session_id is not None
    before = rig.slots()
    err = await refused(rig.broker.start(TurnOptions(prompt="x", session_id=busy.turn.session_id)))
    assert err.status == 409 and err.code == "session_busy"
    err = await refused(rig.broker.start(TurnOptions(prompt="x", session_id="no-such-session")))
    assert err.status == 404
    broke = Principal("key_1", "broke", admin=False, daily_budget_usd=0.0001)
    await rig.store.insert_turn(
        "spent", session_id=None, prompt="p", options={}, workspace_path="/w", detach=False, owner="key_1"
    )
    await rig.store.finish_turn(
        "spent",
        status="succeeded",
        exit_code=0,
        cost_usd=1.0,
        session_cost_usd=1.0,
        usage=None,
        num_turns=1,
        error=None,
        last_seq=0,
    )
    err = await refused(rig.broker.start(TurnOptions(prompt="x"), principal=broke))
    assert err.status == 429 and err.code == "budget_exceeded"
    assert rig.slots() == before
    busy.close()


async def test_a_queued_turn_gives_its_place_back_on_every_way_out(rig: Rig) -> None:
    running = await rig.broker.start(TurnOptions(prompt="@sleep=30"))
    assert rig.slots() == (1, 0)
    # Cancelled while queued.
    queued = await rig.broker.start(TurnOptions(prompt="queued"))
    assert rig.slots() == (1, 1)
    assert queued.turn is not None
    await rig.broker.cancel(queued.turn)
    assert rig.slots() == (1, 0) and queued.turn.status is TurnStatus.CANCELLED
    # Its follower leaving while it waits.
    leaving = await rig.broker.start(TurnOptions(prompt="queued too"))
    assert rig.slots() == (1, 1)
    leaving.close()
    assert leaving.turn is not None
    await asyncio.wait_for(leaving.turn.wait(), 5)
    assert rig.slots() == (1, 0)
    # A full queue refuses with 429 and takes nothing.
    held = [await rig.broker.start(TurnOptions(prompt=f"q{i}")) for i in range(2)]
    err = await refused(rig.broker.start(TurnOptions(prompt="one too many")))
    assert err.status == 429 and err.code == "queue_full"
    assert rig.slots() == (1, 2)
    # The slot passes down the queue when the running turn ends; nothing leaks at the end.
    assert running.turn is not None
    await rig.broker.cancel(running.turn)
    for sub in held:
        await drain(sub)
        sub.close()
    await eventually(lambda: rig.slots() == (0, 0))
    assert rig.slots() == (0, 0)


async def test_a_queued_turn_whose_cli_cannot_start_gives_its_slot_back(tmp_path: Path) -> None:
    cli = tmp_path / "claude"
    shutil.copy(FAKE_CLI, cli)
    made = await make_rig(tmp_path, cli, max_concurrent=1, max_queue=2)
    try:
        first = await made.broker.start(TurnOptions(prompt="@sleep=1"))
        second = await made.broker.start(TurnOptions(prompt="second"))
        assert made.slots() == (1, 1)
        cli.unlink()
        await drain(first)
        events = await drain(second)
        assert events[-1].name == "error" and b"cli_not_found" in events[-1].data
        assert made.slots() == (0, 0)
    finally:
        await made.broker.shutdown()
        await made.store.close()


# ---- cancellation ------------------------------------------------------------------------------


async def test_a_caller_that_leaves_during_its_cancel_cannot_skip_the_kill(rig: Rig) -> None:
    sub = await rig.broker.start(TurnOptions(prompt="@ignore-term @grandchild @sleep=60"), detach=True)
    turn = sub.turn
    assert turn is not None and turn.process is not None
    started = b""
    while b"started pid=" not in started:  # SIGTERM is ignored from here on
        batch = await sub.next_batch(10)
        assert batch, "the fake CLI did not start its grandchild"
        started = b"".join(e.data for e in batch)
    grandchild = int(started.split(b"started pid=")[1].split(b'"')[0])
    cli = turn.process.pid
    # Ending the session's turn (not an interrupt, which keeps the CLI) ends its CLI.
    caller = asyncio.create_task(rig.broker.cancel(turn, StopCode.SESSION_DELETED, "gone"))
    await asyncio.sleep(0.3)
    assert pid_alive(cli)  # SIGTERM was sent and ignored
    caller.cancel()  # the client that asked goes away before the SIGKILL step
    await asyncio.wait_for(turn.wait(), 10)
    assert await eventually(lambda: not pid_alive(cli) and not pid_alive(grandchild), 3)
    assert turn.exit_code == -9  # killed, after the grace SIGTERM got
    assert turn.status is TurnStatus.CANCELLED and turn.error is not None
    assert turn.error.code == StopCode.SESSION_DELETED
    sub.close()


# ---- the log: durable before it is seen, bounded in memory ---------------------------------------


async def test_no_event_reaches_a_follower_before_it_is_in_the_store(rig: Rig) -> None:
    sub = await rig.broker.start(TurnOptions(prompt="@lines=40 @slow=0.01"))
    assert sub.turn is not None
    seen = 0
    while (batch := await sub.next_batch(5)) is not None:
        for ev in batch:
            stored = await rig.store.events(sub.turn.id, after=ev.seq - 1, max_bytes=1)
            assert stored and stored[0].seq == ev.seq and stored[0].data == ev.data
            seen += 1
    assert seen == sub.turn.last_seq >= 42
    sub.close()


async def test_a_follower_far_behind_reads_from_the_store(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "LOG_MEMORY_BYTES", 64 * 1024)
    sub = await rig.broker.start(TurnOptions(prompt="@flood=2000000"), detach=True)
    turn = sub.turn
    assert turn is not None
    late = Subscription(rig.store, turn.id, 0, live=turn)
    await asyncio.wait_for(turn.wait(), 30)
    # Everything but the newest events left memory long ago (and all of it once finished).
    events = await drain(late)
    assert [e.seq for e in events] == list(range(1, turn.last_seq + 1))
    assert turn.log.take(0) is None
    late.close()
    sub.close()


async def test_a_finished_turn_is_followed_from_its_record(rig: Rig) -> None:
    sub = await finished_turn(rig, "@lines=3")
    row = await rig.store.get_turn(sub.turn_id)
    assert row is not None and rig.broker.get(row.turn_id) is None
    again = rig.broker.follow(row, 2)
    events = await drain(again)
    assert [e.seq for e in events] == list(range(3, row.last_seq + 1))
    assert kind_of(events[-1]) == "result"


# ---- costs -----------------------------------------------------------------------------------------


async def test_each_turn_records_its_own_cost_across_resumes_and_forks(rig: Rig) -> None:
    """The fake CLI, like the real one, reports the session's running total."""
    first = await finished_turn(rig, "one")
    (session,) = await rig.store.list_sessions(limit=5)
    sid = session.session_id
    await finished_turn(rig, "two", session_id=sid)
    await finished_turn(rig, "three", session_id=sid)
    fork = await finished_turn(rig, "fork", session_id=sid, fork_session=True)
    turns = await rig.store.session_turns(sid, limit=10, after=None)
    assert [t.session_cost_usd for t in turns] == [0.001, 0.002, 0.003]
    assert [round(t.cost_usd or 0, 6) for t in turns] == [0.001, 0.001, 0.001]
    fork_row = await rig.store.get_turn(fork.turn_id)
    assert fork_row is not None and fork_row.session_cost_usd == 0.004
    assert round(fork_row.cost_usd or 0, 6) == 0.001  # the fork starts from its parent's total
    assert round(await rig.store.spent_since(None, "2000-01-01"), 6) == 0.004
    assert first.turn_id != fork.turn_id


async def test_the_gate_counts_the_turns_own_cost_against_a_budget(rig: Rig) -> None:
    """Three turns of a session cost 0.003 in all, not 0.001 + 0.002 + 0.003."""
    key = Principal("key_b", "b", admin=False, daily_budget_usd=0.0035)
    sub = await rig.broker.start(TurnOptions(prompt="one"), principal=key)
    await drain(sub)
    sub.close()
    (session,) = await rig.store.list_sessions(limit=5, owner="key_b")
    for prompt in ("two", "three"):
        sub = await rig.broker.start(TurnOptions(prompt=prompt, session_id=session.session_id), principal=key)
        await drain(sub)
        sub.close()
    sub = await rig.broker.start(TurnOptions(prompt="four", session_id=session.session_id), principal=key)
    await drain(sub)
    sub.close()
    err = await refused(rig.broker.start(TurnOptions(prompt="five", session_id=session.session_id), principal=key))
    assert err.code == "budget_exceeded"


async def test_the_log_hands_out_durable_events_in_batches_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    log = turn_module.TurnLog()
    for _ in range(100):
        log.append(b"x" * 100, "assistant")
    assert log.take(0) == [] and log.undurable(250) == log.take(0) + log._events[:3]
    log.mark_durable(50)
    assert [e.seq for e in log.take(0, 250)] == [1, 2, 3]  # about 250 bytes: whole events
    assert [e.seq for e in log.take(48, 10_000)] == [49, 50]  # never past the durable mark
    assert [e.seq for e in log.undurable(1)] == [51]  # at least one
    monkeypatch.setattr(turn_module, "LOG_MEMORY_BYTES", 4000)
    log.mark_durable(100)  # over the bound: down to half of it, from the oldest
    assert log.take(0) is None and log.take(79) is None
    assert [e.seq for e in log.take(80, 10_000)] == list(range(81, 101))
    log.close()
    assert log.take(99) is None and log.last_seq == 100


async def test_shutdown_ends_running_turns_and_says_how_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    made = await make_rig(tmp_path, max_concurrent=2, max_queue=2)
    subs = [await made.broker.start(TurnOptions(prompt="@sleep=30"), detach=True) for _ in range(2)]
    with caplog.at_level("INFO", logger="claude_server.broker"):
        await made.broker.shutdown()
    assert all(s.turn is not None and s.turn.status is TurnStatus.INTERRUPTED for s in subs)
    assert any("shutdown: ended 2 running turn(s) and 0 warm CLI(s) in" in r.getMessage() for r in caplog.records)
    await made.store.close()


async def test_a_cli_that_exits_the_instant_it_starts_ends_each_turn_with_an_error(tmp_path: Path) -> None:
    # Exiting before the server has set its pipes up closes stdout under it: a race that
    # lost about one start in three in a loop of 300 (measured). Every turn must end, as an error.
    cli = tmp_path / "claude"
    shutil.copy(FAKE_CLI, cli)
    made = await make_rig(tmp_path, cli, max_concurrent=2, max_queue=20)
    try:
        cli.write_text("#!/bin/sh\nexit 1\n")
        for _ in range(12):
            sub = await made.broker.start(TurnOptions(prompt="x"), spawn_retries=1)
            events = await asyncio.wait_for(drain(sub), 20)
            sub.close()
            assert events[-1].name == "error" and b"cli_failed" in events[-1].data, events[-1].data
        assert made.slots() == (0, 0) and not made.broker.running()
    finally:
        await made.broker.shutdown()
        await made.store.close()
