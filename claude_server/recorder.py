"""The recorder: writes every turn's events to SQLite before any follower sees them.

Appending an event to a turn's log hands it to the recorder; a single task writes whatever
has gathered since its previous write in one transaction (a group commit: under a flood,
thousands of lines per write; on a quiet turn, one line a write, within a millisecond or
so) and then marks those events durable, which wakes the followers. So a client never
holds an event that a crash of the server could lose, nor a seq that recovery could give
to another event.
"""

from __future__ import annotations

import asyncio
import logging

from claude_server.store import Store
from claude_server.turn import Event, Turn

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[Turn, Event]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")

    def add(self, turn: Turn, event: Event) -> None:
        self._pending.append((turn, event))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything added so far is written (and marked durable)."""
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
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.store.insert_events([(turn.id, ev.seq, ev.name, ev.data) for turn, ev in batch])
            except Exception:
                # Streaming goes on (followers are not held up for ever), but these events
                # will be missing from a replay.
                log.exception("could not record %d events", len(batch))
            newest: dict[Turn, int] = {}
            for turn, ev in batch:
                newest[turn] = ev.seq
            for turn, seq in newest.items():
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
