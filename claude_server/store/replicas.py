"""SQL for replicas: the servers that share this database, their heartbeats, and which turn
holds which session across all of them.

A server is live while its ``heartbeat_at`` is at or after the cutoff its caller passes
(now minus the lease); everything here takes that cutoff rather than reading a clock, so
that one replica's idea of "expired" is applied in one statement. Times are the store's
ISO text (``now_iso``), which compares in time order on both backends.
"""

from __future__ import annotations

from typing import Any

from claude_server.store.database import Database
from claude_server.store.rows import now_iso

LIVE_SERVERS = "SELECT server_id FROM replicas WHERE heartbeat_at >= ?"


class ReplicaQueries:
    db: Database

    async def register_replica(self, server_id: str, replica_id: str, advertise_url: str) -> list[str]:
        """Record this server; the earlier runs of the same replica (it is starting again, so
        they are gone) are removed in the same transaction. Returns their server ids."""
        now = now_iso()
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT server_id FROM replicas WHERE replica_id = ? AND server_id != ?", (replica_id, server_id)
            )
            earlier = [row["server_id"] for row in rows]
            await tx.execute("DELETE FROM replicas WHERE replica_id = ? AND server_id != ?", (replica_id, server_id))
            await tx.execute(
                "INSERT INTO replicas (server_id, replica_id, advertise_url, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (server_id, replica_id, advertise_url, now, now),
            )
        return earlier

    async def forget_other_servers(self, server_id: str) -> None:
        """Remove every other server's row and claims (one server holds the database)."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM session_claims WHERE server_id != ?", (server_id,))
            await tx.execute("DELETE FROM replicas WHERE server_id != ?", (server_id,))

    async def heartbeat(self, server_id: str) -> bool:
        """Renew this server's lease; False when its row is gone (another replica took it for
        dead), and the caller registers again."""
        return (
            await self.db.execute("UPDATE replicas SET heartbeat_at = ? WHERE server_id = ?", (now_iso(), server_id))
            > 0
        )

    async def unregister_replica(self, server_id: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM session_claims WHERE server_id = ?", (server_id,))
            await tx.execute("DELETE FROM replicas WHERE server_id = ?", (server_id,))

    async def live_replicas(self, cutoff: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT server_id, replica_id, advertise_url, started_at, heartbeat_at FROM replicas "
            "WHERE heartbeat_at >= ? ORDER BY replica_id, started_at",
            (cutoff,),
        )
        return [{key: row[key] for key in row.keys()} for row in rows]  # noqa: SIM118 (asyncpg's Record)

    async def server_of(self, server_id: str, cutoff: str) -> str | None:
        """The advertise URL of a live server, None when it is not live."""
        found = await self.db.fetchval(
            "SELECT advertise_url FROM replicas WHERE server_id = ? AND heartbeat_at >= ?", (server_id, cutoff)
        )
        return str(found) if found is not None else None

    async def turn_server(self, turn_id: str) -> str | None:
        """The server of an unfinished turn."""
        found = await self.db.fetchval(
            "SELECT server_id FROM turns WHERE turn_id = ? AND status IN ('queued', 'running')", (turn_id,)
        )
        return str(found) if found is not None else None

    async def session_server(self, session_id: str) -> str | None:
        """The server whose turn holds the session, else the one whose CLI that ran the
        session's last turn is still running (warm, between turns)."""
        found = await self.db.fetchval("SELECT server_id FROM session_claims WHERE session_id = ?", (session_id,))
        if found is None:
            found = await self.db.fetchval(
                "SELECT server_id FROM processes WHERE ended_at IS NULL AND marker = (SELECT process_id FROM turns "
                "WHERE session_id = ? AND process_id IS NOT NULL ORDER BY started_at DESC LIMIT 1)",
                (session_id,),
            )
        return str(found) if found is not None else None

    async def running_turns_by_server(self) -> dict[str, list[dict[str, Any]]]:
        rows = await self.db.fetchall(
            "SELECT turn_id, session_id, status, started_at, server_id FROM turns "
            "WHERE status IN ('queued', 'running') ORDER BY started_at"
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            out.setdefault(row["server_id"] or "", []).append(
                {
                    "turn_id": row["turn_id"],
                    "session_id": row["session_id"],
                    "status": row["status"],
                    "started_at": row["started_at"],
                }
            )
        return out

    # ---- sessions --------------------------------------------------------------------------
    async def claim_session(self, session_id: str, turn_id: str, server_id: str, cutoff: str) -> str | None:
        """Take the session for ``turn_id``: one statement on the claim's unique key, which
        succeeds when the session is free, already this server's (its own line of turns
        decides), or held by a server that is no longer live. Returns None when taken, else
        the turn that holds it."""
        taken = await self.db.execute(
            "INSERT INTO session_claims (session_id, turn_id, server_id, claimed_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET turn_id = excluded.turn_id, server_id = excluded.server_id, "
            "claimed_at = excluded.claimed_at "
            f"WHERE session_claims.server_id = excluded.server_id OR session_claims.server_id NOT IN ({LIVE_SERVERS})",
            (session_id, turn_id, server_id, now_iso(), cutoff),
        )
        if taken:
            return None
        holder = await self.db.fetchval("SELECT turn_id FROM session_claims WHERE session_id = ?", (session_id,))
        return str(holder) if holder is not None else ""

    async def release_session(self, session_id: str, turn_id: str) -> None:
        """Free the session unless another turn (of this server's line) holds it by now."""
        await self.db.execute("DELETE FROM session_claims WHERE session_id = ? AND turn_id = ?", (session_id, turn_id))

    async def ran_elsewhere(self, session_id: str | None, turn_id: str, server_id: str) -> bool:
        """Whether the turn before ``turn_id`` on the session ran on another server (a warm CLI
        of this server would miss it)."""
        if session_id is None:
            return False
        found = await self.db.fetchone(
            "SELECT server_id FROM turns WHERE (session_id = ? OR resumed_from = ?) AND turn_id != ? "
            "ORDER BY started_at DESC LIMIT 1",
            (session_id, session_id, turn_id),
        )
        return found is not None and found["server_id"] is not None and found["server_id"] != server_id

    async def take_task(self, task_id: str, server_id: str, cutoff: str) -> bool:
        """Take a queued task to start it: one statement, so that of several replicas
        trying at once exactly one gets it (the others see 0 rows changed). A task taken by
        a server that is gone may be taken again."""
        changed = await self.db.execute(
            "UPDATE tasks SET taken_by = ? WHERE task_id = ? AND status = 'queued' "
            f"AND (taken_by IS NULL OR taken_by = ? OR taken_by NOT IN ({LIVE_SERVERS}))",
            (server_id, task_id, server_id, cutoff),
        )
        return changed > 0

    async def untake_task(self, task_id: str) -> None:
        """The task did not start (no spare slot, a busy session): free for any replica."""
        await self.db.execute("UPDATE tasks SET taken_by = NULL WHERE task_id = ?", (task_id,))

    async def dead_servers_processes(self, server_id: str, cutoff: str) -> list[tuple[str, str]]:
        """(marker, server id) of the processes that servers other than ``server_id``, and not
        live, did not end."""
        rows = await self.db.fetchall(
            "SELECT marker, server_id FROM processes WHERE ended_at IS NULL AND server_id != ? "
            f"AND server_id NOT IN ({LIVE_SERVERS})",
            (server_id, cutoff),
        )
        return [(row["marker"], row["server_id"]) for row in rows]

    async def forget_dead_servers(self, cutoff: str) -> int:
        """Remove the rows (and claims) of servers whose lease expired."""
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM session_claims WHERE server_id NOT IN ({LIVE_SERVERS})", (cutoff,))
            return await tx.execute("DELETE FROM replicas WHERE heartbeat_at < ?", (cutoff,))
