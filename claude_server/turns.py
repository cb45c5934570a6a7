"""The broker: owns every running turn.

A turn is a CLI run that belongs to the server, not to the HTTP request that asked for it.
The broker starts it (one turn per session at a time), reads the CLI's lines into the turn's
seq-numbered event log, records the session when the CLI reports ``init`` and the outcome
when it exits, enforces the timeouts, and ends the turn's whole process tree when it is
cancelled. Any number of subscribers follow a turn from any seq; when the last one leaves a
turn that was not started with ``detach``, the turn is cancelled.

Nothing here imports aiohttp: routes render the events, the broker only produces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from claude_server.admission import Admission, RateLimiter, Waiter
from claude_server.claude import events
from claude_server.claude.command import TurnOptions, build_argv, build_env
from claude_server.claude.process import CliInfo, CliProcess, LineTooLong, kill_marked, probe_cli
from claude_server.config import Settings
from claude_server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from claude_server.metrics import Metrics
from claude_server.principal import OPEN, Principal
from claude_server.store import ConversationTaken, SessionRow, Store, now_iso
from claude_server.workspaces import WorkspaceError, Workspaces

log = logging.getLogger(__name__)

# After the CLI printed its result it still writes its transcript; it gets this long to
# exit by itself before it is ended (reported elsewhere: a CLI that never exits).
POST_RESULT_GRACE_S = 10.0
# The watchdog looks at the deadlines at least this often.
WATCHDOG_TICK_S = 1.0
# A subscriber takes at most this much of the log at once (one write to the client).
BATCH_BYTES = 1024 * 1024
# Events reach SQLite in batches: at most this long after they were streamed.
FLUSH_INTERVAL_S = 0.05

INSTALL_HINT = (
    "Install it with `npm install -g @anthropic-ai/claude-code` (or `make setup` in the "
    "claude-server repository), or point --claude-bin / CLAUDE_SERVER_CLAUDE_BIN at it."
)


class Status:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Event(NamedTuple):
    """One entry of a turn's log: a CLI line byte for byte, or an event of the server's own.
    (A tuple: a turn may log tens of thousands of them per second.)"""

    seq: int
    data: bytes
    kind: str  # "system/init", "assistant", "result", ... or the server event's name
    name: str | None = None  # SSE event name for server events ("error"); None for CLI lines


@dataclass(frozen=True, slots=True)
class StopReason:
    code: str
    message: str
    status: str


class Turn:
    """A running (or finished) turn and its event log."""

    def __init__(
        self,
        options: TurnOptions,
        workspace: Path,
        *,
        created_workspace: bool,
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
        self.created_workspace = created_workspace
        self.detach = detach
        self.session = session  # the resumed session's row, if any
        self.conversation_id = conversation_id
        self.principal = principal
        self.session_id: str | None = options.session_id
        self.status = Status.QUEUED
        self.queue_position: int | None = None
        self.model: str | None = options.model
        self.events: list[Event] = []
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self.stop_reason: StopReason | None = None
        self.started_at = loop.time()
        self.last_activity = self.started_at
        self.result_at: float | None = None
        self.first_event_at: float | None = None
        self.process: CliProcess | None = None
        self.waiter: Waiter[Turn] | None = None  # its place in the queue, while queued
        self.holds_slot = False  # one of the admission slots is this turn's
        self._on_orphaned = on_orphaned
        self._followers = 0
        self._changed = asyncio.Event()
        self._armed = False  # a subscriber waits on _changed
        self._done = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def append(self, data: bytes, kind: str, name: str | None = None) -> Event:
        event = Event(len(self.events) + 1, data, kind, name)
        self.events.append(event)
        self._wake()
        return event

    def _wake(self) -> None:
        # Only when someone waits: a flood appends thousands of lines between two wake-ups.
        if self._armed:
            self._armed = False
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def finish(self, status: str) -> None:
        self.status = status
        self._done.set()
        self._wake()

    async def wait(self) -> None:
        await self._done.wait()

    def stop(self, code: str, message: str, status: str) -> bool:
        """Record why the turn is being ended (the first reason wins)."""
        if self.stop_reason is None and not self.finished:
            self.stop_reason = StopReason(code, message, status)
            return True
        return False

    def subscribe(self, after_seq: int = 0) -> Subscription:
        return Subscription(self, after_seq)

    @property
    def owner(self) -> str | None:
        return self.principal.key_id

    def set_position(self, position: int | None) -> None:
        """Its place in the admission queue changed (None: it left the queue)."""
        self.queue_position = position
        self._wake()

    def public(self) -> dict[str, Any]:
        return {
            "turn_id": self.id,
            "session_id": self.session_id,
            "status": self.status,
            "queue_position": self.queue_position,
            "detach": self.detach,
            "last_seq": self.last_seq,
            "followers": self._followers,
        }


class Subscription:
    """A follower of one turn, from a seq on. Close it (or use ``async with``) when done:
    the last follower of a turn that is not detached leaving cancels the turn."""

    def __init__(self, turn: Turn, after_seq: int = 0) -> None:
        self.turn = turn
        self._index = max(0, min(after_seq, turn.last_seq))
        self._closed = False
        turn._followers += 1

    def _take(self) -> list[Event] | None:
        log_ = self.turn.events
        if self._index >= len(log_):
            return None if self.turn.finished else []
        end = self._index
        size = 0
        while end < len(log_) and size < BATCH_BYTES:
            size += len(log_[end].data)
            end += 1
        batch = log_[self._index : end]
        self._index = end
        return batch

    async def next_batch(self, timeout_s: float | None = None) -> list[Event] | None:
        """The next events in the log (at most about BATCH_BYTES of them); ``None`` once the
        turn has finished and all its events have been taken; ``[]`` when ``timeout_s``
        passed without any, or when the turn changed otherwise (its queue position)."""
        batch = self._take()
        if batch != []:
            return batch
        changed = self.turn._changed
        self.turn._armed = True
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        except TimeoutError:
            return []
        return self._take()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        turn = self.turn
        turn._followers -= 1
        if turn._followers == 0 and not turn.detach and not turn.finished:
            turn._on_orphaned(turn)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventRecorder:
    """Writes streamed events to SQLite in batches, off the streaming path: appending to the
    batch is all a turn does; a background task writes it every FLUSH_INTERVAL_S."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, int, str | None, bytes]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def add(self, turn_id: str, event: Event) -> None:
        self._pending.append((turn_id, event.seq, event.name, event.data))
        self._wake.set()

    async def flush(self) -> None:
        """Write everything added so far."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self.store.insert_events(batch)
                except Exception:
                    log.exception("could not record %d events", len(batch))

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()


def check_policy(settings: Settings, options: TurnOptions) -> None:
    """The operator's permission policy; 403 naming the setting that refuses the request."""
    bypass = options.skip_permissions or options.permission_mode == "bypassPermissions"
    if bypass and not settings.allow_skip_permissions:
        what = "dangerously-skip-permissions" if options.skip_permissions else "permission_mode bypassPermissions"
        raise Forbidden(
            f"{what} is not allowed on this server (CLAUDE_SERVER_ALLOW_SKIP_PERMISSIONS=false)",
            code="policy_refused",
        )
    mode = options.permission_mode
    if mode is not None and settings.permission_modes and mode not in settings.permission_modes:
        raise Forbidden(
            f"permission_mode {mode} is not allowed on this server "
            f"(CLAUDE_SERVER_PERMISSION_MODES={','.join(settings.permission_modes)})",
            code="policy_refused",
        )


def seconds_to_utc_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class Broker:
    """Starts turns (admitting them, or queueing them for a slot), keeps them, ends them."""

    def __init__(
        self, settings: Settings, store: Store, workspaces: Workspaces, cli: CliInfo, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.workspaces = workspaces
        self.cli = cli
        self.metrics = metrics or Metrics()
        self.recorder = EventRecorder(store)
        self.admission: Admission[Turn] = Admission(settings.max_concurrent, settings.max_queue, Turn.set_position)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_min)
        self.turns: dict[str, Turn] = {}  # not yet finished
        self._busy: dict[str, Turn] = {}  # session id -> the turn running on it
        # (owner, conversation id) -> the first turn of a conversation, until its session exists
        self._new_conversations: dict[tuple[str | None, str], Turn] = {}
        self._deleting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder_task: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        """Clean up after a previous process, then start recording events."""
        await self.recover()
        self._recorder_task = asyncio.create_task(self.recorder.run(), name="event-recorder")

    async def recover(self) -> None:
        """Turns a previous server process left running are marked ``interrupted`` (their
        followers will read an ``interrupted`` error at the end of the log), and every process
        still carrying one of their markers is killed."""
        error = {"code": "interrupted", "message": "The server stopped while this turn was running"}
        rows = await self.store.interrupt_unfinished(error)
        if not rows:
            return
        killed = await asyncio.to_thread(kill_marked, {row.turn_id for row in rows})
        log.warning(
            "marked %d turn(s) of a previous run interrupted; killed %d leftover process(es)", len(rows), killed
        )
        for row in rows:
            workspace = Path(row.workspace_path)
            orphan = row.session_id is None and self.workspaces.is_session_dir(workspace)
            if orphan and not await self.store.workspace_users(row.workspace_path):
                await asyncio.to_thread(self.workspaces.remove, workspace)

    # ---- starting ----------------------------------------------------------------------
    @contextlib.contextmanager
    def deleting(self, session_id: str) -> Iterator[None]:
        """While a session is being deleted no turn may start on it."""
        self._deleting.add(session_id)
        try:
            yield
        finally:
            self._deleting.discard(session_id)

    def _check_idle(self, session_id: str) -> None:
        if session_id in self._deleting:
            raise NotFound(f"Session {session_id} is being deleted", code="session_not_found")
        running = self._busy.get(session_id)
        if running is not None:
            raise Conflict(
                f"A turn ({running.id}) is already running on session {session_id}; wait for it to end or interrupt it",
                code="session_busy",
                turn_id=running.id,
            )

    def _check_conversation_idle(self, key: tuple[str | None, str]) -> None:
        running = self._new_conversations.get(key)
        if running is not None:
            raise Conflict(
                f"The first turn ({running.id}) of conversation {key[1]!r} is still starting its session; "
                "wait for it to end or interrupt it",
                code="session_busy",
                turn_id=running.id,
            )

    async def _resolve(
        self, options: TurnOptions, conversation_id: str | None, principal: Principal
    ) -> tuple[TurnOptions, SessionRow | None]:
        """The session a request resumes (by session_id or conversation_id), or None for a new
        one. A session of another key is "not found": nothing else may reveal it exists."""
        owner = principal.key_id
        if conversation_id is not None:
            bound = await self.store.find_conversation(conversation_id, owner)
            if bound is not None:
                if options.session_id and options.session_id != bound.session_id:
                    raise BadRequest(
                        f"conversation_id {conversation_id!r} belongs to session {bound.session_id}, "
                        f"not {options.session_id}",
                        code="invalid_field",
                        field="conversation_id",
                    )
                options = replace(options, session_id=bound.session_id)
        sid = options.session_id
        if not sid:
            if options.fork_session:
                raise BadRequest(
                    f"conversation_id {conversation_id!r} has no session to fork yet",
                    code="invalid_field",
                    field="fork_session",
                )
            return options, None
        for name in ("system_prompt", "append_system_prompt", "agent"):
            if getattr(options, name) is not None:
                raise BadRequest(
                    f"{name} cannot be given when resuming a session: the system prompt (an agent's "
                    "included) is fixed when a session is created and Claude Code ignores it on a resumed turn",
                    code="invalid_field",
                    field=name,
                )
        row = await self.store.get_session(sid)
        if row is None or not principal.can_see(row.owner):
            raise NotFound(f"No session {sid} (it may have been deleted)", code="session_not_found")
        if conversation_id is not None and row.conversation_id not in (None, conversation_id):
            raise BadRequest(
                f"Session {sid} belongs to conversation_id {row.conversation_id!r}, not {conversation_id!r}",
                code="invalid_field",
                field="conversation_id",
            )
        return options, row

    async def _check_budget(self, principal: Principal) -> None:
        budget = principal.daily_budget_usd
        if not budget:
            return
        today = now_iso(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
        spent = await self.store.spent_since(principal.key_id, today)
        if spent >= budget:
            raise TooManyRequests(
                f"Key {principal.name} reached its daily budget of ${budget:g} (spent ${spent:.4f} today, "
                "UTC); it resets at 00:00 UTC",
                retry_after=seconds_to_utc_midnight(),
                code="budget_exceeded",
            )

    async def start(
        self,
        options: TurnOptions,
        *,
        detach: bool = False,
        conversation_id: str | None = None,
        workspace_name: str | None = None,
        principal: Principal = OPEN,
    ) -> Subscription:
        """Start a turn (or queue it for a slot) and return the caller's subscription to it.

        ``conversation_id`` resumes the session bound to it, or binds the new session;
        ``workspace_name`` puts a new session in a shared, named workspace. Raises
        ``ApiError`` for what the client should hear before any stream, checked in this
        order: server closing or CLI missing (503), policy (403), bad combination (400),
        unknown or foreign session (404), busy session (409), budget, rate and queue (429)."""
        if self._closing:
            raise ServiceUnavailable("The server is shutting down", code="shutting_down")
        if not self.cli.found:
            # Installed since the server started? Look again before refusing.
            self.cli = await probe_cli(self.settings.claude_bin, build_env(self.settings.environ, "probe"))
        if not self.cli.found:
            raise ServiceUnavailable(
                f"Claude Code CLI is not available: {self.cli.error}. {INSTALL_HINT}", code="cli_not_found"
            )
        check_policy(self.settings, options)
        options, session = await self._resolve(options, conversation_id, principal)
        await self._check_budget(principal)
        # Checked after every await: another request may have started a turn meanwhile.
        owner = principal.key_id
        if session is not None:
            self._check_idle(session.session_id)
            if workspace_name is not None and workspace_name != session.workspace_name:
                raise BadRequest(
                    f"Session {session.session_id} runs in workspace {session.workspace_name!r}; "
                    "workspace only chooses where a new session runs",
                    code="invalid_field",
                    field="workspace",
                )
        elif conversation_id is not None:
            self._check_conversation_idle((owner, conversation_id))
        wait = self.rate_limiter.take(owner or "")
        if wait:
            raise TooManyRequests(
                f"Key {principal.name} may start {self.settings.rate_limit_per_min} turns per minute "
                "(CLAUDE_SERVER_RATE_LIMIT_PER_MIN)",
                retry_after=wait,
                code="rate_limited",
            )
        admitted = self.admission.try_acquire()
        if not admitted and self.admission.full:
            raise TooManyRequests(
                f"All {self.admission.slots} slots are busy and the queue is full "
                f"({self.admission.max_queue} waiting); retry later",
                retry_after=self.settings.queue_timeout_s,
                code="queue_full",
            )

        try:
            if session is not None:
                workspace, created = self.workspaces.ensure(Path(session.workspace_path)), False
            elif workspace_name is not None:
                workspace, created = self.workspaces.named(workspace_name)
            else:
                workspace, created = self.workspaces.create(), True
        except BaseException as exc:
            if admitted:  # the slot taken above goes back
                self.admission.release()
            if isinstance(exc, WorkspaceError):
                raise Conflict(str(exc), code="workspace_unavailable", field="workspace") from None
            raise
        turn = Turn(
            options,
            workspace,
            created_workspace=created,
            detach=detach,
            on_orphaned=self._orphaned,
            session=session,
            conversation_id=conversation_id,
            principal=principal,
        )
        self.turns[turn.id] = turn
        if session is not None:
            self._busy[session.session_id] = turn
        elif conversation_id is not None:
            self._new_conversations[(owner, conversation_id)] = turn
        if admitted:
            turn.status, turn.holds_slot = Status.RUNNING, True
        else:
            turn.waiter = self.admission.enqueue(turn)
        self.metrics.queue_length.set(self.admission.queued)
        subscription = turn.subscribe(0)
        try:
            if session is not None and conversation_id is not None and session.conversation_id is None:
                await self.store.bind_conversation(session.session_id, conversation_id)
            await self.store.insert_turn(
                turn.id,
                session_id=options.session_id,
                prompt=options.prompt,
                options=options.summary(),
                workspace_path=str(workspace),
                detach=detach,
                owner=owner,
                status=turn.status,
            )
            if admitted:
                await self._spawn_cli(turn)
        except BaseException as exc:
            await self._finish(turn, None, start_error=exc)
            if isinstance(exc, OSError):
                raise ServiceUnavailable(
                    f"Could not start Claude Code ({self.cli.path}): {exc}. {INSTALL_HINT}",
                    code="cli_not_found",
                ) from exc
            if isinstance(exc, ConversationTaken):
                raise Conflict(
                    f"conversation_id {conversation_id!r} was just bound to another session; retry",
                    code="conversation_taken",
                ) from exc
            raise
        if admitted:
            assert turn.process is not None
            self._spawn(self._run(turn, turn.process), name=f"turn-{turn.id}")
        else:
            self._spawn(self._queued(turn), name=f"queued-{turn.id}")
        return subscription

    async def _spawn_cli(self, turn: Turn) -> None:
        assert self.cli.path is not None
        turn.process = await CliProcess.spawn(
            build_argv(self.cli.path, turn.options),
            cwd=turn.workspace,
            env=build_env(self.settings.environ, turn.id, self.settings.child_env),
            stdin_data=turn.options.prompt.encode(),
            turn_id=turn.id,
        )
        turn.status = Status.RUNNING
        turn.started_at = turn.last_activity = asyncio.get_running_loop().time()
        self.metrics.turns_started.inc()
        self.metrics.running.set(self.admission.running)
        log.info("turn %s started (session %s, pid %d)", turn.id, turn.options.session_id or "new", turn.process.pid)

    async def _queued(self, turn: Turn) -> None:
        """Wait for a slot (at most the queue timeout), then run."""
        assert turn.waiter is not None
        waited_from = time.monotonic()
        try:
            admitted = await asyncio.wait_for(asyncio.shield(turn.waiter.admitted), self.settings.queue_timeout_s)
        except TimeoutError:
            self.admission.leave(turn.waiter)
            admitted = turn.waiter.admitted.result()  # a slot may have come just in time
            if not admitted:
                turn.stop(
                    "queue_timeout",
                    f"No slot freed up within the queue timeout ({self.settings.queue_timeout_s:g}s)",
                    Status.FAILED,
                )
        self.metrics.queue_length.set(self.admission.queued)
        self.metrics.queue_wait.observe(time.monotonic() - waited_from)
        turn.waiter = None
        turn.holds_slot = admitted
        if not admitted or turn.stop_reason is not None:  # timed out, or stopped while its slot came
            await self._finish(turn, None)
            return
        try:
            await self.store.set_turn_status(turn.id, Status.RUNNING)
            await self._spawn_cli(turn)
        except OSError as exc:
            await self._finish(turn, None, start_error=exc)
            return
        assert turn.process is not None
        await self._run(turn, turn.process)

    # ---- running -----------------------------------------------------------------------
    def _append(self, turn: Turn, data: bytes, kind: str, name: str | None = None) -> None:
        self.recorder.add(turn.id, turn.append(data, kind, name))

    async def _run(self, turn: Turn, proc: CliProcess) -> None:
        loop = asyncio.get_running_loop()
        watchdog = asyncio.create_task(self._watch(turn, proc))
        try:
            try:
                async for batch in proc.batches():
                    turn.last_activity = loop.time()
                    for line in batch:
                        classified = events.classify(line)
                        if classified is None:
                            if line.strip():
                                log.info("turn %s: non-JSON line from the CLI: %.300r", turn.id, line)
                            continue
                        kind, obj = classified
                        if turn.first_event_at is None:
                            turn.first_event_at = turn.last_activity
                            self.metrics.first_event.observe(turn.first_event_at - turn.started_at)
                        if kind == "system/init" and obj is not None:
                            await self._on_init(turn, obj)
                        elif kind == "result" and obj is not None:
                            turn.result = events.result_summary(obj)
                            turn.result_at = loop.time()
                        self._append(turn, line, kind)
            except LineTooLong as exc:
                turn.stop("line_too_long", str(exc), Status.FAILED)
                await proc.terminate()
            turn.exit_code = await proc.wait()
            await proc.stderr_done()
        except Exception as exc:
            log.exception("turn %s: reading the CLI failed", turn.id)
            turn.stop("internal", f"The server failed while reading the CLI: {exc}", Status.FAILED)
            await proc.terminate()
        finally:
            watchdog.cancel()
            await self._finish(turn, proc)

    async def _on_init(self, turn: Turn, obj: dict[str, Any]) -> None:
        model = obj.get("model")
        if isinstance(model, str):
            turn.model = model
        sid = events.session_id(obj)
        if sid is None or sid == turn.session_id:
            return
        # A new session, a fork, or a CLI that issues a new id on resume: the new id is
        # recorded against the same workspace; the old one stays resumable.
        parent = turn.session
        forked = turn.options.fork_session and parent is not None
        conversation = turn.conversation_id if parent is None else None
        try:
            if parent is not None and not forked and parent.conversation_id is not None:
                # The conversation goes on under the new id (a fork does not move it).
                conversation = parent.conversation_id
                await self.store.bind_conversation(parent.session_id, None)
            await self.store.insert_session(
                sid,
                workspace_path=str(turn.workspace),
                workspace_name=turn.workspace.name,
                first_prompt=parent.first_prompt if parent else turn.options.prompt,
                forked_from=parent.session_id if parent else None,
                conversation_id=conversation,
                owner=turn.owner,
                title=parent.title if parent else None,
                metadata=parent.metadata if parent else None,
            )
            await self.store.set_turn_session(turn.id, sid)
        except Exception:
            log.exception("turn %s: could not record session %s", turn.id, sid)
        turn.session_id = sid
        self._busy.setdefault(sid, turn)
        if turn.conversation_id is not None and self._new_conversations.get((turn.owner, turn.conversation_id)) is turn:
            del self._new_conversations[(turn.owner, turn.conversation_id)]

    async def _watch(self, turn: Turn, proc: CliProcess) -> None:
        """End the turn at its total deadline, after too long a silence, or when the CLI does
        not exit after its result."""
        loop = asyncio.get_running_loop()
        total = self.settings.turn_timeout_s
        idle = self.settings.inactivity_timeout_s
        while True:
            now = loop.time()
            if now >= turn.started_at + total:
                turn.stop("turn_timeout", f"The turn ran longer than the turn timeout ({total:g}s)", Status.FAILED)
                break
            if now >= turn.last_activity + idle:
                turn.stop(
                    "inactivity_timeout",
                    f"Claude Code printed nothing for {idle:g}s (the inactivity timeout)",
                    Status.FAILED,
                )
                break
            if turn.result_at is not None and now >= turn.result_at + POST_RESULT_GRACE_S:
                log.warning("turn %s: CLI did not exit %gs after its result; ending it", turn.id, POST_RESULT_GRACE_S)
                break
            await asyncio.sleep(WATCHDOG_TICK_S)
        await proc.terminate()

    def _orphaned(self, turn: Turn) -> None:
        """The last follower of a turn that is not detached went away: cancel it."""
        if turn.stop("client_disconnected", "The client disconnected", Status.CANCELLED):
            log.info("turn %s: client went away; cancelling", turn.id)
            self._spawn(self._terminate(turn))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _terminate(self, turn: Turn) -> None:
        """End a stopped turn: its process if it runs, its place in the queue if it waits."""
        if turn.process is not None:
            await turn.process.terminate()
        elif turn.waiter is not None:
            self.admission.leave(turn.waiter)

    async def cancel(self, turn: Turn, code: str = "cancelled", message: str = "The turn was cancelled") -> None:
        """End a running or queued turn and wait until it is recorded; its followers receive
        an error event with ``code`` and their streams end."""
        turn.stop(code, message, Status.CANCELLED)
        await self._terminate(turn)
        await turn.wait()

    # ---- finishing ---------------------------------------------------------------------
    def _failure(self, turn: Turn, proc: CliProcess) -> dict[str, Any]:
        tail = proc.stderr_tail()
        code = turn.exit_code
        if "cannot be used with root/sudo privileges" in tail:
            message = (
                "Claude Code refused --dangerously-skip-permissions because it runs as root. If this "
                "machine is a sandbox, start the server with IS_SANDBOX=1 in its environment."
            )
        elif "No conversation found" in tail:
            message = "Claude Code could not find this session's conversation to resume."
        else:
            last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
            message = f"Claude Code exited with code {code} without a result" + (f": {last}" if last else "")
        return {"code": "cli_failed", "message": message}

    def _outcome(
        self, turn: Turn, proc: CliProcess | None, start_error: BaseException | None
    ) -> tuple[str, dict[str, Any] | None]:
        if turn.stop_reason is not None:
            error: dict[str, Any] = {"code": turn.stop_reason.code, "message": turn.stop_reason.message}
            if turn.stop_reason.code == "queue_timeout":
                error["retry_after"] = max(1, int(self.settings.queue_timeout_s))
            return turn.stop_reason.status, error
        if start_error is not None:
            code = "cli_not_found" if isinstance(start_error, OSError) else "start_failed"
            return Status.FAILED, {"code": code, "message": f"Could not start Claude Code: {start_error}"}
        if turn.result is not None:
            return (Status.FAILED if turn.result["is_error"] else Status.SUCCEEDED), None
        assert proc is not None
        return Status.FAILED, self._failure(turn, proc)

    async def _finish(self, turn: Turn, proc: CliProcess | None, start_error: BaseException | None = None) -> None:
        """Record how the turn ended, free its slot and session, end its followers' streams.
        ``proc`` is None for a turn that never ran (queue timeout, cancelled while queued, a
        start that failed)."""
        status, error = self._outcome(turn, proc, start_error)
        if error is not None:
            if proc is not None:
                error["exit_code"] = turn.exit_code
                error["stderr_tail"] = proc.stderr_tail()
            self._append(turn, json.dumps({"type": "error", **error}).encode(), "error", name="error")
        turn.error = error
        if turn.created_workspace and turn.session_id is None:
            # A CLI that died before init leaves no session, so no workspace either.
            await asyncio.to_thread(self.workspaces.discard, turn.workspace)
        result = turn.result or {}
        duration_ms = None
        if proc is not None:
            duration_ms = result.get("duration_ms") or (asyncio.get_running_loop().time() - turn.started_at) * 1000
        try:
            # The log is complete in SQLite before the turn counts as finished, so that a
            # replay from the database never misses its tail.
            await asyncio.shield(self._record_end(turn, status, error, duration_ms))
        except Exception:
            log.exception("turn %s: could not record its end", turn.id)
        if turn.holds_slot:
            turn.holds_slot = False
            self.admission.release()
        self.metrics.running.set(self.admission.running)
        self.metrics.queue_length.set(self.admission.queued)
        self.metrics.turn_ended(status, turn.model, turn.result)
        if proc is not None:
            self.metrics.turn_duration.observe(asyncio.get_running_loop().time() - turn.started_at)
        self._release(turn)
        turn.finish(status)
        log.info(
            "turn %s %s",
            turn.id,
            status,
            extra={
                "turn_id": turn.id,
                "session_id": turn.session_id,
                "key": turn.principal.name,
                "status": status,
                "exit_code": turn.exit_code,
                "duration_ms": duration_ms,
                "cost_usd": result.get("total_cost_usd"),
                "model": turn.model,
                "error_code": error["code"] if error else None,
            },
        )
        if proc is not None:
            await proc.close()

    async def _record_end(
        self, turn: Turn, status: str, error: dict[str, Any] | None, duration_ms: float | None
    ) -> None:
        result = turn.result or {}
        await self.recorder.flush()
        await self.store.finish_turn(
            turn.id,
            status=status,
            exit_code=turn.exit_code,
            cost_usd=result.get("total_cost_usd"),
            usage=result.get("usage"),
            num_turns=result.get("num_turns"),
            error=error,
            last_seq=turn.last_seq,
            model=turn.model,
            duration_ms=duration_ms,
        )
        if turn.session_id is not None:
            await self.store.touch_session(turn.session_id)

    def _release(self, turn: Turn) -> None:
        self.turns.pop(turn.id, None)
        for sid in {turn.options.session_id, turn.session_id}:
            if sid is not None and self._busy.get(sid) is turn:
                del self._busy[sid]
        if turn.conversation_id is not None:
            key = (turn.owner, turn.conversation_id)
            if self._new_conversations.get(key) is turn:
                del self._new_conversations[key]

    # ---- the whole server ----------------------------------------------------------------
    def running(self) -> list[Turn]:
        return list(self.turns.values())

    def running_on(self, session_id: str) -> Turn | None:
        return self._busy.get(session_id)

    def get(self, turn_id: str) -> Turn | None:
        return self.turns.get(turn_id)

    async def shutdown(self) -> None:
        """Refuse new turns, end the running and queued ones (their followers hear
        ``server_shutdown``) and wait until each is recorded."""
        self._closing = True
        live = list(self.turns.values())
        for turn in live:
            turn.stop("server_shutdown", "The server is shutting down", Status.INTERRUPTED)
        await asyncio.gather(*(self._terminate(t) for t in live), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._recorder_task is not None:
            self._recorder_task.cancel()
            await asyncio.gather(self._recorder_task, return_exceptions=True)
        await self.recorder.flush()
