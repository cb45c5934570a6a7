"""Restart recovery: what a server that is gone left behind. Its unfinished turns are marked
``interrupted`` (their log ends with an ``interrupted`` error, numbered above every event
a client could hold), the CLI processes it did not end (running or warm) are killed by
marker with everything they started, a workspace that no
session came to use is removed, and what a turn's stored ``result`` line says it cost is
recorded, so that its spend counts for the turn that made it. No aiohttp here."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from claude_server.claude import events
from claude_server.claude.reaper import Reaper
from claude_server.outcome import StopCode, TurnError, TurnResult, own_cost
from claude_server.store import Store, TurnRow
from claude_server.workspaces import Workspaces

log = logging.getLogger(__name__)


async def recover(
    store: Store, reaper: Reaper, workspaces: Workspaces, server_id: str, live_since: str | None = None
) -> list[TurnRow]:
    """Clean up after servers that are gone (only those: one server owns a database, see
    ``instance``, or, with ``live_since``, the replicas whose heartbeat is older than it, and
    of their processes those on this host; see ``replicas``); returns the turns it marked
    interrupted."""
    error = TurnError(StopCode.INTERRUPTED, "The server stopped while this turn was running")
    rows = await store.interrupt_unfinished(error.to_json(), server_id, live_since)
    if live_since is None:
        markers = await store.unended_processes(server_id)
    else:
        found = await store.dead_servers_processes(server_id, live_since)
        markers = [marker for marker, server in found if server.rsplit(":", 2)[0] == socket.gethostname()]
    if not rows and not markers:
        return rows
    killed = await reaper.sweep(markers)
    await store.end_processes(markers)
    servers = sorted({row.server_id or "an earlier version" for row in rows})
    log.warning(
        "marked %d turn(s) of a server that is gone (%s) interrupted; %d CLI process(es) were left, "
        "killed %d leftover process(es)",
        len(rows),
        ", ".join(servers) or "none",
        len(markers),
        killed,
    )
    for row in rows:
        await _discard_orphan_workspace(store, workspaces, row)
        await _record_result(store, row)
    return rows


async def _discard_orphan_workspace(store: Store, workspaces: Workspaces, row: TurnRow) -> None:
    workspace = Path(row.workspace_path)
    orphan = row.session_id is None and workspaces.is_session_dir(workspace)
    if orphan and not await store.workspace_users(row.workspace_path):
        await asyncio.to_thread(workspaces.remove, workspace)


async def _record_result(store: Store, row: TurnRow) -> None:
    """A turn whose CLI printed its result before the server died still spent what it says."""
    result: TurnResult | None = None
    after = 0
    while batch := await store.events(row.turn_id, after=after):
        for event in batch:
            if event.name is None and event.data.startswith(b"{") and b'"result"' in event.data:
                obj = events.parse(event.data)
                if obj is not None and events.kind(obj) == "result":
                    result = TurnResult.of(obj)
        after = batch[-1].seq
    if result is None:
        return
    previous = await store.session_cost_before(row.resumed_from) if row.resumed_from else None
    await store.record_turn_cost(
        row.turn_id,
        cost_usd=own_cost(result, previous),
        session_cost_usd=result.total_cost_usd,
        usage=result.usage,
        num_turns=result.num_turns,
    )
