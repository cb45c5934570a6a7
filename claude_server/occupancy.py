"""One turn per session at a time: which turn runs on which session, which conversation's
first turn is still creating its session, and which sessions are being deleted.
No aiohttp here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from claude_server.errors import Conflict, NotFound
from claude_server.turn import Turn


class Occupancy:
    def __init__(self) -> None:
        self._busy: dict[str, Turn] = {}  # session id -> the turn running on it
        # (owner, conversation id) -> the first turn of a conversation, until its session exists
        self._new_conversations: dict[tuple[str | None, str], Turn] = {}
        self._deleting: set[str] = set()

    @contextlib.contextmanager
    def deleting(self, session_id: str) -> Iterator[None]:
        """While a session is being deleted no turn may start on it."""
        self._deleting.add(session_id)
        try:
            yield
        finally:
            self._deleting.discard(session_id)

    def check(self, turn: Turn) -> None:
        """409 (or 404 while it is being deleted) when the turn's session is taken."""
        if turn.session is not None:
            session_id = turn.session.session_id
            if session_id in self._deleting:
                raise NotFound(f"Session {session_id} is being deleted", code="session_not_found")
            running = self._busy.get(session_id)
            if running is not None:
                raise Conflict(
                    f"A turn ({running.id}) is already running on session {session_id}; "
                    "wait for it to end or interrupt it",
                    code="session_busy",
                    turn_id=running.id,
                )
        elif turn.conversation_id is not None:
            first = self._new_conversations.get((turn.owner, turn.conversation_id))
            if first is not None:
                raise Conflict(
                    f"The first turn ({first.id}) of conversation {turn.conversation_id!r} is still starting "
                    "its session; wait for it to end or interrupt it",
                    code="session_busy",
                    turn_id=first.id,
                )

    def claim(self, turn: Turn) -> None:
        """The turn takes its session (or its conversation, until the session exists)."""
        if turn.session is not None:
            self._busy[turn.session.session_id] = turn
        elif turn.conversation_id is not None:
            self._new_conversations[(turn.owner, turn.conversation_id)] = turn

    def moved(self, turn: Turn, session_id: str) -> None:
        """The CLI reported the turn's session (new, forked, or a new id on resume)."""
        self._busy.setdefault(session_id, turn)
        if turn.conversation_id is not None:
            key = (turn.owner, turn.conversation_id)
            if self._new_conversations.get(key) is turn:
                del self._new_conversations[key]

    def release(self, turn: Turn) -> None:
        for sid in {turn.options.session_id, turn.session_id}:
            if sid is not None and self._busy.get(sid) is turn:
                del self._busy[sid]
        if turn.conversation_id is not None:
            key = (turn.owner, turn.conversation_id)
            if self._new_conversations.get(key) is turn:
                del self._new_conversations[key]

    def running_on(self, session_id: str) -> Turn | None:
        return self._busy.get(session_id)
