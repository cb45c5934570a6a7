"""End to end: ``kill -9`` of the server at any moment of a turn loses nothing a client saw.

The server (a subprocess, the fake CLI) runs a detached turn while a client reads its
stream; the server is killed with SIGKILL, a new one starts at once on the same database
and workspace root, and the client reconnects with the last id it read. Events reach
clients only once they are in SQLite, so every event the client held must come back with
its seq and its bytes, the log must end with an ``interrupted`` error whose seq no client
held, and the killed server's CLI processes must be gone."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import SseEvent, marked_pids
from tests.test_e2e_core import SseReader, get_json, is_init, post
from tests.test_e2e_sessions import kill_leftovers

pytestmark = pytest.mark.e2e

# The restarted server kills what the dead one left before it listens; allow a little more.
PROCESS_GONE_TIMEOUT_S = 5.0
# Long enough that nothing of a turn ends by itself during a test.
QUIET_S = 60


@dataclass
class Held:
    """What a client held of one turn when the server died."""

    turn_id: str
    events: list[SseEvent]  # the events with an id it had read, in order
    cli_ran: bool  # whether the turn's CLI was running at the kill
    process_id: str | None  # the marker of that CLI

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None

    @property
    def max_seq(self) -> int:
        return max((seq_of(ev, self.turn_id) for ev in self.events), default=0)


def seq_of(ev: SseEvent, turn_id: str) -> int:
    assert ev.id is not None, ev
    owner, _, seq = ev.id.rpartition(":")
    assert owner == turn_id, ev
    return int(seq)


def logged(events: list[SseEvent]) -> list[tuple[str | None, str | None, bytes]]:
    """id, event name and the bytes of ``data`` of every event of the log (those with an id)."""
    return [(ev.id, ev.event, ev.data.encode()) for ev in events if ev.id is not None]


def is_event(name: str) -> Callable[[SseEvent], bool]:
    return lambda ev: ev.event == name


def nth_assistant(n: int) -> Callable[[SseEvent], bool]:
    seen = 0

    def predicate(ev: SseEvent) -> bool:
        nonlocal seen
        if ev.event is None and ev.json().get("type") == "assistant":
            seen += 1
        return seen >= n

    return predicate


def is_result(ev: SseEvent) -> bool:
    return ev.event is None and ev.json().get("type") == "result"


class Client:
    """A client of the doomed server: opens detached turns and keeps reading them."""

    def __init__(self, http: aiohttp.ClientSession, server: RunningServer, stack: contextlib.AsyncExitStack) -> None:
        self.http = http
        self.server = server
        self.stack = stack
        self.readers: dict[str, SseReader] = {}

    async def open(self, prompt: str) -> tuple[str, SseReader]:
        resp = await self.stack.enter_async_context(
            await post(self.http, self.server, {"prompt": prompt, "detach": True})
        )
        assert resp.status == 200, await resp.text()
        turn_id = resp.headers["X-Turn-Id"]
        self.readers[turn_id] = reader = SseReader(resp)
        return turn_id, reader

    async def held(self, turn_id: str, cli_ran: bool) -> Held:
        events = [ev for ev in self.readers[turn_id].events if ev.id is not None]
        return Held(turn_id, events, cli_ran, await self.process(turn_id) if cli_ran else None)

    async def status(self, turn_id: str) -> str:
        return str((await get_json(self.http, f"{self.server.url}/api/turns/{turn_id}"))["status"])

    async def process(self, turn_id: str) -> str:
        """The marker of the turn's CLI, once it started."""
        async with asyncio.timeout(10):
            while not (process := (await get_json(self.http, f"{self.server.url}/api/turns/{turn_id}"))["process_id"]):
                await asyncio.sleep(0.05)
        return str(process)


async def wait_for_cli(client: Client, turn_id: str) -> None:
    process = await client.process(turn_id)
    async with asyncio.timeout(10):
        while not marked_pids(process):
            await asyncio.sleep(0.05)


# ---- the moments of a turn at which the server dies ---------------------------------------


async def while_queued(client: Client) -> list[Held]:
    """The only slot is taken by a turn that printed init; a second turn waits for it."""
    blocker, blocker_reader = await client.open(f"@sleep={QUIET_S} holds the only slot")
    await blocker_reader.until(is_init)
    waiting, waiting_reader = await client.open("waits for the slot")
    queued = await waiting_reader.until(lambda ev: True)
    assert (queued.event, queued.id) == ("queued", None), queued
    assert await client.status(waiting) == "queued"
    return [await client.held(waiting, cli_ran=False), await client.held(blocker, cli_ran=True)]


async def before_init(client: Client) -> list[Held]:
    """The CLI runs but has printed nothing yet."""
    turn_id, _ = await client.open(f"@delay-init={QUIET_S} slow to start")
    await wait_for_cli(client, turn_id)
    assert await client.status(turn_id) == "running"
    return [await client.held(turn_id, cli_ran=True)]


async def right_after_init(client: Client) -> list[Held]:
    turn_id, reader = await client.open(f"@sleep={QUIET_S} quiet after init")
    await reader.until(is_init)
    return [await client.held(turn_id, cli_ran=True)]


async def mid_stream(client: Client) -> list[Held]:
    turn_id, reader = await client.open("@lines=400 @slow=0.05 a long answer")
    await reader.until(nth_assistant(10))
    return [await client.held(turn_id, cli_ran=True)]


async def after_result(client: Client) -> list[Held]:
    """The CLI printed its result and has not exited (it would be ended 10 s later; without
    warm CLIs a turn ends when its CLI exits)."""
    turn_id, reader = await client.open("@lines=3 @hang-after-result answered, still running")
    await reader.until(is_result)
    held = await client.held(turn_id, cli_ran=True)
    assert held.process_id and marked_pids(held.process_id), "the CLI exited after its result"
    return [held]


MOMENTS: dict[str, tuple[Callable[[Client], Awaitable[list[Held]]], dict[str, str]]] = {
    "queued": (while_queued, {"CLAUDE_SERVER_MAX_CONCURRENT": "1"}),
    "before_init": (before_init, {}),
    "right_after_init": (right_after_init, {}),
    "mid_stream": (mid_stream, {}),
    "after_result": (after_result, {"CLAUDE_SERVER_WARM_IDLE_TIMEOUT": "0"}),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
async def test_kill_9_loses_nothing_a_client_saw_and_reuses_no_seq(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path, moment: str
) -> None:
    scenario, extra_env = MOMENTS[moment]
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, FAKE_CLI, extra_env)
    restarted: RunningServer | None = None
    held: list[Held] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            held = await scenario(Client(http, server, stack))
            for turn in held:
                running = bool(turn.process_id and marked_pids(turn.process_id))
                assert running == turn.cli_ran, turn
            server.proc.kill()
            await asyncio.to_thread(server.proc.wait, 10)
        shutil.move(server.log, tmp_path / "killed-server.log")

        # At once: the kernel let go of the dead server's lock on the database.
        restarted = await asyncio.to_thread(start_server, tmp_path, fake_api, FAKE_CLI, extra_env)
        for turn in held:
            await check_recovered(http, restarted, turn)
        # A turn killed before its CLI reported a session leaves no workspace behind.
        sessions = (await get_json(http, f"{restarted.url}/api/sessions"))["sessions"]
        kept = {
            Path((await get_json(http, f"{restarted.url}/api/sessions/{s['session_id']}"))["workspace_path"]).resolve()
            for s in sessions
        }
        left = {path.resolve() for path in restarted.workspace_root.iterdir()}
        assert left == kept, (left, kept)
    finally:
        for turn in held:
            if turn.process_id:
                kill_leftovers(turn.process_id)
        for running in (server, restarted):
            if running is not None:
                await asyncio.to_thread(stop_server, running)


async def check_recovered(http: aiohttp.ClientSession, server: RunningServer, held: Held) -> None:
    turn_id = held.turn_id
    events_url = f"{server.url}/api/turns/{turn_id}/events"

    async with asyncio.timeout(PROCESS_GONE_TIMEOUT_S):
        while held.process_id and marked_pids(held.process_id):
            await asyncio.sleep(0.05)

    # The client reconnects where it broke off.
    headers = {"Last-Event-ID": held.last_id} if held.last_id is not None else {}
    async with http.get(events_url, headers=headers) as resp:
        assert resp.status == 200, (held, resp.status, await resp.text())
        tail = await SseReader(resp).rest()
    assert tail, held
    end = tail[-1]
    assert end.event == "error", (held, tail)
    assert end.json()["code"] == "interrupted", end
    assert seq_of(end, turn_id) > held.max_seq, (held.events, end)

    # Everything the client read is still there, with the same seq and the same bytes, and
    # the reconnect got exactly what came after it.
    async with http.get(events_url) as resp:
        assert resp.status == 200, await resp.text()
        whole = await SseReader(resp).rest()
    assert logged(whole[: len(held.events)]) == logged(held.events)
    assert logged(whole[len(held.events) :]) == logged(tail)
    seqs = [seq_of(ev, turn_id) for ev in whole]
    assert seqs == list(range(1, len(whole) + 1)), seqs
    assert [ev.event for ev in whole].count("error") == 1, whole

    turn = await get_json(http, f"{server.url}/api/turns/{turn_id}")
    assert turn["status"] == "interrupted", turn
    assert turn["error"]["code"] == "interrupted", turn
    # What the CLI's result said the turn cost counts for this turn (the fake: 0.001 a turn).
    got_result = any(ev.event is None and ev.json().get("type") == "result" for ev in whole)
    assert turn["cost_usd"] == (0.001 if got_result else None), turn
    assert turn["last_seq"] == seqs[-1], turn

    # Nothing more for a client that holds the whole log.
    async with http.get(events_url, headers={"Last-Event-ID": str(end.id)}) as resp:
        assert resp.status == 204, await resp.text()
