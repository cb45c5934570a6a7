"""Requests that race for one session (with the fake CLI)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from claude_server.config import Settings
from tests.helpers import eventually, marked_pids, post, process_of, read_until, run_turn, session_of
from tests.test_sessions import transcripts

DELETERS = 3


async def running_turn(client: TestClient, session_id: str) -> str:
    """A detached turn running on the session (its client gone); returns its id."""
    resp = await post(client, {"prompt": "@sleep=30 busy", "session_id": session_id, "detach": True})
    assert resp.status == 200, await resp.text()
    await read_until(resp, lambda ev: ev.event is None and ev.json().get("subtype") == "init")
    resp.close()
    return str(resp.headers["X-Turn-Id"])


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "running"])
async def test_concurrent_deletes_of_a_session_delete_it_once(
    client: TestClient, settings: Settings, busy: bool
) -> None:
    _, events = await run_turn(client, {"prompt": "to be deleted"})
    sid = session_of(events)
    workspace = Path(events[0].json()["cwd"])
    assert workspace.is_dir() and transcripts(settings, sid)
    turn_id = await running_turn(client, sid) if busy else None
    # The session's CLI: the running turn's, or the first turn's, warm.
    first_turn = str(events[0].id).rsplit(":", 1)[0]
    process = await process_of(client, turn_id or first_turn)
    assert marked_pids(process)

    answers = await asyncio.gather(*(client.delete(f"/api/sessions/{sid}") for _ in range(DELETERS)))

    statuses = sorted(resp.status for resp in answers)
    bodies = [await resp.text() for resp in answers]
    assert statuses == [204] + [404] * (DELETERS - 1), (statuses, bodies)
    for resp in answers:
        if resp.status == 404:
            assert (await resp.json())["error"]["code"] == "session_not_found"
    assert (await client.get(f"/api/sessions/{sid}")).status == 404
    assert not workspace.exists()
    assert transcripts(settings, sid) == []
    if turn_id is not None:
        # The turn went with its session.
        assert (await client.get(f"/api/turns/{turn_id}")).status == 404
    # And so did its CLI, running or warm.
    assert await eventually(lambda: not marked_pids(process), 5), marked_pids(process)
