"""SQL for sessions: recorded when the CLI reports one, listed, changed, deleted."""

from __future__ import annotations

from typing import Any

from claude_server.store.database import Database
from claude_server.store.errors import Conflict
from claude_server.store.rows import SESSION_COLUMNS, SessionRow, dumps, now_iso


class ConversationTaken(Exception):
    """The conversation id is bound to another session already."""


class SessionQueries:
    db: Database

    async def insert_session(
        self,
        session_id: str,
        *,
        workspace_path: str,
        workspace_name: str,
        first_prompt: str,
        forked_from: str | None = None,
        conversation_id: str | None = None,
        owner: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record a session the CLI reported; a session already known is only touched."""
        when = now_iso()
        try:
            await self.db.execute(
                "INSERT INTO sessions (session_id, workspace_path, workspace_name, created_at, last_used_at, "
                "forked_from, title, first_prompt, metadata, conversation_id, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET last_used_at = excluded.last_used_at",
                (
                    session_id,
                    workspace_path,
                    workspace_name,
                    when,
                    when,
                    forked_from,
                    title,
                    first_prompt,
                    dumps(metadata),
                    conversation_id,
                    owner,
                ),
            )
        except Conflict as exc:
            raise ConversationTaken(str(exc)) from exc

    async def get_session(self, session_id: str) -> SessionRow | None:
        row = await self.db.fetchone(f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.session_id = ?", (session_id,))
        return SessionRow.of(row) if row else None

    async def find_conversation(self, conversation_id: str, owner: str | None) -> SessionRow | None:
        row = await self.db.fetchone(
            f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE COALESCE(s.owner, '') = ? AND s.conversation_id = ?",
            (owner or "", conversation_id),
        )
        return SessionRow.of(row) if row else None

    async def bind_conversation(self, session_id: str, conversation_id: str | None) -> None:
        try:
            await self.db.execute(
                "UPDATE sessions SET conversation_id = ? WHERE session_id = ?", (conversation_id, session_id)
            )
        except Conflict as exc:
            raise ConversationTaken(str(exc)) from exc

    async def list_sessions(
        self,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        query: str | None = None,
        conversation_id: str | None = None,
        owner: str | None = None,
        all_owners: bool = False,
    ) -> list[SessionRow]:
        """Newest first by last use; ``after`` is the (last_used_at, session_id) of the
        previous page's last item; ``query`` matches title or first prompt, any case; only
        ``owner``'s sessions unless ``all_owners``."""
        where, params = [], []
        if conversation_id is not None:
            where.append("s.conversation_id = ?")
            params.append(conversation_id)
        if not all_owners:
            where.append("COALESCE(s.owner, '') = ?")
            params.append(owner or "")
        if after is not None:
            where.append("(s.last_used_at < ? OR (s.last_used_at = ? AND s.session_id < ?))")
            params += [after[0], after[0], after[1]]
        if query:
            icontains = self.db.dialect.icontains
            where.append(f"({icontains('s.title')} OR {icontains('s.first_prompt')})")
            params += [query, query]
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions s"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.last_used_at DESC, s.session_id DESC LIMIT ?"
        return [SessionRow.of(row) for row in await self.db.fetchall(sql, (*params, limit))]

    async def update_session(self, session_id: str, changes: dict[str, Any]) -> None:
        """Set ``title`` and/or ``metadata`` (a dict, stored as JSON)."""
        sets, params = [], []
        for column in ("title", "metadata"):
            if column in changes:
                sets.append(f"{column} = ?")
                value = changes[column]
                params.append(dumps(value) if column == "metadata" else value)
        if sets:
            await self.db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ?", (*params, session_id))

    async def touch_session(self, session_id: str) -> None:
        await self.db.execute("UPDATE sessions SET last_used_at = ? WHERE session_id = ?", (now_iso(), session_id))

    async def workspace_users(self, workspace_path: str) -> int:
        found = await self.db.fetchval("SELECT count(*) FROM sessions WHERE workspace_path = ?", (workspace_path,))
        return int(found or 0)

    async def named_workspace_of(self, owner: str | None, workspace_name: str) -> str | None:
        """The path an owner's sessions of a named workspace already use, if any (the newest)."""
        found = await self.db.fetchval(
            "SELECT workspace_path FROM sessions WHERE COALESCE(owner, '') = ? AND workspace_name = ? "
            "ORDER BY last_used_at DESC LIMIT 1",
            (owner or "", workspace_name),
        )
        return str(found) if found is not None else None

    async def delete_session(self, session_id: str) -> bool:
        """The session, its turns and their events, in one transaction; False when there was
        no such session (another delete got there first)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM events WHERE turn_id IN (SELECT turn_id FROM turns WHERE session_id = ?)", (session_id,)
            )
            await tx.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            deleted = await tx.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
        return deleted > 0

    async def stale_sessions(self, before: str) -> list[SessionRow]:
        """Sessions last used before ``before`` with no turn still running."""
        rows = await self.db.fetchall(
            f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.last_used_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM turns t WHERE t.session_id = s.session_id AND t.status IN ('queued', 'running')) "
            "ORDER BY s.last_used_at",
            (before,),
        )
        return [SessionRow.of(row) for row in rows]
