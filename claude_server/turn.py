"""A turn and its event log (its followers read it through ``subscription.Subscription``).

A turn's log is seq-numbered from 1: every line the CLI printed, byte for byte, and the
server's own ``error`` event. Events reach followers only once they are in SQLite (the
recorder marks them durable), so no client ever holds an event, or a seq, that a restart
could lose. The newest events stay in memory (at most LOG_MEMORY_BYTES of the durable
ones); a follower further behind, or following a finished turn, reads from the store, so
what one slow follower pins is bounded by what it reads at once.

Nothing here imports aiohttp.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from claude_server.claude import diagnosis
from claude_server.claude import events as cli_events
from claude_server.claude.command import TurnOptions
from claude_server.outcome import STOP_STATUS, StopCode, TurnError, TurnResult, TurnStatus
from claude_server.principal import OPEN, Principal
from claude_server.store import SessionRow

if TYPE_CHECKING:
    from claude_server.admission import Ticket
    from claude_server.claude.live import LiveCli
    from claude_server.provider_file import ProviderConfig
    from claude_server.turn_run import TurnRun

# A follower takes at most about this much of the log at once (one write to its client,
# one read from the store).
BATCH_BYTES = 1024 * 1024
# A running turn keeps this much of its durable log in memory for its followers; older
# events are read back from the store.
LOG_MEMORY_BYTES = 16 * 1024 * 1024


class Event(NamedTuple):
    """One entry of a turn's log: a CLI line byte for byte, or an event of the server's own.
    (A tuple: a turn may log tens of thousands of them per second.)"""

    seq: int
    data: bytes
    kind: str  # "system/init", "assistant", "result", ... or the server event's name
    name: str | None = None  # SSE event name for server events ("error"); None for CLI lines


_new_event = tuple.__new__


def stored_event(seq: int, data: bytes, name: str | None) -> Event:
    """An event read back from the store. Its kind is not worked out again (a replay of a
    flood would parse every line): ``kind_of`` does it for the readers that need it."""
    return Event(seq, data, name or "", name)


def kind_of(event: Event) -> str:
    """The event's kind, also for one read back from the store."""
    if event.kind:
        return event.kind
    classified = cli_events.classify(event.data)
    return classified[0] if classified else "unknown"


class TurnLog:
    """The turn's events: appended by the broker, marked durable by the recorder, read by
    followers up to the durable mark."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._base = 0  # events before this seq (exclusive) have left memory
        # The log's size in bytes up to and including each event in memory, and up to the
        # first of them: a batch of a flood is found by bisection, not by a loop per line.
        self._ends: list[int] = []
        self._dropped_bytes = 0
        self.durable = 0  # the highest seq the store holds
        self.closed = False  # finished and dropped from memory: everything is in the store
        self._changed = asyncio.Event()
        self._armed = False
        # Where each live reader is (the seq it has read up to), and an event for a writer
        # that waits for the slowest of them to make room.
        self.readers: dict[object, int] = {}
        self._progress: asyncio.Event | None = None

    @property
    def last_seq(self) -> int:
        return self._base + len(self._events)

    @property
    def _bytes(self) -> int:
        return (self._ends[-1] if self._ends else self._dropped_bytes) - self._dropped_bytes

    def append(self, data: bytes, kind: str, name: str | None = None) -> Event:
        # tuple.__new__: a NamedTuple's own constructor costs more, and floods call this per line.
        event = _new_event(Event, (self._base + len(self._events) + 1, data, kind, name))
        self._events.append(event)
        self._ends.append((self._ends[-1] if self._ends else self._dropped_bytes) + len(data))
        return event

    def _span(self, start: int, stop: int, max_bytes: int) -> int:
        """The index after the events from ``start`` that make about ``max_bytes`` (one at
        least, none past ``stop``)."""
        if start >= stop:
            return start
        before = self._ends[start - 1] if start else self._dropped_bytes
        return min(stop, bisect.bisect_left(self._ends, before + max_bytes, start, stop) + 1)

    def undurable(self, max_bytes: int) -> list[Event]:
        """The events not yet in the store, oldest first, about ``max_bytes`` of them (at
        least one when there is one)."""
        start = self.durable - self._base
        return self._events[start : self._span(start, len(self._events), max_bytes)]

    def mark_durable(self, seq: int) -> None:
        if seq > self.durable:
            self.durable = seq
            self._trim()
            self.wake()
            if self._progress is not None:
                self._progress.set()

    def _trim(self) -> None:
        if self._bytes <= LOG_MEMORY_BYTES:
            return
        # Down to half of it, durable events only.
        keep_from = self._dropped_bytes + self._bytes - LOG_MEMORY_BYTES // 2
        drop = min(bisect.bisect_left(self._ends, keep_from) + 1, self.durable - self._base)
        if drop <= 0:
            return
        self._dropped_bytes = self._ends[drop - 1]
        del self._events[:drop]
        del self._ends[:drop]
        self._base += drop

    def lag_bytes(self) -> int:
        """How far the slowest reader still in the memory window, or the store, is behind the
        log's end (events not yet stored cannot leave memory)."""
        behind = [p for p in self.readers.values() if p >= self._base]
        behind.append(max(self.durable, self._base))
        if not self._ends:
            return 0
        start = min(behind) - self._base
        before = self._ends[start - 1] if start else self._dropped_bytes
        return self._ends[-1] - before

    def read_to(self, reader: object, seq: int | None) -> None:
        """A reader has read up to ``seq`` (None: it is gone)."""
        if seq is None:
            self.readers.pop(reader, None)
        else:
            self.readers[reader] = seq
        if self._progress is not None:
            self._progress.set()

    async def room(self, max_wait_s: float) -> None:
        """Wait (at most ``max_wait_s``) while the slowest reader, or the store, is more than
        half the memory window behind, so that a flood waits for its readers as a pipe's
        writer would, instead of pushing them out of memory to read it back from the store
        (or piling up in memory while SQLite catches up). A reader that stalls holds the
        writer back for no longer than that, per batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while self.lag_bytes() > LOG_MEMORY_BYTES // 2 and loop.time() < deadline:
            self._progress = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._progress.wait()
            except TimeoutError:
                break
            finally:
                self._progress = None

    def close(self) -> None:
        """The turn is over and its whole log is in the store: free the memory."""
        self.closed = True
        self._base = self.last_seq
        self._events = []
        self._dropped_bytes = self._ends[-1] if self._ends else self._dropped_bytes
        self._ends = []
        self.wake()

    def wake(self) -> None:
        # Only when someone waits: a flood appends thousands of lines between two wake-ups.
        if self._armed:
            self._armed = False
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def arm(self) -> asyncio.Event:
        """An event set at the next change of the log (or of the turn)."""
        self._armed = True
        return self._changed

    def take(self, after: int, max_bytes: int = BATCH_BYTES) -> list[Event] | None:
        """Durable events after seq ``after`` from memory (at most about ``max_bytes``);
        None when they have left memory (read them from the store)."""
        if after < self._base or self.closed:
            return None
        start = after - self._base
        return self._events[start : self._span(start, min(len(self._events), self.durable - self._base), max_bytes)]


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the server is ending a turn (the first reason wins)."""

    code: StopCode
    message: str

    @property
    def status(self) -> TurnStatus:
        return STOP_STATUS.get(self.code, TurnStatus.FAILED)


class Turn:
    """A running (or finished) turn: what it runs, where, for whom, and its log."""

    def __init__(
        self,
        options: TurnOptions,
        workspace: Path,
        *,
        create_workspace: bool,
        detach: bool,
        on_orphaned: Callable[[Turn], None],
        session: SessionRow | None = None,
        conversation_id: str | None = None,
        principal: Principal = OPEN,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.id = str(uuid.uuid4())
        self.options = options
        self.workspace = workspace
        self.create_workspace = create_workspace  # the workspace is the turn's to create
        self.created_workspace = False  # ... and it did
        self.detach = detach
        self.session = session  # the resumed session's row, if any
        self.conversation_id = conversation_id
        self.principal = principal
        self.session_id: str | None = options.session_id
        self.status = TurnStatus.QUEUED
        self.queue_position: int | None = None
        self.model: str | None = options.model
        self.log = TurnLog()
        self.result: TurnResult | None = None
        self.error: TurnError | None = None
        self.exit_code: int | None = None
        self.stop_reason: Stop | None = None
        self.started_at = loop.time()
        self.last_activity = self.started_at
        self.result_at: float | None = None
        self.first_event_at: float | None = None
        self.process: LiveCli | None = None
        self.run: TurnRun | None = None  # while its CLI runs it
        self.warm = False  # it runs in a CLI that served a turn before
        self.claimed: set[str] = set()  # the sessions it holds across replicas (see replicas)
        self.rate_taken = False  # it counts against its key's rate limit (see gate)
        self.spawn_retries = 0  # starts left for a CLI that fails before it prints anything
        self.provider: ProviderConfig | None = None  # what it runs against (with a providers file)
        self.provider_moved_from: str | None = None  # the provider its session left for this one
        self.provider_failed = False  # a failure of the provider was counted for it already
        self.ticket: Ticket[Turn] | None = None
        self.recorded = False  # its row exists
        self._on_orphaned = on_orphaned
        self._followers = 0
        self._done = asyncio.Event()

    @property
    def owner(self) -> str | None:
        return self.principal.key_id

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    @property
    def followers(self) -> int:
        return self._followers

    def finish(self, status: TurnStatus) -> None:
        self.status = status
        self._done.set()
        self.log.wake()

    async def wait(self) -> None:
        await self._done.wait()

    def stop(self, code: StopCode, message: str) -> bool:
        """Record why the turn is being ended; False when it already has a reason or is over."""
        if self.stop_reason is None and not self.finished:
            self.stop_reason = Stop(code, message)
            return True
        return False

    def set_position(self, position: int | None) -> None:
        """Its place in the admission queue changed (None: it left the queue)."""
        self.queue_position = position
        self.log.wake()

    def outcome(
        self, stderr_tail: str | None, start_error: BaseException | None, queue_timeout_s: float
    ) -> tuple[TurnStatus, TurnError | None]:
        """How the turn ended: its status and, unless it succeeded, its error. ``stderr_tail``
        is None for a turn whose CLI never ran."""
        stop = self.stop_reason
        if stop is not None:
            retry = max(1, int(queue_timeout_s)) if stop.code is StopCode.QUEUE_TIMEOUT else None
            status, error = stop.status, TurnError(stop.code, stop.message, retry_after=retry)
        elif start_error is not None:
            code = StopCode.CLI_NOT_FOUND if isinstance(start_error, OSError) else StopCode.START_FAILED
            return TurnStatus.FAILED, TurnError(code, f"Could not start Claude Code: {start_error}")
        elif self.result is not None:
            failed = diagnosis.result_failure(self.result)
            return (TurnStatus.FAILED if self.result.is_error else TurnStatus.SUCCEEDED), failed
        else:
            status, error = TurnStatus.FAILED, diagnosis.exit_failure(stderr_tail or "", self.exit_code)
        if stderr_tail is not None:
            error = dataclasses.replace(error, exit_code=self.exit_code, stderr_tail=stderr_tail)
        return status, error

    def release_ticket(self) -> None:
        if self.ticket is not None:
            self.ticket.release()

    def _follow(self) -> None:
        self._followers += 1

    def _unfollow(self) -> None:
        self._followers -= 1
        if self._followers == 0 and not self.detach and not self.finished:
            self._on_orphaned(self)

    def public(self) -> dict[str, Any]:
        return {
            "turn_id": self.id,
            "session_id": self.session_id,
            "status": str(self.status),
            "queue_position": self.queue_position,
            "detach": self.detach,
            "last_seq": self.last_seq,
            "followers": self._followers,
            "process_id": self.process.marker if self.process is not None else None,
            "warm": self.warm,
            "pending_requests": len(self.run.prompts.pending) if self.run is not None else 0,
        }
