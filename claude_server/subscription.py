"""Following a turn: the one way to read its events, from memory while it runs here, from
the store when it ran (or runs on another replica).

Nothing here imports aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib

from claude_server.outcome import TurnStatus
from claude_server.store import Store, TurnRow
from claude_server.store.changes import SAFETY_S
from claude_server.store.events import MAX_SEQ as MAX_STORED_SEQ
from claude_server.turn import BATCH_BYTES, Event, Turn, stored_event

# Without notifications, how often a follower of a turn that runs on another replica looks
# for its new events (the recorder stores them within milliseconds of the CLI printing them;
# see bench/replicas.py).
ELSEWHERE_POLL_S = 0.05


class Subscription:
    """A follower of one turn from a seq on, live or finished: the one way to read a turn's
    events, from memory or from the store. Close it (or use ``async with``) when done: the
    last follower of a running turn that is not detached leaving cancels the turn.

    A turn that runs on another replica (``elsewhere``) is read from the shared event log
    only: every stored event after the position, in seq order (so no gap and no duplicate),
    read again when the database notifies a change of the turn (PostgreSQL, see
    ``store/changes.py``) or every ``ELSEWHERE_POLL_S`` without notifications (SQLite),
    until the turn's row says it ended and the log holds nothing after the position."""

    def __init__(
        self, store: Store, turn_id: str, after: int, *, live: Turn | None, last_seq: int = 0, elsewhere: bool = False
    ) -> None:
        self.store = store
        self.turn_id = turn_id
        self.turn = live
        self.position = max(0, after)
        self._last_seq = last_seq  # of a finished turn
        self._elsewhere = elsewhere and live is None
        self._closed = False
        if live is not None:
            live._follow()
            live.log.read_to(self, self.position)

    @classmethod
    def of_row(cls, store: Store, row: TurnRow, after: int, live: Turn | None) -> Subscription:
        """From seq ``after``: live while it runs here, from the log while it runs on another
        replica, else its record."""
        elsewhere = live is None and row.status in (TurnStatus.QUEUED, TurnStatus.RUNNING)
        return cls(store, row.turn_id, after, live=live, last_seq=row.last_seq, elsewhere=elsewhere)

    @property
    def queue_position(self) -> int | None:
        return self.turn.queue_position if self.turn is not None else None

    @property
    def finished(self) -> bool:
        if self._elsewhere:
            return False
        return self.turn is None or self.turn.finished

    async def _from_elsewhere(self) -> list[Event] | None:
        """The stored events after the position; ``None`` once the turn's row ended and none
        is left (its end is recorded after its last event, so reading once more after
        seeing the end misses nothing)."""
        batch = await self._from_store(MAX_STORED_SEQ)
        if batch:
            return batch
        row = await self.store.get_turn(self.turn_id)
        if row is not None and row.status in ("queued", "running"):
            return []
        batch = await self._from_store(MAX_STORED_SEQ)
        if batch:
            return batch
        self._elsewhere = False
        self._last_seq = self.position
        return None

    async def _read(self) -> list[Event] | None:
        """What can be read now without waiting: ``[]`` when nothing is, ``None`` at the end."""
        turn = self.turn
        if self._elsewhere:
            batch = await self._from_elsewhere()
            if batch:
                self.position = batch[-1].seq
            return batch
        if turn is not None:
            batch = turn.log.take(self.position)
            if batch is None:
                batch = await self._from_store(turn.log.durable)
        else:
            batch = await self._from_store(self._last_seq)
        if batch:
            self.position = batch[-1].seq
            if turn is not None:
                turn.log.read_to(self, self.position)
            return batch
        # Over, and nothing more to read: the end (a finished turn's log is all durable).
        return None if self.finished else []

    async def _from_store(self, upto: int) -> list[Event]:
        if self.position >= upto:
            return []
        rows = await self.store.events(self.turn_id, after=self.position, max_bytes=BATCH_BYTES)
        return [stored_event(e.seq, e.data, e.name) for e in rows if e.seq <= upto]

    async def available(self) -> list[Event]:
        """Every event that can be read now (for a JSON answer), without waiting."""
        out: list[Event] = []
        while batch := await self._read():
            out.extend(batch)
        return out

    async def next_batch(self, timeout_s: float | None = None) -> list[Event] | None:
        """The next events (at most about BATCH_BYTES of them); ``None`` once the turn is
        over and all its events were read; ``[]`` when ``timeout_s`` passed without any,
        or when the turn changed otherwise (its place in the queue)."""
        if self._elsewhere:
            return await self._next_from_elsewhere(timeout_s)
        # Armed before reading: a change while the read awaits the store is not missed.
        changed = self.turn.log.arm() if self.turn is not None else None
        batch = await self._read()
        if batch != [] or changed is None:
            return batch
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        except TimeoutError:
            return []
        return await self._read()

    async def _next_from_elsewhere(self, timeout_s: float | None) -> list[Event] | None:
        """Read; when nothing is there, wait for the turn's notification (or, without
        notifications, ``ELSEWHERE_POLL_S``) and read again, until ``timeout_s``."""
        loop = asyncio.get_running_loop()
        until = None if timeout_s is None else loop.time() + timeout_s
        changes = self.store.changes
        while True:
            # Watched before reading: a change committed while the read awaits wakes the wait.
            with changes.watch(self.turn_id) as changed:
                batch = await self._read()
                left = None if until is None else until - loop.time()
                if batch != [] or (left is not None and left <= 0):
                    return batch
                wait = SAFETY_S if changes.live else ELSEWHERE_POLL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait if left is None else min(wait, left))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.turn is not None:
                self.turn.log.read_to(self, None)
                self.turn._unfollow()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
