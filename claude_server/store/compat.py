"""SQL for the exchanges of the OpenAI/Anthropic-compatible routes (see
``claude_server/compat/conversation.py`` for how a history finds its session)."""

from __future__ import annotations

from claude_server.store.database import Database
from claude_server.store.rows import now_iso


class CompatQueries:
    db: Database

    async def insert_compat_turn(
        self, turn_id: str, *, session_id: str, user_text: str, assistant_text: str, history_key: str | None
    ) -> None:
        await self.db.execute(
            "INSERT INTO compat_turns (turn_id, session_id, user_text, assistant_text, history_key, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (turn_id, session_id, user_text, assistant_text, history_key, now_iso()),
        )

    async def compat_session_key(self, session_id: str) -> str | None:
        """The history key recorded by the session's newest turn; None when that turn is not a
        recorded compatible exchange (a native turn, a failed one) or recorded no key."""
        found = await self.db.fetchval(
            "SELECT c.history_key FROM turns t LEFT JOIN compat_turns c ON c.turn_id = t.turn_id "
            "WHERE t.session_id = ? ORDER BY t.started_at DESC, t.turn_id DESC LIMIT 1",
            (session_id,),
        )
        return str(found) if found is not None else None

    async def compat_sessions_at(self, history_key: str, owner: str | None) -> list[str]:
        """The sessions of ``owner`` whose newest turn recorded ``history_key``, the one that has
        waited longest first. A session that went on (any later turn, native or failed ones
        included) no longer matches: its context is no longer that history."""
        rows = await self.db.fetchall(
            "SELECT c.session_id FROM compat_turns c "
            "JOIN turns t ON t.turn_id = c.turn_id "
            "JOIN sessions s ON s.session_id = c.session_id "
            "WHERE c.history_key = ? AND COALESCE(s.owner, '') = ? AND NOT EXISTS ("
            "SELECT 1 FROM turns n WHERE n.session_id = c.session_id "
            "AND (n.started_at > t.started_at OR (n.started_at = t.started_at AND n.turn_id > t.turn_id))) "
            "ORDER BY c.created_at, c.turn_id",
            (history_key, owner or ""),
        )
        return [row["session_id"] for row in rows]
