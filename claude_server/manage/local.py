"""The database as a source: the server's own ``Store``, every key's sessions (whoever can
read the database file sees them all), nothing created where there was no database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from claude_server.auth import Authenticator
from claude_server.config import Settings
from claude_server.manage.source import LoggedEvent, ManageError, turn_summary
from claude_server.sessions import Sessions
from claude_server.stats import report
from claude_server.store import DatabaseUnavailable, SessionRow, Store
from claude_server.store.database import redacted
from claude_server.workspaces import Workspaces

# A session's turns are read this many at a time.
TURNS_PAGE = 500
# Turn statuses of a turn that a server is (or was, until it stopped) still running.
UNFINISHED = ("queued", "running")


class DatabaseSource:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.description = f"database {redacted(settings.db_path) if settings.db_is_url else settings.db_file}"

    @classmethod
    async def open(cls, settings: Settings) -> DatabaseSource:
        """The store of ``settings.database``; a ManageError when there is no such file (an
        empty one would be created, and then show nothing) or no such PostgreSQL database."""
        if settings.db_is_url:
            try:
                return cls(settings, await Store.open(settings.db_path))
            except DatabaseUnavailable as exc:
                raise ManageError(str(exc)) from None
        path = settings.db_file
        if not await asyncio.to_thread(path.is_file):
            raise ManageError(
                f"no database at {path}: give the server's --db or --data-dir (or CLAUDE_SERVER_DB / "
                "CLAUDE_SERVER_DATA_DIR), or --url to ask a running server"
            )
        try:
            store = await Store.open(path)
        except Exception as exc:  # sqlite3.DatabaseError, OSError: the file is not a database we can read
            raise ManageError(f"cannot open the database {path}: {exc}") from None
        return cls(settings, store)

    async def close(self) -> None:
        await self.store.close()

    async def health(self) -> dict[str, Any]:
        raise ManageError("status asks a running server: give --url (and --api-key if it has keys)", status=2)

    async def list_sessions(self, *, limit: int, query: str | None, every_key: bool) -> list[dict[str, Any]]:
        rows = await self.store.list_sessions(limit=limit, query=query, all_owners=True)
        return [row.summary() for row in rows]

    async def _session_row(self, session_id: str) -> SessionRow:
        row = await self.store.get_session(session_id)
        if row is None:
            raise ManageError(f"No session {session_id} (it may have been deleted)")
        return row

    async def _turns(self, session_id: str) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = []
        after = None
        while True:
            page = await self.store.session_turns(session_id, limit=TURNS_PAGE, after=after)
            turns += [t.public() for t in page]
            if len(page) < TURNS_PAGE:
                return turns
            after = (page[-1].started_at, page[-1].turn_id)

    async def session(self, session_id: str, *, every_key: bool) -> dict[str, Any]:
        row = await self._session_row(session_id)
        running = [t for t in await self._turns(session_id) if t["status"] in UNFINISHED]
        return {**row.detail(), "running_turn": running[-1] if running else None}

    async def session_turns(self, session_id: str, *, every_key: bool) -> list[dict[str, Any]]:
        await self._session_row(session_id)
        return [turn_summary(t) for t in await self._turns(session_id)]

    async def delete_session(self, session_id: str, *, every_key: bool) -> str | None:
        """As the server deletes it (rows, workspace unless still used, transcripts), but
        refused while a turn runs on it: only the server that runs the turn can stop it."""
        row = await self._session_row(session_id)
        running = [t for t in await self._turns(session_id) if t["status"] in UNFINISHED]
        if running:
            turn = running[-1]
            raise ManageError(
                f"session {session_id} has a {turn['status']} turn ({turn['turn_id']}): delete it through the "
                "server (--url), which stops the turn first"
            )
        workspaces = Workspaces(self.settings.workspace_root_path)
        sessions = Sessions(self.settings, self.store, workspaces, broker=None)
        if not await sessions.delete(row):
            raise ManageError(f"No session {session_id} (it may have been deleted)")
        if not workspaces.inside_root(Path(row.workspace_path)):
            # The server removes only workspaces under its root: the root given here is not its own.
            return (
                f"its workspace {row.workspace_path} was kept: it is not under the workspace root "
                f"{workspaces.root}; give the server's --workspace-root (or CLAUDE_SERVER_WORKSPACE_ROOT)"
            )
        return None

    async def turn(self, turn_id: str, *, every_key: bool) -> dict[str, Any]:
        row = await self.store.get_turn(turn_id)
        if row is None:
            raise ManageError(f"No turn {turn_id}")
        return row.public()

    async def events(self, turn_id: str, *, every_key: bool) -> AsyncIterator[LoggedEvent]:
        """The turn's events recorded so far (a running turn's log goes on in the server)."""
        await self.turn(turn_id, every_key=every_key)
        after = 0
        while True:
            page = await self.store.events(turn_id, after=after)
            if not page:
                return
            for ev in page:
                yield LoggedEvent(ev.seq, ev.name, ev.data)
            after = page[-1].seq

    async def stats(self, *, group_by: str, since: str | None) -> dict[str, Any]:
        return await report(
            self.store,
            since=since,
            until=None,
            group_by=group_by,
            owner=None,
            all_owners=True,
            operator_names=Authenticator(self.settings, self.store).operator_names(),
        )
