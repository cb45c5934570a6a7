"""SQL for CLI processes: which ones a server started, and which of them it ended."""

from __future__ import annotations

from claude_server.store.database import Database
from claude_server.store.rows import now_iso


class ProcessQueries:
    db: Database

    async def insert_process(self, marker: str, server_id: str, session_id: str | None) -> None:
        """Recorded before the process starts, so that nothing can run unrecorded."""
        await self.db.execute(
            "INSERT INTO processes (marker, server_id, session_id, started_at) VALUES (?, ?, ?, ?)",
            (marker, server_id, session_id, now_iso()),
        )

    async def set_process_pid(self, marker: str, pid: int) -> None:
        await self.db.execute("UPDATE processes SET pid = ? WHERE marker = ?", (pid, marker))

    async def set_turn_process(self, turn_id: str, marker: str) -> None:
        await self.db.execute("UPDATE turns SET process_id = ? WHERE turn_id = ?", (marker, turn_id))

    async def end_process(self, marker: str) -> None:
        await self.db.execute(
            "UPDATE processes SET ended_at = ? WHERE marker = ? AND ended_at IS NULL", (now_iso(), marker)
        )

    async def unended_processes(self, server_id: str) -> list[str]:
        """The markers of processes that servers other than ``server_id`` did not end."""
        rows = await self.db.fetchall(
            "SELECT marker FROM processes WHERE ended_at IS NULL AND server_id != ?", (server_id,)
        )
        return [row["marker"] for row in rows]

    async def end_processes(self, markers: list[str]) -> None:
        now = now_iso()
        async with self.db.transaction() as tx:
            for marker in markers:
                await tx.execute("UPDATE processes SET ended_at = ? WHERE marker = ?", (now, marker))
