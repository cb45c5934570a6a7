"""This server as one of several replicas on one database: its heartbeat, the sessions its
turns hold, and what it does about replicas that are gone. No aiohttp here.

Every server records itself in ``replicas`` (its ``server_id``, new at every start, under
its replica name and advertise URL) and renews its heartbeat every third of the lease
(``CLAUDE_SERVER_LEASE_SECONDS``). The lease is the replica's, not each turn's: a turn's
row names the server that runs it, and the turn is live exactly while that server's
heartbeat is, so one statement renews every turn of a replica. At each beat the replica
also looks for servers whose lease expired: their unfinished turns are marked
``interrupted`` (as restart recovery does), their session claims and rows removed, and the
CLI processes they left on this host killed by marker. A replica starting again under its
name takes its earlier runs for gone at once (it is their successor) and kills what they
left on this host.

One turn per session across replicas: a turn with a session takes the session's row in
``session_claims`` before its own row is written, in one statement on the unique key
(``store/replicas.py``). It succeeds when the session is free, already this server's (its
own ``Occupancy`` then decides: one turn at a time, queue, interrupt), or held by a server
that is gone; otherwise the start answers 409 ``session_busy`` naming the turn that holds
the session, as a single server does. The claim is released when the turn ends, and with
its server's rows when the server is gone.

On PostgreSQL a shared server also notifies the turns it changes and listens for the turns
others change, so that a follower here of a turn that runs elsewhere hears of its events at
once (``store/changes.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from claude_server.broker_settings import BrokerSettings
from claude_server.claude.reaper import Reaper
from claude_server.errors import Conflict
from claude_server.outcome import StopCode, TurnError
from claude_server.store import Store, now_iso
from claude_server.turn import Turn

log = logging.getLogger(__name__)


def host_of(server_id: str) -> str:
    """The host part of a server id (``instance.server_id``: host, pid, random part)."""
    return server_id.rsplit(":", 2)[0]


class Replicas:
    def __init__(
        self, store: Store, reaper: Reaper, server_id: str, name: str, url: str, lease_s: float, shared: bool = True
    ) -> None:
        self.shared = shared
        self.store = store
        self.reaper = reaper
        self.server_id = server_id
        self.name = name
        self.url = url
        self.lease_s = lease_s
        self._beat: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, settings: BrokerSettings, store: Store, reaper: Reaper) -> Replicas:
        name = settings.replica_name or settings.server_id
        return cls(store, reaper, settings.server_id, name, settings.replica_url, settings.lease_s, settings.shared)

    def cutoff(self) -> str:
        """Servers whose heartbeat is older than this are gone."""
        return now_iso(datetime.now(UTC) - timedelta(seconds=self.lease_s))

    def spared(self) -> str | None:
        """What restart recovery spares: the turns of live replicas when the database is
        shared; nothing when this server holds the one-server lock (every other server that
        recorded turns is gone, whatever its last heartbeat says)."""
        return self.cutoff() if self.shared else None

    async def register(self) -> None:
        """Record this server; earlier runs of this replica are gone from now on."""
        earlier = await self.store.register_replica(self.server_id, self.name, self.url)
        if not self.shared:  # this server holds the one-server lock: every other one is gone
            await self.store.forget_other_servers(self.server_id)
        elif await self.store.listen_for_changes():
            log.info("replica %s: followers of other replicas' turns are woken by LISTEN/NOTIFY", self.name)
        if earlier:
            log.info("replica %s starts again; its earlier run(s) %s are gone", self.name, ", ".join(earlier))

    def start(self) -> None:
        self._beat = asyncio.create_task(self._beating(), name="replica-heartbeat")

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(Exception):
            await self.store.unregister_replica(self.server_id)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.beat()
            except Exception:
                log.exception("replica %s: heartbeat failed", self.name)

    async def beat(self) -> list[str]:
        """Renew the lease, then end what servers that are gone left; returns the turns it
        marked interrupted."""
        if not await self.store.heartbeat(self.server_id):
            log.warning("replica %s was taken for gone (its heartbeat was late); recording it again", self.name)
            await self.register()
        return await self.reap()

    async def reap(self) -> list[str]:
        """Mark the turns of servers that are gone interrupted, kill their processes on this
        host, and forget them."""
        cutoff = self.cutoff()
        error = TurnError(StopCode.INTERRUPTED, "The replica running this turn stopped answering")
        try:
            rows = await self.store.interrupt_unfinished(error.to_json(), self.server_id, live_since=cutoff)
        except Exception as exc:  # another replica marking the same turns at the same time
            log.info("replica %s: marking turns of gone servers failed (%s); next beat tries again", self.name, exc)
            rows = []
        markers = await self.store.dead_servers_processes(self.server_id, cutoff)
        here = [marker for marker, server in markers if host_of(server) == socket.gethostname()]
        if here:
            killed = await self.reaper.sweep(here)
            await self.store.end_processes(here)
            log.warning("replica %s: killed %d process(es) left by servers that are gone", self.name, killed)
        await self.store.forget_dead_servers(cutoff)
        if rows:
            log.warning(
                "replica %s: marked %d turn(s) of servers that are gone (%s) interrupted",
                self.name,
                len(rows),
                ", ".join(sorted({row.server_id or "unknown" for row in rows})),
            )
        return [row.turn_id for row in rows]

    # ---- sessions ----------------------------------------------------------------------
    async def claim(self, turn: Turn, session_id: str | None = None) -> None:
        """Take the turn's session across replicas, or raise 409 ``session_busy``."""
        sid = session_id or (turn.session.session_id if turn.session is not None else None)
        if sid is None:
            return
        holder = await self.store.claim_session(sid, turn.id, self.server_id, self.cutoff())
        if holder is None:
            turn.claimed.add(sid)
            return
        raise Conflict(
            f"A turn ({holder}) is already running on session {sid} on another replica; "
            "wait for it to end or interrupt it",
            code="session_busy",
            turn_id=holder,
        )

    async def release(self, turn: Turn, running_on: Callable[[str], Turn | None]) -> None:
        """Free the turn's sessions, or hand each to the turn of this server that took it
        next (``running_on``: the server's own line of turns)."""
        for sid in list(turn.claimed):
            successor = running_on(sid)
            try:
                if successor is not None and successor is not turn:
                    await self.claim(successor, sid)
                else:
                    await self.store.release_session(sid, turn.id)
            except Exception:
                log.exception("turn %s: could not release session %s", turn.id, sid)
        turn.claimed.clear()

    async def owner_of_turn(self, turn_id: str) -> tuple[str, str | None] | None:
        """(server id, advertise URL or None when it is gone) of the other server running the
        turn; None when it runs here, or nowhere."""
        found = await self.store.turn_server(turn_id)
        return await self._other(found)

    async def owner_of_session(self, session_id: str) -> tuple[str, str | None] | None:
        """The same for the server whose turn holds the session."""
        found = await self.store.session_server(session_id)
        return await self._other(found)

    async def _other(self, server_id: str | None) -> tuple[str, str | None] | None:
        if server_id is None or server_id == self.server_id:
            return None
        return server_id, await self.store.server_of(server_id, self.cutoff())

    async def take_task(self, task_id: str) -> bool:
        """Take a queued task to start it here (see ``store.take_task``)."""
        return await self.store.take_task(task_id, self.server_id, self.cutoff())

    def identity(self) -> dict[str, str]:
        return {"id": self.name, "server_id": self.server_id, "advertise_url": self.url}

    async def public(self) -> list[dict[str, Any]]:
        """The live replicas, each with its unfinished turns."""
        turns = await self.store.running_turns_by_server()
        return [
            {**row, "self": row["server_id"] == self.server_id, "turns": turns.get(row["server_id"], [])}
            for row in await self.store.live_replicas(self.cutoff())
        ]
