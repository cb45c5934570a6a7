"""Where a management command reads: the server's database (``claude_server.store``) or a
running server (its HTTP API, with its keys and ownership rules). Both answer with the
API's JSON shapes, so that a table or ``--json`` reads the same either way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


class ManageError(Exception):
    """A command cannot do what it was asked: one line for people, and the exit status
    (1: it failed; 2: it was asked wrongly)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Source(Protocol):
    """The sessions, turns, statistics and health a command shows."""

    description: str  # "database /path/sessions.db" or "server http://127.0.0.1:3000"

    async def health(self) -> dict[str, Any]: ...

    async def list_sessions(self, *, limit: int, query: str | None, every_key: bool) -> list[dict[str, Any]]: ...

    async def session(self, session_id: str, *, every_key: bool) -> dict[str, Any]: ...

    async def session_turns(self, session_id: str, *, every_key: bool) -> list[dict[str, Any]]: ...

    async def delete_session(self, session_id: str, *, every_key: bool) -> str | None:
        """Delete it; a note for people on what was kept, or None."""
        ...

    async def turn(self, turn_id: str, *, every_key: bool) -> dict[str, Any]: ...

    def events(self, turn_id: str, *, every_key: bool) -> AsyncIterator[LoggedEvent]: ...

    async def stats(self, *, group_by: str, since: str | None) -> dict[str, Any]: ...

    async def close(self) -> None: ...


# The fields of a turn in a session's list of turns (both sources).
TURN_SUMMARY_FIELDS = ("turn_id", "status", "started_at", "finished_at", "cost_usd", "error", "prompt")


def turn_summary(turn: dict[str, Any]) -> dict[str, Any]:
    return {name: turn.get(name) for name in TURN_SUMMARY_FIELDS}


@dataclass(frozen=True)
class LoggedEvent:
    """One event of a turn's log: its seq, its SSE name (``error``; None for a CLI line) and
    its data as stored (a CLI line byte for byte)."""

    seq: int | None
    name: str | None
    data: bytes

    def public(self) -> dict[str, Any]:
        """For ``--json``: the data parsed when it is JSON (a CLI line always is)."""
        raw = self.data.decode(errors="replace")
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        return {"seq": self.seq, "event": self.name, "data": parsed}
