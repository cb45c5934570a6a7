"""SQL for providers: which one a session is bound to, which one each turn ran on, the moves
of sessions between them, and the figures the management API shows."""

from __future__ import annotations

from claude_server.store.database import Database
from claude_server.store.rows import now_iso


class ProviderQueries:
    db: Database

    async def bind_provider(self, session_id: str, provider_id: str) -> None:
        await self.db.execute("UPDATE sessions SET provider_id = ? WHERE session_id = ?", (provider_id, session_id))

    async def set_turn_provider(self, turn_id: str, provider_id: str) -> None:
        await self.db.execute("UPDATE turns SET provider_id = ? WHERE turn_id = ?", (provider_id, turn_id))

    async def move_provider(
        self, session_id: str, turn_id: str | None, from_provider: str | None, to_provider: str, reason: str
    ) -> None:
        """The session goes on with another provider; the move is recorded."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE sessions SET provider_id = ? WHERE session_id = ?", (to_provider, session_id))
            await tx.execute(
                "INSERT INTO provider_moves (session_id, turn_id, from_provider, to_provider, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, turn_id, from_provider, to_provider, reason, now_iso()),
            )

    async def provider_moves(self, session_id: str) -> list[dict[str, str | None]]:
        rows = await self.db.fetchall(
            "SELECT turn_id, from_provider, to_provider, reason, at FROM provider_moves WHERE session_id = ? "
            "ORDER BY at",
            (session_id,),
        )
        return [dict(row) for row in rows]

    async def provider_figures(self, since: str) -> dict[str, dict[str, float]]:
        """Per provider: its bound sessions, and its turns and their cost since ``since``."""
        figures: dict[str, dict[str, float]] = {}
        rows = await self.db.fetchall(
            "SELECT provider_id, count(*) AS n FROM sessions WHERE provider_id IS NOT NULL GROUP BY provider_id"
        )
        for row in rows:
            figures.setdefault(row["provider_id"], {})["sessions"] = row["n"]
        rows = await self.db.fetchall(
            "SELECT provider_id, count(*) AS n, coalesce(sum(cost_usd), 0) AS cost FROM turns "
            "WHERE provider_id IS NOT NULL AND started_at >= ? GROUP BY provider_id",
            (since,),
        )
        for row in rows:
            entry = figures.setdefault(row["provider_id"], {})
            entry["turns_today"], entry["cost_today_usd"] = row["n"], row["cost"]
        return figures
