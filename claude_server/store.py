"""Every SQL statement of the server: sessions and turns.

Timestamps are ISO 8601 strings in UTC with millisecond precision and a ``Z``, so they sort
as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    workspace_path: str
    created_at: str
    last_used_at: str
    forked_from: str | None

    def public(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "workspace_path": self.workspace_path,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "forked_from": self.forked_from,
        }


@dataclass(frozen=True)
class TurnRow:
    turn_id: str
    session_id: str | None
    resumed_from: str | None
    status: str
    prompt: str
    options: dict[str, Any]
    workspace_path: str
    started_at: str
    finished_at: str | None
    exit_code: int | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None
    error: dict[str, Any] | None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


class Store:
    """Typed access to the tables, over the server's single connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    # ---- sessions ----------------------------------------------------------------------
    async def insert_session(self, session_id: str, workspace_path: str, forked_from: str | None = None) -> None:
        """Record a session the CLI reported; a session already known is only touched."""
        when = now_iso()
        await self.conn.execute(
            "INSERT INTO sessions (session_id, workspace_path, created_at, last_used_at, forked_from) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET last_used_at = excluded.last_used_at",
            (session_id, workspace_path, when, when, forked_from),
        )

    async def get_session(self, session_id: str) -> SessionRow | None:
        async with self.conn.execute(
            "SELECT session_id, workspace_path, created_at, last_used_at, forked_from FROM sessions "
            "WHERE session_id = ?",
            (session_id,),
        ) as cur:
            row = await cur.fetchone()
        return SessionRow(*row) if row else None

    async def touch_session(self, session_id: str) -> None:
        await self.conn.execute("UPDATE sessions SET last_used_at = ? WHERE session_id = ?", (now_iso(), session_id))

    # ---- turns -------------------------------------------------------------------------
    async def insert_turn(
        self,
        turn_id: str,
        *,
        resumed_from: str | None,
        prompt: str,
        options: dict[str, Any],
        workspace_path: str,
        status: str = "running",
    ) -> None:
        await self.conn.execute(
            "INSERT INTO turns (turn_id, session_id, resumed_from, status, prompt, options, workspace_path, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                turn_id,
                resumed_from,
                resumed_from,
                status,
                prompt,
                json.dumps(options),
                workspace_path,
                now_iso(),
            ),
        )

    async def set_turn_session(self, turn_id: str, session_id: str) -> None:
        await self.conn.execute("UPDATE turns SET session_id = ? WHERE turn_id = ?", (session_id, turn_id))

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
    ) -> None:
        await self.conn.execute(
            "UPDATE turns SET status = ?, finished_at = ?, exit_code = ?, cost_usd = ?, usage = ?, num_turns = ?, "
            "error = ? WHERE turn_id = ?",
            (status, now_iso(), exit_code, cost_usd, _dumps(usage), num_turns, _dumps(error), turn_id),
        )

    async def get_turn(self, turn_id: str) -> TurnRow | None:
        async with self.conn.execute(
            "SELECT turn_id, session_id, resumed_from, status, prompt, options, workspace_path, started_at, "
            "finished_at, exit_code, cost_usd, usage, num_turns, error FROM turns WHERE turn_id = ?",
            (turn_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        values = list(row)
        for i in (5, 11, 13):
            values[i] = _loads(values[i])
        return TurnRow(*values)
