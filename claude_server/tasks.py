"""Background tasks: turns that nobody follows, started when a slot is spare, by priority.

A task is in SQLite (``queued``) before its submission is answered. ``Tasks`` keeps the
queued ones in memory too and starts them through the broker as ``background`` turns: they
take only the slots no waiting interactive turn wants (``Admission.spare``), the highest
priority first, then the oldest; the tasks of one session run one after another in
submission order, and a task whose session is busy waits for it. When its turn ends the task
records the outcome and its webhook is delivered (``deliveries``). A task the server died
(or stopped) running is ``interrupted``; it is queued once more when the settings say so,
resuming its session. No aiohttp here, except what the deliverer needs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from claude_server.broker import Broker
from claude_server.claude.command import TurnOptions
from claude_server.config import Settings
from claude_server.deliveries import Deliverer
from claude_server.errors import ApiError, TooManyRequests
from claude_server.gate import NoSpareSlot
from claude_server.outcome import StopCode, TurnStatus
from claude_server.principal import Principal
from claude_server.store import Store, TaskRow, now_iso
from claude_server.turn import Turn

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
# A task the server died running runs again at most this many times in all.
MAX_ATTEMPTS = 2
# How often the queued tasks are read again from the database: those submitted to another
# replica start on this one when it has a spare slot (taking one is atomic: store.take_task).
POLL_S = 2.0


@dataclass(frozen=True)
class TaskSettings:
    max_queued: int = 1000
    retry_interrupted: bool = True
    spawn_retries: int = 2
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)

    @classmethod
    def of(cls, settings: Settings) -> TaskSettings:
        return cls(
            max_queued=settings.max_tasks_queued,
            retry_interrupted=settings.task_retry_interrupted,
            spawn_retries=settings.spawn_retries,
            webhook_url=settings.webhook_url,
            webhook_secret=settings.webhook_secret,
        )


@dataclass(frozen=True)
class TaskSpec:
    """One task as a route accepted it."""

    options: TurnOptions
    priority: int = 5
    conversation_id: str | None = None
    workspace: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    metadata: Any = None


def _lane(row: TaskRow) -> str | None:
    """What a task must wait its turn on: its session (or conversation); None for a task
    that starts a session of its own."""
    if row.session_id:
        return f"s:{row.session_id}"
    conversation = row.request.get("conversation_id")
    return f"c:{row.owner or ''}:{conversation}" if conversation else None


class Tasks:
    def __init__(
        self,
        broker: Broker,
        store: Store,
        deliverer: Deliverer | None,
        settings: TaskSettings,
        principal_of: Callable[[str | None], Awaitable[Principal | None]],
    ) -> None:
        self.broker = broker
        self._principal_of = principal_of
        self.store = store
        self.deliverer = deliverer
        self.settings = settings
        self._queued: dict[str, TaskRow] = {}
        self._running: dict[str, tuple[TaskRow, Turn]] = {}
        self._follows: dict[str, asyncio.Task[None]] = {}  # task id -> what waits for its turn's end
        self._seq = 0
        self._drain: asyncio.Task[None] | None = None
        self._poll: asyncio.Task[None] | None = None
        self._again = False
        self._closing = False

    # ---- the server's life -------------------------------------------------------------
    async def open(self) -> None:
        """Take over what a previous server left (after ``Broker.open``), then start."""
        self._seq = await self.store.max_task_seq()
        for row in await self.store.tasks_with_status("running"):
            await self._recover(row)
        await self.refresh()
        if self.broker.replicas.shared:  # alone on its database, every task is submitted here
            self._poll = asyncio.get_running_loop().create_task(self._polling(), name="tasks-poll")
        self.broker.gate.admission.on_spare = self.kick
        self.broker.metrics.watch_tasks(self.stats)
        if self._queued:
            log.info("%d queued task(s) waiting", len(self._queued))
        self.kick()

    async def refresh(self) -> None:
        """The queued tasks as the database has them: those submitted to other replicas too,
        without those another replica took (or cancelled) meanwhile."""
        queued = {row.task_id: row for row in await self.store.tasks_with_status("queued")}
        for task_id in [t for t in self._queued if t not in queued]:
            del self._queued[task_id]
        for task_id, row in queued.items():
            self._queued.setdefault(task_id, row)

    async def _polling(self) -> None:
        """Every ``POLL_S``: tasks queued through other replicas start here when a slot is spare."""
        while not self._closing:
            await asyncio.sleep(POLL_S)
            try:
                await self.refresh()
            except Exception:
                log.exception("could not read the queued tasks")
            self.kick()

    async def _recover(self, row: TaskRow) -> None:
        turn = await self.store.get_turn(row.turn_id) if row.turn_id else None
        if turn is not None and turn.status in ("queued", "running"):
            return  # its turn runs on another replica (recovery ended this server's own)
        if turn is not None and turn.status not in ("queued", "running", "interrupted"):
            # It ended, and the server died before the task recorded it.
            await self._record(row, turn.status, turn.session_id, None, turn.cost_usd, turn.usage, turn.error)
            return
        session_id = turn.session_id if turn is not None else row.session_id
        await self._interrupted(row, session_id, {"code": "interrupted", "message": "The server stopped"})

    def stop(self) -> None:
        """Start nothing more (the server is shutting down)."""
        self._closing = True
        self.broker.gate.admission.on_spare = None

    async def close(self) -> None:
        """After the broker ended the running turns: wait until their tasks recorded it."""
        self.stop()
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
        await asyncio.gather(*list(self._follows.values()), return_exceptions=True)

    # ---- submitting ----------------------------------------------------------------------
    async def submit(self, principal: Principal, specs: list[TaskSpec], batch_id: str | None = None) -> list[TaskRow]:
        """Queue them all (durably, in one transaction) or none: 429 when the queue has no
        room for them all or the key's rate limit says no."""
        room = self.settings.max_queued - len(self._queued)
        if len(specs) > room:
            raise TooManyRequests(
                f"{len(self._queued)} tasks are queued; at most {self.settings.max_queued} "
                "(CLAUDE_SERVER_MAX_TASKS_QUEUED)",
                retry_after=60.0,
                code="task_queue_full",
            )
        await self.broker.gate.take_rate(principal, len(specs))
        rows = []
        for spec in specs:
            self._seq += 1
            url, secret = spec.webhook_url, spec.webhook_secret
            if url is None and self.settings.webhook_url:
                url, secret = self.settings.webhook_url, self.settings.webhook_secret or None
            request = {
                "options": spec.options.to_json(),
                "conversation_id": spec.conversation_id,
                "workspace": spec.workspace,
            }
            rows.append(
                TaskRow(
                    task_id=f"task-{uuid.uuid4()}",
                    seq=self._seq,
                    owner=principal.key_id,
                    batch_id=batch_id,
                    status="queued",
                    priority=spec.priority,
                    request=request,
                    session_id=spec.options.session_id,
                    turn_id=None,
                    webhook_url=url,
                    webhook_secret=secret,
                    metadata=spec.metadata,
                    result=None,
                    cost_usd=None,
                    usage=None,
                    error=None,
                    attempts=0,
                    created_at=now_iso(),
                    started_at=None,
                    ended_at=None,
                )
            )
        await self.store.insert_tasks(rows)
        for row in rows:
            self._queued[row.task_id] = row
        self.kick()
        return rows

    # ---- order -----------------------------------------------------------------------------
    def _order(self) -> list[TaskRow]:
        return sorted(self._queued.values(), key=lambda r: (-r.priority, r.seq))

    def position(self, task_id: str) -> int | None:
        """1-based place among the queued tasks, in the order they will start."""
        for place, row in enumerate(self._order(), start=1):
            if row.task_id == task_id:
                return place
        return None

    def _ready(self) -> Iterable[TaskRow]:
        """The queued tasks that may start, in order: per lane only the first submitted, and
        none on a lane a task of ours runs on."""
        busy = {_lane(row) for row, _ in self._running.values()}
        first: dict[str, int] = {}
        for row in self._queued.values():
            lane = _lane(row)
            if lane is not None and (lane not in first or row.seq < first[lane]):
                first[lane] = row.seq
        for row in self._order():
            lane = _lane(row)
            if lane is None or (lane not in busy and first[lane] == row.seq):
                yield row

    def kick(self) -> None:
        """Start what can start now (soon, in a task of its own; once at a time)."""
        if self._closing:
            return
        if self._drain is not None and not self._drain.done():
            self._again = True
            return
        self._drain = asyncio.get_running_loop().create_task(self._start_ready(), name="tasks")

    async def _start_ready(self) -> None:
        while True:
            self._again = False
            for row in list(self._ready()):
                if self._closing or not await self._start(row):
                    break
            if not self._again or self._closing:
                return

    async def _start(self, row: TaskRow) -> bool:
        """Start one task; False when no slot is spare (nothing more can start now)."""
        request = row.request
        options = TurnOptions.from_json(request["options"])
        if row.session_id and options.session_id != row.session_id:  # it resumes what it started
            options = TurnOptions.from_json({**request["options"], "session_id": row.session_id})
        if not await self.broker.replicas.take_task(row.task_id):  # another replica took it
            self._queued.pop(row.task_id, None)
            return True
        try:
            return await self._start_taken(row, options)
        except BaseException:
            await self.store.untake_task(row.task_id)
            raise

    async def _start_taken(self, row: TaskRow, options: TurnOptions) -> bool:
        """Start a task this replica took; False (and queued again) when no slot is spare."""
        request = row.request
        principal = await self._principal_of(row.owner)
        if principal is None:
            self._queued.pop(row.task_id, None)
            gone = {"code": "key_revoked", "message": "The key that submitted the task is no longer valid"}
            await self._record(row, "failed", None, None, None, None, gone)
            return True
        try:
            sub = await self.broker.start(
                options,
                detach=True,
                conversation_id=request.get("conversation_id"),
                workspace_name=request.get("workspace"),
                principal=principal,
                background=True,
                spawn_retries=self.settings.spawn_retries,
            )
        except NoSpareSlot:
            await self.store.untake_task(row.task_id)
            return False
        except ApiError as exc:
            if exc.code in ("session_busy", "shutting_down", "no_provider"):
                await self.store.untake_task(row.task_id)
            if exc.code == "session_busy":  # an interactive turn runs on its session: later
                return True
            if exc.code == "shutting_down":
                return False
            if exc.code == "no_provider":  # every provider is down: try again when one may be up
                wait = float(exc.extra.get("retry_after", 1))
                asyncio.get_running_loop().call_later(wait, self.kick)
                return False
            self._queued.pop(row.task_id, None)
            await self._record(row, "failed", None, None, None, None, {"code": exc.code, "message": exc.message})
            return True
        except Exception as exc:  # a bug must fail this task, not stop the scheduler
            log.exception("task %s: could not start", row.task_id)
            self._queued.pop(row.task_id, None)
            error = {"code": "start_failed", "message": f"The task could not start: {exc}"}
            await self._record(row, "failed", None, None, None, None, error)
            return True
        turn = sub.turn
        sub.close()  # nobody follows a task; its turn is detached
        assert turn is not None
        self._queued.pop(row.task_id, None)
        row.status, row.turn_id, row.attempts = "running", turn.id, row.attempts + 1
        self._running[row.task_id] = (row, turn)
        await self.store.start_task(row.task_id, turn.id, options.session_id)
        follow = asyncio.get_running_loop().create_task(self._follow(row, turn), name=f"task-{row.task_id}")
        self._follows[row.task_id] = follow
        # Only its own entry: a task queued again may be followed anew by then.
        follow.add_done_callback(
            lambda done: self._follows.pop(row.task_id) if self._follows.get(row.task_id) is done else None
        )
        log.info("task %s started as turn %s (priority %d)", row.task_id, turn.id, row.priority)
        return True

    async def _follow(self, row: TaskRow, turn: Turn) -> None:
        await turn.wait()
        try:
            stop = turn.stop_reason
            if stop is not None and stop.code is StopCode.SERVER_SHUTDOWN:
                error = turn.error.to_json() if turn.error else None
                await self._interrupted(row, turn.session_id, error)
                return
            result = turn.result
            await self._record(
                row,
                str(turn.status),
                turn.session_id,
                result.text if result else None,
                result.cost_usd if result else None,
                result.usage if result else None,
                turn.error.to_json() if turn.error else None,
            )
        finally:
            self._running.pop(row.task_id, None)
            self.kick()  # its session is free for the next task on it

    # ---- ending ----------------------------------------------------------------------------
    async def _interrupted(self, row: TaskRow, session_id: str | None, error: dict[str, Any] | None) -> None:
        if self.settings.retry_interrupted and row.attempts < MAX_ATTEMPTS and not row.finished:
            if session_id and not row.session_id:
                await self.store.set_task_session(row.task_id, session_id)
            await self.store.requeue_task(row.task_id)
            await self.store.untake_task(row.task_id)
            log.info("task %s was interrupted; queued again (attempt %d)", row.task_id, row.attempts + 1)
            fresh = await self.store.get_task(row.task_id)
            if fresh is not None and not self._closing:
                self._queued[row.task_id] = fresh
            return
        await self._record(row, str(TurnStatus.INTERRUPTED), session_id, None, None, None, error)

    async def _record(
        self,
        row: TaskRow,
        status: str,
        session_id: str | None,
        result: str | None,
        cost_usd: float | None,
        usage: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        """Its end, once, then its webhook."""
        ended = await self.store.finish_task(
            row.task_id,
            status=status,
            session_id=session_id,
            result=result,
            cost_usd=cost_usd,
            usage=usage,
            error=error,
        )
        if not ended:
            return
        log.info("task %s %s", row.task_id, status)
        final = await self.store.get_task(row.task_id)
        if final is not None and final.webhook_url and self.deliverer is not None:
            try:
                await self.deliverer.enqueue(
                    final.task_id, final.webhook_url, final.webhook_secret, self.public(final, webhook=True)
                )
            except Exception:
                log.exception("task %s: could not queue its webhook", row.task_id)

    async def cancel(self, row: TaskRow) -> None:
        """A queued task never runs; a running one is interrupted (its CLI stays)."""
        if self._queued.pop(row.task_id, None) is not None:
            await self._record(row, "cancelled", None, None, None, None, {"code": "cancelled", "message": "Cancelled"})
            return
        running = self._running.get(row.task_id)
        if running is not None:
            await self.broker.cancel(running[1], StopCode.CANCELLED, "The task was cancelled")
            follow = self._follows.get(row.task_id)
            if follow is not None:
                await asyncio.gather(follow, return_exceptions=True)

    async def forget(self, row: TaskRow) -> None:
        """A task that ended, and its webhook deliveries."""
        await self.store.delete_deliveries(row.task_id)
        await self.store.delete_task(row.task_id)

    async def redeliver(self, row: TaskRow) -> str | None:
        """Its webhook once more (a new delivery); None when it has none."""
        if self.deliverer is None or not row.webhook_url:
            return None
        again = await self.deliverer.redeliver(row.task_id)
        if again is not None:
            return again
        return await self.deliverer.enqueue(
            row.task_id, row.webhook_url, row.webhook_secret, self.public(row, webhook=True)
        )

    # ---- views -----------------------------------------------------------------------------
    def public(self, row: TaskRow, *, webhook: bool = False) -> dict[str, Any]:
        """A task as the API shows it (and its webhook carries); never its webhook secret."""
        options = row.request.get("options", {})
        session_id = row.session_id
        running = self._running.get(row.task_id)
        if running is not None and running[1].session_id:
            session_id = running[1].session_id
        body: dict[str, Any] = {
            "task_id": row.task_id,
            "status": row.status,
            "priority": row.priority,
            "session_id": session_id,
            "turn_id": row.turn_id,
            "batch_id": row.batch_id,
            "prompt": options.get("prompt"),
            "result": row.result,
            "cost_usd": row.cost_usd,
            "usage": row.usage,
            "error": row.error,
            "metadata": row.metadata,
            "attempts": row.attempts,
            "created_at": row.created_at,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
        }
        if webhook:
            return {"event": "task.finished", **body}
        body["position"] = self.position(row.task_id) if row.status == "queued" else None
        body["webhook_url"] = row.webhook_url
        return body

    def stats(self) -> dict[str, int]:
        return {"queued": len(self._queued), "running": len(self._running)}
