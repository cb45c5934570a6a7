"""The recorder: writes every turn's events to SQLite before any follower sees them.

Appending to a turn's log tells the recorder that the turn has events to write; a single
task writes whatever has gathered since its previous write in one transaction (a group
commit: under a flood, thousands of lines a write; on a quiet turn, one line a write,
within a millisecond or so) and then marks those events durable, which wakes the
followers. So a client never holds an event that a crash of the server could lose, nor a
seq that recovery could give to another event.

A write takes at most TURN_WRITE_BYTES of each turn, so a quiet turn's next line waits for
one bounded write, not behind the backlog of a turn that floods megabytes.
"""

from __future__ import annotations

import asyncio
import json
import logging

from claude_server.store import Store
from claude_server.store.events import CHUNK_BYTES, ChunkRow
from claude_server.turn import Event, Turn

log = logging.getLogger(__name__)

# The most of one turn's events one write takes.
TURN_WRITE_BYTES = 2 * 1024 * 1024


def chunk_rows(turn_id: str, events: list[Event]) -> list[ChunkRow]:
    """Rows of the events table for consecutive events of one turn."""
    rows: list[ChunkRow] = []
    start = 0
    while start < len(events):
        end, size = start, 0
        while end < len(events) and (end == start or size < CHUNK_BYTES):
            size += len(events[end].data)
            end += 1
        part = events[start:end]
        names = {str(e.seq): e.name for e in part if e.name}
        data = b"\n".join([e.data for e in part])
        rows.append((turn_id, part[0].seq, part[-1].seq, json.dumps(names) if names else None, data))
        start = end
    return rows


class Recorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[Turn, None] = {}  # turns with events not yet written, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")

    def has_new(self, turn: Turn) -> None:
        """The turn appended events; they are written with the next write."""
        self._waiting[turn] = None
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything appended so far is written (and marked durable)."""
        if self._task is None or self._task.done():
            await self._write()  # not running (a test, or after close): write here
            return
        while not self._idle.is_set():
            await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write()

    async def _write(self) -> None:
        while self._waiting:
            turns, self._waiting = list(self._waiting), {}
            taken: list[tuple[Turn, int]] = []
            rows: list[ChunkRow] = []
            for turn in turns:
                events = turn.log.undurable(TURN_WRITE_BYTES)
                if not events:
                    continue
                rows += chunk_rows(turn.id, events)
                taken.append((turn, events[-1].seq))
                if events[-1].seq < turn.log.last_seq:
                    self._waiting[turn] = None  # more of it next time
            if not rows:
                continue
            try:
                await self.store.insert_chunks(rows)
            except Exception:
                # Streaming goes on (followers are not held up for ever), but these events
                # will be missing from a replay.
                log.exception("could not record the events of %d turn(s)", len(taken))
            for turn, seq in taken:
                turn.log.mark_durable(seq)
        self._idle.set()

    async def close(self) -> None:
        """Write what is left and stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._write()
