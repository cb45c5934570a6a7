"""News of turns that run on other replicas: who waits for which turn, woken when the
database says the turn changed.

On PostgreSQL the writes that change a turn (a batch of its events, its end, its
interruption by another replica) send ``NOTIFY claude_server_turns, '<turn id>'`` inside
their transaction, so a listener hears of them once they are committed and readable. Each
server that shares its database listens on one connection of its own
(``Database.listen``) and hands every notification to ``TurnChanges.notified``, which wakes
the followers of that turn (``turn.Subscription``). A follower arms its wake-up before it
reads the log, so a change committed while it reads is not missed.

Notifications are a hint, never the record: a follower still reads the log and the turn's
row, and still looks again every ``SAFETY_S`` in case one was lost (the listening
connection broke and was made again). While nothing listens (SQLite, or the connection is
down) ``live`` is False and followers poll the log instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

CHANNEL = "claude_server_turns"
# A follower that heard nothing reads the log again after this long anyway.
SAFETY_S = 1.0


class TurnChanges:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self.live = False  # notifications are arriving
        self.received = 0

    @contextlib.contextmanager
    def watch(self, turn_id: str) -> Iterator[asyncio.Event]:
        """An event set when the turn changes, from now until the block ends."""
        event = asyncio.Event()
        self._waiting.setdefault(turn_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(turn_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[turn_id]

    def notified(self, turn_id: str) -> None:
        """A notification for ``turn_id`` arrived."""
        self.received += 1
        for event in self._waiting.get(turn_id, ()):
            event.set()

    def listening(self, live: bool) -> None:
        """The listening connection is up (True) or lost (False). Either way every follower
        reads again: what was notified while it was down was not heard."""
        self.live = live
        for waiting in self._waiting.values():
            for event in waiting:
                event.set()

    @property
    def watched(self) -> int:
        return len(self._waiting)
