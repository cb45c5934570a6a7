"""One turn per session at a time: which turn runs on which session, which turns wait for
it (``if_busy: "queue"``, or ``"interrupt"`` at the front of the line), which
conversation's first turn is still creating its session, and which sessions are being
deleted. No aiohttp here."""

from __future__ import annotations

import asyncio
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
        # session id -> the turns waiting for it, in order, each with the future that tells
        # it the session is its own now (True) or that it left the line (False)
        self._waiting: dict[str, list[tuple[Turn, asyncio.Future[bool]]]] = {}

    @contextlib.contextmanager
    def deleting(self, session_id: str) -> Iterator[None]:
        """While a session is being deleted no turn may start on it."""
        self._deleting.add(session_id)
        try:
            yield
        finally:
            self._deleting.discard(session_id)

    def check(self, turn: Turn, if_busy: str = "reject") -> bool:
        """Whether the turn may take its session now; False when it is to wait for it
        (``if_busy`` queue or interrupt); 409 (or 404 while it is being deleted) when the
        session is taken and the turn may not wait."""
        if turn.session is not None:
            session_id = turn.session.session_id
            if session_id in self._deleting:
                raise NotFound(f"Session {session_id} is being deleted", code="session_not_found")
            running = self._busy.get(session_id)
            waiting = self._waiting.get(session_id)
            if running is not None or waiting:
                if if_busy != "reject":
                    return False
                running = running or waiting[0][0]  # type: ignore[index]
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
        return True

    def enqueue(self, turn: Turn, *, front: bool = False) -> asyncio.Future[bool]:
        """The turn waits for its session: the future is True once the session is its."""
        assert turn.session is not None
        line = self._waiting.setdefault(turn.session.session_id, [])
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        line.insert(0 if front else len(line), (turn, future))
        self._renumber(line)
        return future

    def leave(self, turn: Turn) -> None:
        """A waiting turn gives up its place (cancelled while it waited); nothing for a turn
        that does not wait."""
        if turn.session is None:
            return
        sid = turn.session.session_id
        line = self._waiting.get(sid)
        entry = next((e for e in line or () if e[0] is turn), None)
        if line is None or entry is None:
            return
        line.remove(entry)
        if not entry[1].done():
            entry[1].set_result(False)
        turn.set_position(None)
        self._renumber(line)
        if not line:
            del self._waiting[sid]

    def waiting_on(self, session_id: str) -> list[Turn]:
        return [turn for turn, _ in self._waiting.get(session_id, [])]

    def _renumber(self, line: list[tuple[Turn, asyncio.Future[bool]]]) -> None:
        for place, (turn, _) in enumerate(line, 1):
            turn.set_position(place)

    def _hand_over(self, session_id: str) -> None:
        """The session is free: it becomes the next waiting turn's."""
        line = self._waiting.get(session_id)
        while line:
            turn, future = line.pop(0)
            if future.done():
                continue
            self._busy[session_id] = turn
            turn.set_position(None)
            future.set_result(True)
            break
        if line:
            self._renumber(line)
        else:
            self._waiting.pop(session_id, None)

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
                self._hand_over(sid)
        if turn.conversation_id is not None:
            key = (turn.owner, turn.conversation_id)
            if self._new_conversations.get(key) is turn:
                del self._new_conversations[key]

    def running_on(self, session_id: str) -> Turn | None:
        return self._busy.get(session_id)
