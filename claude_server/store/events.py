"""SQL for a turn's event log, stored in chunks of consecutive events.

One row holds consecutive events of one turn (one row per write batch, up to about
CHUNK_BYTES): a row per event cost SQLite several times the CPU and disk of the events
themselves when a turn floods thousands of lines per second (measured). Reads are bounded
by bytes, so a follower of a 150 MB turn holds one page of it, not the turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from claude_server.store.changes import CHANNEL
from claude_server.store.database import Database, Transaction
from claude_server.store.rows import StoredEvent

# Consecutive events of one turn share a row up to about this size.
CHUNK_BYTES = 1024 * 1024
# Chunk rows read per query when paging through a log.
READ_ROWS = 4
INSERT_CHUNK = (
    "INSERT INTO events (turn_id, first_seq, last_seq, names, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# Seqs are 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT): a seq beyond them is past any turn's end.
MAX_SEQ = 2**63 - 1

ChunkRow = tuple[str, int, int, str | None, bytes]  # turn_id, first_seq, last_seq, names, data


class Notifier:
    """Writes that tell other servers which turns they changed (``store/changes.py``)."""

    db: Database
    notifies: bool

    async def notify_in(self, tx: Transaction, turn_ids: Iterable[str]) -> None:
        """Tell other servers, once ``tx`` commits, that these turns changed."""
        if self.notifies and (sql := self.db.dialect.notify) is not None:
            for turn_id in turn_ids:
                await tx.execute(sql, (CHANNEL, turn_id))

    async def execute_notifying(self, sql: str, params: Sequence[Any], turn_id: str) -> None:
        """One write statement that changes ``turn_id``, notified with it."""
        if not self.notifies:
            await self.db.execute(sql, params)
            return
        async with self.db.transaction() as tx:
            await tx.execute(sql, params)
            await self.notify_in(tx, (turn_id,))


class EventQueries(Notifier):
    async def insert_chunks(self, rows: Sequence[ChunkRow]) -> None:
        """Rows of the events table, in one transaction (that notifies their turns' followers
        on other servers, see ``store/changes.py``)."""
        async with self.db.transaction() as tx:
            await tx.executemany(INSERT_CHUNK, rows)
            await self.notify_in(tx, dict.fromkeys(row[0] for row in rows))

    async def events(self, turn_id: str, *, after: int = 0, max_bytes: int = CHUNK_BYTES) -> list[StoredEvent]:
        """A turn's events after seq ``after``, about ``max_bytes`` of them (whole events,
        at least one when there is one)."""
        out: list[StoredEvent] = []
        size = 0
        after = min(max(after, 0), MAX_SEQ)
        while size < max_bytes:
            rows = await self.db.fetchall(
                "SELECT first_seq, last_seq, names, data FROM events WHERE turn_id = ? AND last_seq > ? "
                "ORDER BY first_seq LIMIT ?",
                (turn_id, after, READ_ROWS),
            )
            if not rows:
                break
            for row in rows:
                named = json.loads(row["names"]) if row["names"] else {}
                for seq, line in enumerate(bytes(row["data"]).split(b"\n"), start=row["first_seq"]):
                    if seq > after and size < max_bytes:
                        out.append(StoredEvent(seq, named.get(str(seq)), line))
                        size += len(line) or 1
                        after = seq
                if size >= max_bytes:
                    break
            if len(rows) < READ_ROWS:
                break
        return out
