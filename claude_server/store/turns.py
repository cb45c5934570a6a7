"""SQL for turns: started, finished, recovered after a crash, summed for stats and budgets."""

from __future__ import annotations

import json
from typing import Any

from claude_server.store.database import Database
from claude_server.store.events import INSERT_CHUNK, Notifier
from claude_server.store.rows import TURN_COLUMNS, TurnRow, dumps, now_iso

STAT_GROUPS = {
    "day": "substr(started_at, 1, 10)",
    "model": "coalesce(model, 'unknown')",
    "key": "coalesce(owner, '')",
    "provider": "coalesce(provider_id, '')",
}

# The turns of servers that are not live replicas (see ``store/replicas.py``).
LIVE_ONLY = " AND COALESCE(server_id, '') NOT IN (SELECT server_id FROM replicas WHERE heartbeat_at >= ?)"


class TurnQueries(Notifier):
    db: Database

    async def insert_turn(
        self,
        turn_id: str,
        *,
        session_id: str | None,
        prompt: str,
        options: dict[str, Any],
        workspace_path: str,
        detach: bool,
        owner: str | None = None,
        status: str = "running",
        server_id: str | None = None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO turns (turn_id, session_id, resumed_from, status, prompt, options, workspace_path, detach, "
            "owner, started_at, server_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                turn_id,
                session_id,
                session_id,
                status,
                prompt,
                json.dumps(options),
                workspace_path,
                int(detach),
                owner,
                now_iso(),
                server_id,
            ),
        )

    async def set_turn_session(self, turn_id: str, session_id: str) -> None:
        await self.db.execute("UPDATE turns SET session_id = ? WHERE turn_id = ?", (session_id, turn_id))

    async def set_turn_status(self, turn_id: str, status: str) -> None:
        await self.db.execute("UPDATE turns SET status = ? WHERE turn_id = ?", (status, turn_id))

    async def finish_turn(
        self,
        turn_id: str,
        *,
        status: str,
        exit_code: int | None,
        cost_usd: float | None,
        session_cost_usd: float | None,
        usage: dict[str, Any] | None,
        num_turns: int | None,
        error: dict[str, Any] | None,
        last_seq: int,
        model: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        await self.execute_notifying(
            "UPDATE turns SET status = ?, finished_at = ?, exit_code = ?, cost_usd = ?, session_cost_usd = ?, "
            "usage = ?, num_turns = ?, error = ?, last_seq = ?, model = ?, duration_ms = ? WHERE turn_id = ?",
            (
                status,
                now_iso(),
                exit_code,
                cost_usd,
                session_cost_usd,
                dumps(usage),
                num_turns,
                dumps(error),
                last_seq,
                model,
                duration_ms,
                turn_id,
            ),
            turn_id,
        )

    async def record_turn_cost(
        self,
        turn_id: str,
        *,
        cost_usd: float | None,
        session_cost_usd: float | None,
        usage: dict[str, Any] | None,
        num_turns: int | None,
    ) -> None:
        """What a turn's result said it cost (for a turn that ended otherwise)."""
        await self.db.execute(
            "UPDATE turns SET cost_usd = ?, session_cost_usd = ?, usage = ?, num_turns = ? WHERE turn_id = ?",
            (cost_usd, session_cost_usd, dumps(usage), num_turns, turn_id),
        )

    async def get_turn(self, turn_id: str) -> TurnRow | None:
        row = await self.db.fetchone(f"SELECT {TURN_COLUMNS} FROM turns WHERE turn_id = ?", (turn_id,))
        return TurnRow.of(row) if row else None

    async def session_turns(self, session_id: str, *, limit: int, after: tuple[str, str] | None) -> list[TurnRow]:
        """A session's turns, oldest first; ``after`` is the (started_at, turn_id) of the
        previous page's last turn."""
        sql = f"SELECT {TURN_COLUMNS} FROM turns WHERE session_id = ?"
        params: list[Any] = [session_id]
        if after is not None:
            sql += " AND (started_at > ? OR (started_at = ? AND turn_id > ?))"
            params += [after[0], after[0], after[1]]
        sql += " ORDER BY started_at, turn_id LIMIT ?"
        return [TurnRow.of(row) for row in await self.db.fetchall(sql, (*params, limit))]

    async def session_cost_before(self, session_id: str) -> float | None:
        """The CLI's running total of a session after its newest turn that reported one."""
        found = await self.db.fetchval(
            "SELECT session_cost_usd FROM turns WHERE session_id = ? AND session_cost_usd IS NOT NULL "
            "ORDER BY started_at DESC, finished_at DESC LIMIT 1",
            (session_id,),
        )
        return float(found) if found is not None else None

    async def spent_since(self, owner: str | None, since: str) -> float:
        """The recorded cost of an owner's turns started since ``since``."""
        found = await self.db.fetchval(
            "SELECT coalesce(sum(cost_usd), 0) FROM turns WHERE COALESCE(owner, '') = ? AND started_at >= ?",
            (owner or "", since),
        )
        return float(found or 0.0)

    async def interrupt_unfinished(
        self, error: dict[str, Any], server_id: str, live_since: str | None = None
    ) -> list[TurnRow]:
        """Mark every turn that servers other than ``server_id`` left queued or running as
        interrupted, and end its event log with an ``error`` event carrying ``error``. With
        ``live_since``, the turns of servers whose replica heartbeat is at or after it (live
        replicas, see ``store/replicas.py``) are left alone.

        The event's seq is one above the highest one stored. Events reach clients only once
        stored, so no client holds that seq for another event."""
        data = json.dumps({"type": "error", **error}).encode()
        async with self.db.transaction() as tx:
            rows = [
                TurnRow.of(row)
                for row in await tx.fetchall(
                    f"SELECT {TURN_COLUMNS} FROM turns WHERE status IN ('queued', 'running') "
                    "AND COALESCE(server_id, '') != ?" + (LIVE_ONLY if live_since is not None else ""),
                    (server_id,) if live_since is None else (server_id, live_since),
                )
            ]
            for row in rows:
                found = await tx.fetchone(
                    "SELECT coalesce(max(last_seq), 0) AS seq FROM events WHERE turn_id = ?", (row.turn_id,)
                )
                seq = max(found["seq"] if found else 0, row.last_seq) + 1
                await tx.execute(INSERT_CHUNK, (row.turn_id, seq, seq, json.dumps({str(seq): "error"}), data))
                await tx.execute(
                    "UPDATE turns SET status = 'interrupted', finished_at = ?, error = ?, last_seq = ? "
                    "WHERE turn_id = ? AND status IN ('queued', 'running')",
                    (now_iso(), json.dumps(error), seq, row.turn_id),
                )
            await self.notify_in(tx, (row.turn_id for row in rows))
        return rows

    async def stats(
        self, *, since: str | None, until: str | None, group_by: str, owner: str | None, all_owners: bool
    ) -> list[dict[str, Any]]:
        """Finished turns summed per day, model or owner key (``group_by``), from their
        recorded results; ``owner`` limits to one key's turns unless ``all_owners``."""
        group = STAT_GROUPS[group_by]
        tokens = self.db.dialect.json_int
        where = ["finished_at IS NOT NULL"]
        params: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if until is not None:
            where.append("started_at < ?")
            params.append(until)
        if not all_owners:
            where.append("COALESCE(owner, '') = ?")
            params.append(owner or "")
        sql = (
            f"SELECT {group} AS grp, count(*) AS turns, "
            "sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS successes, "
            "sum(CASE WHEN status IN ('failed', 'interrupted') THEN 1 ELSE 0 END) AS failures, "
            "coalesce(sum(cost_usd), 0) AS cost_usd, "
            f"CAST(coalesce(sum({tokens('usage', 'input_tokens')}), 0) AS BIGINT) AS input_tokens, "
            f"CAST(coalesce(sum({tokens('usage', 'output_tokens')}), 0) AS BIGINT) AS output_tokens, "
            "avg(duration_ms) AS mean_duration_ms "
            f"FROM turns WHERE {' AND '.join(where)} GROUP BY grp ORDER BY grp"
        )
        return [
            {
                "group": r["grp"],
                "turns": r["turns"],
                "successes": r["successes"] or 0,
                "failures": r["failures"] or 0,
                "cost_usd": r["cost_usd"],
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "mean_duration_ms": r["mean_duration_ms"],
            }
            for r in await self.db.fetchall(sql, params)
        ]
