"""Every SQL statement of the server: sessions, turns and their events.

Timestamps are ISO 8601 strings in UTC with millisecond precision and a ``Z``, so they sort
as text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

# A session's default title: its first prompt, shortened.
TITLE_CHARS = 80


def now_iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def default_title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any] | None:
    """The values of a cursor made by ``encode_cursor``; None when it is not one."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(values, list) or len(values) != arity:
        return None
    return values


def _icontains(haystack: str | None, needle: str) -> bool:
    # SQLite's LIKE and lower() fold ASCII only; titles and prompts are any language.
    return haystack is not None and needle.casefold() in haystack.casefold()


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    workspace_path: str
    workspace_name: str
    created_at: str
    last_used_at: str
    forked_from: str | None
    title: str | None
    first_prompt: str
    metadata: dict[str, Any] | None
    conversation_id: str | None
    owner: str | None
    turn_count: int
    total_cost_usd: float
    last_turn_status: str | None

    def summary(self) -> dict[str, Any]:
        """The fields of a session in lists."""
        return {
            "session_id": self.session_id,
            "title": self.title if self.title is not None else default_title(self.first_prompt),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "turn_count": self.turn_count,
            "total_cost_usd": self.total_cost_usd,
            "last_turn_status": self.last_turn_status,
            "workspace": self.workspace_name,
            "conversation_id": self.conversation_id,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "workspace_path": self.workspace_path,
            "forked_from": self.forked_from,
            "metadata": self.metadata if self.metadata is not None else {},
        }


_SESSION_COLUMNS = (
    "s.session_id, s.workspace_path, s.workspace_name, s.created_at, s.last_used_at, s.forked_from, s.title, "
    "s.first_prompt, s.metadata, s.conversation_id, s.owner, "
    "(SELECT count(*) FROM turns t WHERE t.session_id = s.session_id), "
    "(SELECT coalesce(sum(t.cost_usd), 0) FROM turns t WHERE t.session_id = s.session_id), "
    "(SELECT t.status FROM turns t WHERE t.session_id = s.session_id ORDER BY t.started_at DESC LIMIT 1)"
)


def _session(row: Sequence[Any]) -> SessionRow:
    values = list(row)
    values[8] = _loads(values[8])
    return SessionRow(*values)


@dataclass(frozen=True)
class TurnRow:
    turn_id: str
    session_id: str | None
    resumed_from: str | None
    status: str
    prompt: str
    options: dict[str, Any]
    workspace_path: str
    detach: bool
    owner: str | None
    started_at: str
    finished_at: str | None
    exit_code: int | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None
    error: dict[str, Any] | None
    last_seq: int

    def public(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "status": self.status,
            "prompt": self.prompt,
            "options": self.options,
            "detach": self.detach,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "cost_usd": self.cost_usd,
            "usage": self.usage,
            "num_turns": self.num_turns,
            "error": self.error,
            "last_seq": self.last_seq,
        }


_TURN_COLUMNS = (
    "turn_id, session_id, resumed_from, status, prompt, options, workspace_path, detach, owner, started_at, "
    "finished_at, exit_code, cost_usd, usage, num_turns, error, last_seq"
)


def _turn(row: Sequence[Any]) -> TurnRow:
    values = list(row)
    values[5] = _loads(values[5])
    values[7] = bool(values[7])
    values[13] = _loads(values[13])
    values[15] = _loads(values[15])
    return TurnRow(*values)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    name: str | None
    data: bytes


# Consecutive events of one turn share a row up to about this size.
CHUNK_BYTES = 1024 * 1024
_INSERT_CHUNK = "INSERT OR IGNORE INTO events (turn_id, first_seq, last_seq, names, data) VALUES (?, ?, ?, ?, ?)"


def _chunks(rows: Sequence[tuple[str, int, str | None, bytes]]) -> list[tuple[str, int, int, str | None, bytes]]:
    """Rows of the events table for (turn_id, seq, name, data) events given in order."""
    out: list[tuple[str, int, int, str | None, bytes]] = []
    i = 0
    while i < len(rows):
        turn_id, first = rows[i][0], rows[i][1]
        lines: list[bytes] = []
        names: dict[str, str] = {}
        size = 0
        j = i
        # A chunk holds consecutive seqs of one turn only.
        while j < len(rows) and rows[j][0] == turn_id and rows[j][1] == first + (j - i) and size < CHUNK_BYTES:
            if rows[j][2]:
                names[str(rows[j][1])] = str(rows[j][2])
            lines.append(rows[j][3])
            size += len(rows[j][3])
            j += 1
        out.append((turn_id, first, first + len(lines) - 1, json.dumps(names) if names else None, b"\n".join(lines)))
        i = j
    return out


class ConversationTaken(Exception):
    """The conversation id is bound to another session already."""


class Store:
    """Typed access to the tables, over the server's single connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        # One connection serves every coroutine: a write must never land inside another
        # coroutine's open transaction, so writes and transactions take turns.
        self._write_lock = asyncio.Lock()

    async def setup(self) -> None:
        await self.conn.create_function("icontains", 2, _icontains, deterministic=True)

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self._write_lock:
            await self.conn.execute(sql, params)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    # ---- sessions ----------------------------------------------------------------------
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
            await self._execute(
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
                    _dumps(metadata),
                    conversation_id,
                    owner,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ConversationTaken(str(exc)) from exc

    async def get_session(self, session_id: str) -> SessionRow | None:
        async with self.conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.session_id = ?", (session_id,)
        ) as cur:
            row = await cur.fetchone()
        return _session(row) if row else None

    async def find_conversation(self, conversation_id: str, owner: str | None) -> SessionRow | None:
        async with self.conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE COALESCE(s.owner, '') = ? AND s.conversation_id = ?",
            (owner or "", conversation_id),
        ) as cur:
            row = await cur.fetchone()
        return _session(row) if row else None

    async def bind_conversation(self, session_id: str, conversation_id: str | None) -> None:
        try:
            await self._execute(
                "UPDATE sessions SET conversation_id = ? WHERE session_id = ?", (conversation_id, session_id)
            )
        except sqlite3.IntegrityError as exc:
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
            where.append("(icontains(s.title, ?) OR icontains(s.first_prompt, ?))")
            params += [query, query]
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions s"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.last_used_at DESC, s.session_id DESC LIMIT ?"
        async with self.conn.execute(sql, (*params, limit)) as cur:
            return [_session(row) for row in await cur.fetchall()]

    async def update_session(self, session_id: str, changes: dict[str, Any]) -> None:
        """Set ``title`` and/or ``metadata`` (a dict, stored as JSON)."""
        sets, params = [], []
        for column in ("title", "metadata"):
            if column in changes:
                sets.append(f"{column} = ?")
                value = changes[column]
                params.append(_dumps(value) if column == "metadata" else value)
        if sets:
            await self._execute(f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ?", (*params, session_id))

    async def touch_session(self, session_id: str) -> None:
        await self._execute("UPDATE sessions SET last_used_at = ? WHERE session_id = ?", (now_iso(), session_id))

    async def workspace_users(self, workspace_path: str) -> int:
        async with self.conn.execute(
            "SELECT count(*) FROM sessions WHERE workspace_path = ?", (workspace_path,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def delete_session(self, session_id: str) -> None:
        """The session, its turns and their events, in one transaction."""
        async with self._transaction():
            await self.conn.execute(
                "DELETE FROM events WHERE turn_id IN (SELECT turn_id FROM turns WHERE session_id = ?)", (session_id,)
            )
            await self.conn.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
            await self.conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    async def stale_sessions(self, before: str) -> list[SessionRow]:
        """Sessions last used before ``before`` with no turn still running."""
        async with self.conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.last_used_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM turns t WHERE t.session_id = s.session_id AND t.status IN ('queued', 'running')) "
            "ORDER BY s.last_used_at",
            (before,),
        ) as cur:
            return [_session(row) for row in await cur.fetchall()]

    # ---- turns -------------------------------------------------------------------------
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
    ) -> None:
        await self._execute(
            "INSERT INTO turns (turn_id, session_id, resumed_from, status, prompt, options, workspace_path, detach, "
            "owner, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )

    async def set_turn_session(self, turn_id: str, session_id: str) -> None:
        await self._execute("UPDATE turns SET session_id = ? WHERE turn_id = ?", (session_id, turn_id))

    async def finish_turn(
        self,
        turn_id: str,
        *,
        status: str,
        exit_code: int | None,
        cost_usd: float | None,
        usage: dict[str, Any] | None,
        num_turns: int | None,
        error: dict[str, Any] | None,
        last_seq: int,
        model: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        await self._execute(
            "UPDATE turns SET status = ?, finished_at = ?, exit_code = ?, cost_usd = ?, usage = ?, num_turns = ?, "
            "error = ?, last_seq = ?, model = ?, duration_ms = ? WHERE turn_id = ?",
            (
                status,
                now_iso(),
                exit_code,
                cost_usd,
                _dumps(usage),
                num_turns,
                _dumps(error),
                last_seq,
                model,
                duration_ms,
                turn_id,
            ),
        )

    async def key_names(self) -> dict[str, str]:
        async with self.conn.execute("SELECT key_id, name FROM api_keys") as cur:
            return {row[0]: row[1] for row in await cur.fetchall()}

    async def set_turn_status(self, turn_id: str, status: str) -> None:
        await self._execute("UPDATE turns SET status = ? WHERE turn_id = ?", (status, turn_id))

    async def spent_since(self, owner: str | None, since: str) -> float:
        """The recorded cost of an owner's turns started since ``since``."""
        async with self.conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) FROM turns WHERE COALESCE(owner, '') = ? AND started_at >= ?",
            (owner or "", since),
        ) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def stats(
        self, *, since: str | None, until: str | None, group_by: str, owner: str | None, all_owners: bool
    ) -> list[dict[str, Any]]:
        """Finished turns summed per day, model or owner key (``group_by``), from their
        recorded results; ``owner`` limits to one key's turns unless ``all_owners``."""
        group = {
            "day": "substr(started_at, 1, 10)",
            "model": "coalesce(model, 'unknown')",
            "key": "coalesce(owner, '')",
        }[group_by]
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
            f"SELECT {group} AS grp, count(*), sum(status = 'succeeded'), sum(status IN ('failed', 'interrupted')), "
            "coalesce(sum(cost_usd), 0), coalesce(sum(json_extract(usage, '$.input_tokens')), 0), "
            "coalesce(sum(json_extract(usage, '$.output_tokens')), 0), avg(duration_ms) "
            f"FROM turns WHERE {' AND '.join(where)} GROUP BY grp ORDER BY grp"
        )
        async with self.conn.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [
            {
                "group": r[0],
                "turns": r[1],
                "successes": r[2] or 0,
                "failures": r[3] or 0,
                "cost_usd": r[4],
                "input_tokens": r[5],
                "output_tokens": r[6],
                "mean_duration_ms": r[7],
            }
            for r in rows
        ]

    async def get_turn(self, turn_id: str) -> TurnRow | None:
        async with self.conn.execute(f"SELECT {_TURN_COLUMNS} FROM turns WHERE turn_id = ?", (turn_id,)) as cur:
            row = await cur.fetchone()
        return _turn(row) if row else None

    async def session_turns(self, session_id: str, *, limit: int, after: tuple[str, str] | None) -> list[TurnRow]:
        """A session's turns, oldest first; ``after`` is the (started_at, turn_id) of the
        previous page's last turn."""
        sql = f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id = ?"
        params: list[Any] = [session_id]
        if after is not None:
            sql += " AND (started_at > ? OR (started_at = ? AND turn_id > ?))"
            params += [after[0], after[0], after[1]]
        sql += " ORDER BY started_at, turn_id LIMIT ?"
        async with self.conn.execute(sql, (*params, limit)) as cur:
            return [_turn(row) for row in await cur.fetchall()]

    async def interrupt_unfinished(self, error: dict[str, Any]) -> list[TurnRow]:
        """Mark every turn a previous process left queued or running as interrupted, and end
        its event log with an ``error`` event carrying ``error``."""
        async with self._transaction():
            async with self.conn.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE status IN ('queued', 'running')"
            ) as cur:
                rows = [_turn(row) for row in await cur.fetchall()]
            for row in rows:
                async with self.conn.execute(
                    "SELECT coalesce(max(last_seq), 0) FROM events WHERE turn_id = ?", (row.turn_id,)
                ) as cur:
                    found = await cur.fetchone()
                seq = (found[0] if found else 0) + 1
                data = json.dumps({"type": "error", **error}).encode()
                await self.conn.executemany(_INSERT_CHUNK, _chunks([(row.turn_id, seq, "error", data)]))
                await self.conn.execute(
                    "UPDATE turns SET status = 'interrupted', finished_at = ?, error = ?, last_seq = ? "
                    "WHERE turn_id = ?",
                    (now_iso(), json.dumps(error), seq, row.turn_id),
                )
        return rows

    # ---- events ------------------------------------------------------------------------
    async def insert_events(self, rows: Sequence[tuple[str, int, str | None, bytes]]) -> None:
        """(turn_id, seq, name, data) rows, in order, in one transaction."""
        async with self._transaction():
            await self.conn.executemany(_INSERT_CHUNK, _chunks(rows))

    async def events(self, turn_id: str, *, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """A turn's events after seq ``after``: at least ``limit`` of them when there are
        that many (whole chunks are read, so a few more may come)."""
        out: list[StoredEvent] = []
        async with self.conn.execute(
            "SELECT first_seq, names, data FROM events WHERE turn_id = ? AND last_seq > ? ORDER BY first_seq",
            (turn_id, after),
        ) as cur:
            async for first, names, data in cur:
                named = json.loads(names) if names else {}
                for seq, line in enumerate(bytes(data).split(b"\n"), start=first):
                    if seq > after:
                        out.append(StoredEvent(seq, named.get(str(seq)), line))
                if len(out) >= limit:
                    break
        return out

    # ---- exchanges of the OpenAI/Anthropic-compatible routes ------------------------------
    async def insert_compat_turn(
        self, turn_id: str, *, session_id: str, user_text: str, assistant_text: str, history_key: str | None
    ) -> None:
        await self._execute(
            "INSERT INTO compat_turns (turn_id, session_id, user_text, assistant_text, history_key, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (turn_id, session_id, user_text, assistant_text, history_key, now_iso()),
        )

    async def compat_session_key(self, session_id: str) -> str | None:
        """The history key recorded by the session's newest turn; None when that turn is not a
        recorded compatible exchange (a native turn, a failed one) or recorded no key."""
        async with self.conn.execute(
            "SELECT c.history_key FROM turns t LEFT JOIN compat_turns c ON c.turn_id = t.turn_id "
            "WHERE t.session_id = ? ORDER BY t.started_at DESC, t.turn_id DESC LIMIT 1",
            (session_id,),
        ) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def compat_sessions_at(self, history_key: str, owner: str | None) -> list[str]:
        """The sessions of ``owner`` whose newest turn recorded ``history_key``, the one that has
        waited longest first. A session that went on (any later turn, native or failed ones
        included) no longer matches: its context is no longer that history."""
        async with self.conn.execute(
            "SELECT c.session_id FROM compat_turns c "
            "JOIN turns t ON t.turn_id = c.turn_id "
            "JOIN sessions s ON s.session_id = c.session_id "
            "WHERE c.history_key = ? AND COALESCE(s.owner, '') = ? AND NOT EXISTS ("
            "SELECT 1 FROM turns n WHERE n.session_id = c.session_id "
            "AND (n.started_at > t.started_at OR (n.started_at = t.started_at AND n.turn_id > t.turn_id))) "
            "ORDER BY c.created_at, c.turn_id",
            (history_key, owner or ""),
        ) as cur:
            return [row[0] for row in await cur.fetchall()]
