"""Deleting and purging sessions: database rows, workspace, and the CLI's transcripts.

A session lives in three places: its rows (session, turns, events), its workspace directory
(shared with forks and with other sessions of a named workspace) and the CLI's transcripts
under ``<claude config dir>/projects/*/`` (``<id>.jsonl`` and a ``<id>/`` folder; the CLI
may copy a transcript into another project folder when a session is resumed elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from claude_server.broker import Broker
from claude_server.config import Settings
from claude_server.outcome import StopCode
from claude_server.store import SessionRow, Store, now_iso
from claude_server.workspaces import Workspaces

log = logging.getLogger(__name__)

# How often the server looks for sessions past their retention.
RETENTION_CHECK_S = 3600.0


def remove_transcripts(config_dir: Path, session_id: str) -> int:
    """Delete every transcript of a session under ``config_dir/projects``; returns how many."""
    if not session_id or "/" in session_id or session_id.startswith("."):
        return 0
    removed = 0
    for project in (config_dir / "projects").glob("*/"):
        for path in (project / f"{session_id}.jsonl", project / session_id):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


class Sessions:
    def __init__(self, settings: Settings, store: Store, workspaces: Workspaces, broker: Broker | None) -> None:
        self.settings = settings
        self.store = store
        self.workspaces = workspaces
        self.broker = broker  # None when run from the command line, outside the server

    async def delete(self, row: SessionRow) -> bool:
        """Stop its turns and its warm CLI, then remove rows, workspace (unless still used) and
        transcripts. False when another delete removed it first."""
        sid = row.session_id
        if self.broker is not None:
            with self.broker.deleting(sid):
                await self.broker.stop_session(sid, StopCode.SESSION_DELETED, "The session was deleted")
                deleted = await self._remove(row)
        else:
            deleted = await self._remove(row)
        if deleted:
            log.info("session %s deleted", sid)
        return deleted

    async def _remove(self, row: SessionRow) -> bool:
        if not await self.store.delete_session(row.session_id):
            return False
        workspace = Path(row.workspace_path)
        if not await self.store.workspace_users(row.workspace_path) and self.workspaces.inside_root(workspace):
            await asyncio.to_thread(self.workspaces.remove, workspace)
        await asyncio.to_thread(remove_transcripts, self.settings.claude_config_dir, row.session_id)
        return True

    async def expired(self) -> list[SessionRow]:
        """Sessions unused for longer than the retention period and not running."""
        days = self.settings.session_retention_days
        if days <= 0:
            return []
        before = now_iso(datetime.now(UTC) - timedelta(days=days))
        rows = await self.store.stale_sessions(before)
        if self.broker is not None:
            rows = [r for r in rows if self.broker.running_on(r.session_id) is None]
        return rows

    async def purge(self, *, dry_run: bool = False) -> list[SessionRow]:
        """Delete every expired session (or only list them); returns them."""
        rows = await self.expired()
        if not dry_run:
            for row in rows:
                await self.delete(row)
        return rows

    async def purge_periodically(self) -> None:
        while True:
            try:
                purged = await self.purge()
                if purged:
                    log.info("retention: purged %d session(s)", len(purged))
            except Exception:
                log.exception("retention purge failed")
            await asyncio.sleep(RETENTION_CHECK_S)
