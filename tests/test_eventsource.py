"""End to end: a browser's EventSource stops reconnecting once a finished turn has nothing
more for it.

An EventSource reconnects whenever a stream ends, with the last id it saw as
``Last-Event-ID``; only a 204 (or another failure) makes it stop. The server answers a
finished turn whose whole log the client has with 204, so a browser left on a finished
turn's page makes one reconnect, not one every three seconds for ever. The client is the
WhatWG ``eventsource`` package (pinned in package.json) under Node
(tests/eventsource_client.mjs); the server is a subprocess with the fake CLI."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import FAKE_CLI, ROOT, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import SseEvent, wait_until
from tests.test_e2e_core import run_turn, wait_turn_finished

pytestmark = pytest.mark.e2e

CLIENT = Path(__file__).resolve().parent / "eventsource_client.mjs"
# The package reconnects 3 s after a stream ends: long enough for a reconnect and for a
# second one, if the first did not stop it.
FOLLOW_S = 8
CLOSED = 2


def node() -> str:
    """Node, and the pinned eventsource package; a clear failure, not a skip, without them."""
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "Node.js is not on PATH: install Node 20 or newer (the eventsource tests need it), then `make setup`"
        )
    if not (ROOT / "node_modules" / "eventsource" / "package.json").is_file():
        pytest.fail(f"the eventsource package is not installed in {ROOT / 'node_modules'}: run `make setup` (npm ci)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    """A server of its own, so that its access log holds only these tests' requests."""
    running = start_server(tmp_path_factory.mktemp("eventsource"), fake_api, FAKE_CLI)
    yield running
    stop_server(running)


async def follow_with_eventsource(url: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(CLIENT),
        url,
        str(FOLLOW_S),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), FOLLOW_S + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")
    return dict(json.loads(out))


def access_log(server: RunningServer, turn_id: str) -> list[int]:
    """The statuses the server logged for the turn's events endpoint, in order."""
    pattern = re.compile(rf"GET /api/turns/{turn_id}/events(?:\?\S*)? (\d{{3}}) ")
    return [int(m.group(1)) for m in pattern.finditer(server.log_text())]


def logged(events: list[SseEvent]) -> list[tuple[str | None, str | None, str]]:
    return [(ev.id, ev.event, ev.data) for ev in events]


@pytest.mark.parametrize(
    ("prompt", "status"),
    [("@lines=5 a finished turn", "succeeded"), ("@exit=3 a failed turn", "failed")],
    ids=["succeeded", "failed"],
)
async def test_eventsource_reads_a_finished_turn_once_and_stops(
    http: aiohttp.ClientSession, server: RunningServer, prompt: str, status: str
) -> None:
    node()
    turn = await run_turn(http, server, {"prompt": prompt})
    turn_id = turn.turn_id
    assert (await wait_turn_finished(http, server, turn_id))["status"] == status
    streamed = turn.events
    assert [ev.id for ev in streamed] == [f"{turn_id}:{seq}" for seq in range(1, len(streamed) + 1)]

    seen = await follow_with_eventsource(f"{server.url}/api/turns/{turn_id}/events")

    # Every event of the log once, in order. A named event (the server's `error`) reaches
    # the EventSource's error listeners, carrying its data; the others are messages.
    messages = [(m["id"], None, m["data"]) for m in seen["messages"]]
    named = [(e["last_event_id"], "error", e["data"]) for e in seen["errors"] if e["data"] is not None]
    assert messages + named == logged(streamed), seen

    # One connection that replays the log, then at most one reconnect that gets 204 and
    # stops the EventSource for good.
    connections = seen["connections"]
    assert 1 <= len(connections) <= 2, connections
    assert (connections[0]["last_event_id"], connections[0]["status"]) == (None, 200), connections
    if len(connections) == 2:
        assert (connections[1]["last_event_id"], connections[1]["status"]) == (streamed[-1].id, 204), connections
    assert seen["opens"] == 1, seen
    assert seen["ready_state"] == CLOSED, seen
    failures = [e for e in seen["errors"] if e["data"] is None]
    assert failures[-1]["code"] == 204, failures
    # A request's access-log line is written once it has ended, maybe after the client saw it end.
    statuses = [c["status"] for c in connections]
    matched = await asyncio.to_thread(wait_until, lambda: access_log(server, turn_id) == statuses, 10.0)
    assert matched, server.log_text()[-3000:]


async def test_a_reconnect_with_the_last_id_of_a_finished_turn_gets_204(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    turn = await run_turn(http, server, {"prompt": "@lines=3 finished"})
    turn_id = turn.turn_id
    last = (await wait_turn_finished(http, server, turn_id))["last_seq"]
    assert last == len(turn.events)
    url = f"{server.url}/api/turns/{turn_id}/events"

    for kwargs in (
        {"headers": {"Last-Event-ID": f"{turn_id}:{last}"}},
        {"headers": {"Last-Event-ID": str(last)}},
        {"params": {"after": str(last)}},
        {"headers": {"Last-Event-ID": f"{turn_id}:{last + 5}"}},
    ):
        async with http.get(url, **kwargs) as resp:
            assert resp.status == 204, (kwargs, resp.status)
            assert await resp.read() == b""
            assert resp.headers["X-Turn-Id"] == turn_id

    # One short of the end: the last event, then the end of the stream.
    async with http.get(url, headers={"Last-Event-ID": f"{turn_id}:{last - 1}"}) as resp:
        assert resp.status == 200
        body = await resp.text()
    assert body == f"id: {turn_id}:{last}\ndata: {turn.events[-1].data}\n\n", body
