"""The warm pool (LRU, idle timeout, limits) and the per-session line of waiting turns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from claude_server.claude.command import TurnOptions
from claude_server.claude.live import LiveCli
from claude_server.errors import ApiError
from claude_server.occupancy import Occupancy
from claude_server.store import SessionRow
from claude_server.turn import Turn
from claude_server.warm import WarmPool


@dataclass
class FakeCli:
    session_id: str
    alive: bool = True
    marker: str = ""


class Retired:
    def __init__(self) -> None:
        self.ended: list[str] = []

    async def __call__(self, live: LiveCli) -> None:
        self.ended.append(cast(Any, live).session_id)


def cli(sid: str) -> LiveCli:
    return cast(LiveCli, FakeCli(sid, marker=f"p-{sid}"))


async def test_take_gives_back_what_was_put_once() -> None:
    retired = Retired()
    pool = WarmPool(60, 2, retired)
    a = cli("a")
    assert pool.put(a)
    assert pool.take("a") is a
    assert pool.take("a") is None
    assert pool.take(None) is None
    assert pool.size == 0 and retired.ended == []


async def test_the_least_recently_used_is_ended_beyond_the_limit() -> None:
    retired = Retired()
    pool = WarmPool(60, 2, retired)
    for sid in ("a", "b", "c"):
        pool.put(cli(sid))
    await asyncio.sleep(0)
    assert retired.ended == ["a"] and pool.size == 2 and pool.evictions == 1
    pool.take("b")  # b is busy again; when it comes back it is the newest
    pool.put(cli("b"))
    pool.put(cli("d"))
    await asyncio.sleep(0)
    assert retired.ended == ["a", "c"]


async def test_an_idle_cli_is_ended_after_the_timeout() -> None:
    retired = Retired()
    pool = WarmPool(0.05, 8, retired)
    pool.put(cli("a"))
    await asyncio.sleep(0.2)
    assert retired.ended == ["a"] and pool.size == 0 and pool.public()["expired"] == 1


async def test_a_cli_that_died_while_idle_is_not_handed_out() -> None:
    retired = Retired()
    pool = WarmPool(60, 8, retired)
    dead = FakeCli("a")
    pool.put(cast(LiveCli, dead))
    dead.alive = False
    assert pool.take("a") is None
    await asyncio.sleep(0)
    assert retired.ended == ["a"]


async def test_off_when_the_timeout_or_the_limit_is_zero() -> None:
    for timeout, limit in ((0, 8), (300, 0)):
        pool = WarmPool(timeout, limit, Retired())
        assert not pool.enabled and not pool.put(cli("a")) and pool.take("a") is None


async def test_close_and_end_retire_what_waits() -> None:
    retired = Retired()
    pool = WarmPool(60, 8, retired)
    pool.put(cli("a"))
    pool.put(cli("b"))
    await pool.end("a")
    await pool.close()
    assert sorted(retired.ended) == ["a", "b"] and pool.size == 0


# ---- turns waiting for their session -----------------------------------------------------------


def session(sid: str) -> SessionRow:
    return cast(SessionRow, type("S", (), {"session_id": sid, "conversation_id": None})())


def turn(sid: str) -> Turn:
    return Turn(
        TurnOptions(prompt="p", session_id=sid),
        Path("/w"),
        create_workspace=False,
        detach=True,
        on_orphaned=lambda t: None,
        session=session(sid),
    )


async def test_waiting_turns_get_the_session_in_order_and_the_interrupting_one_first() -> None:
    occ = Occupancy()
    running = turn("s")
    assert occ.check(running)
    occ.claim(running)
    with pytest.raises(ApiError) as info:
        occ.check(turn("s"))
    assert info.value.status == 409
    second, third, urgent = turn("s"), turn("s"), turn("s")
    assert not occ.check(second, "queue")
    f2 = occ.enqueue(second)
    f3 = occ.enqueue(third)
    fu = occ.enqueue(urgent, front=True)
    assert [second.queue_position, third.queue_position, urgent.queue_position] == [2, 3, 1]
    occ.release(running)
    assert fu.result() is True and occ.running_on("s") is urgent and not f2.done()
    occ.leave(second)
    assert f2.result() is False and third.queue_position == 1
    occ.release(urgent)
    assert f3.result() is True and occ.running_on("s") is third
    occ.release(third)
    assert occ.running_on("s") is None and occ.check(turn("s"))
