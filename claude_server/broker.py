"""The broker: starts, runs, finishes, cancels and recovers turns.

A turn is a CLI run that belongs to the server, not to the HTTP request that asked for it.
``start`` resolves the session, passes the gate (policy, budget, rate, slot or queue),
creates the turn's row and its process; ``_run`` reads the CLI's lines into the turn's log
(the recorder makes them durable before followers see them), records the session when the
CLI reports ``init`` and the outcome when it exits; ``_finish`` is the one place a turn
ends, whatever path it took, and gives back its admission ticket. Nothing here imports
aiohttp: routes render the events, the broker only produces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from claude_server.claude import events
from claude_server.claude.command import TurnOptions, build_argv, build_env
from claude_server.claude.probe import CliInfo, CredentialCheck, Credentials, install_hint, probe_cli
from claude_server.claude.process import CliProcess, LineTooLong
from claude_server.claude.reaper import Reaper
from claude_server.config import Settings
from claude_server.errors import Conflict, ServiceUnavailable
from claude_server.gate import Gate
from claude_server.metrics import Metrics
from claude_server.occupancy import Occupancy
from claude_server.outcome import StopCode, TurnResult, TurnStatus, own_cost
from claude_server.placement import record_session, resolve_session, workspace_for
from claude_server.principal import OPEN, Principal
from claude_server.recorder import Recorder
from claude_server.recovery import recover
from claude_server.store import ConversationTaken, Store, TurnRow
from claude_server.turn import Subscription, Turn
from claude_server.workspaces import Workspaces

log = logging.getLogger(__name__)

# After the CLI printed its result it still writes its transcript; it gets this long to
# exit by itself before it is ended (reported elsewhere: a CLI that never exits).
POST_RESULT_GRACE_S = 10.0
# A flood waits at most this long per batch for a slow follower to make room in memory.
BACKPRESSURE_MAX_WAIT_S = 1.0
# The watchdog looks at the deadlines at least this often.
WATCHDOG_TICK_S = 1.0


@dataclass(frozen=True)
class BrokerSettings:
    """What the broker needs to know of the server's settings."""

    claude_bin: str = "claude"
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    child_env: tuple[str, ...] = ()
    turn_timeout_s: float = 3600.0
    inactivity_timeout_s: float = 600.0
    queue_timeout_s: float = 60.0
    server_id: str = ""

    @classmethod
    def of(cls, settings: Settings, server_id: str) -> BrokerSettings:
        return cls(
            claude_bin=settings.claude_bin,
            environ=settings.environ,
            child_env=settings.child_env,
            turn_timeout_s=settings.turn_timeout_s,
            inactivity_timeout_s=settings.inactivity_timeout_s,
            queue_timeout_s=settings.queue_timeout_s,
            server_id=server_id,
        )


class Broker:
    """Starts turns (admitting them, or queueing them for a slot), keeps them, ends them."""

    def __init__(
        self,
        settings: BrokerSettings,
        gate: Gate,
        store: Store,
        workspaces: Workspaces,
        cli: CliInfo,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.store = store
        self.workspaces = workspaces
        self.cli = cli
        self._credentials = CredentialCheck()
        self.metrics = metrics or Metrics()
        self.recorder = Recorder(store)
        self.reaper = Reaper()
        self.turns: dict[str, Turn] = {}  # not yet finished
        self.occupancy = Occupancy()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def open(self) -> None:
        """Clean up after a previous process, then start recording events."""
        await self.recover()
        self.recorder.start()

    async def recover(self) -> None:
        """Clean up after a server that is gone (see ``recovery``)."""
        await recover(self.store, self.reaper, self.workspaces, self.settings.server_id)

    # ---- starting ----------------------------------------------------------------------
    def deleting(self, session_id: str) -> contextlib.AbstractContextManager[None]:
        """While a session is being deleted no turn may start on it."""
        return self.occupancy.deleting(session_id)

    async def _check_cli(self) -> None:
        if self._closing:
            raise ServiceUnavailable("The server is shutting down", code="shutting_down")
        if not self.cli.found:
            # Installed since the server started? Look again before refusing.
            self.cli = await probe_cli(self.settings.claude_bin, build_env(self.settings.environ, "probe"))
        if not self.cli.found:
            raise ServiceUnavailable(
                f"Claude Code CLI is not available: {self.cli.error}. {install_hint()}", code="cli_not_found"
            )

    async def check_credentials(self, max_age_s: float = 0.0) -> Credentials:
        """Whether the CLI has credentials, looked at again when older than ``max_age_s``."""
        env = build_env(self.settings.environ, "probe", self.settings.child_env)
        return await self._credentials.get(self.cli.path, env, max_age_s)

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
        order: server closing or CLI missing (503), bad combination (400), unknown or
        foreign session (404), policy (403), budget (429), busy session (409), rate and
        queue (429)."""
        await self._check_cli()
        options, session = await resolve_session(self.store, options, conversation_id, principal)
        workspace, create = await workspace_for(self.store, self.workspaces, session, workspace_name, principal)
        turn = Turn(
            options,
            workspace,
            create_workspace=create,
            detach=detach,
            on_orphaned=self._orphaned,
            session=session,
            conversation_id=conversation_id,
            principal=principal,
        )
        # The session is checked after the gate's last await: another request may have
        # started a turn on it meanwhile.
        await self.gate.admit(turn, lambda: self.occupancy.check(turn))
        # From here on the turn owns its ticket: every way out goes through _finish.
        self.turns[turn.id] = turn
        self.occupancy.claim(turn)
        self.metrics.queue_length.set(self.gate.queued)
        subscription = Subscription(self.store, turn.id, 0, live=turn)
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
                owner=principal.key_id,
                status=turn.status,
                server_id=self.settings.server_id,
            )
            turn.recorded = True
            if turn.status is TurnStatus.RUNNING:
                await self._launch(turn)
        except BaseException as exc:
            await self._finish(turn, None, start_error=exc)
            subscription.close()  # after: closing the last follower of a live turn cancels it
            raise self._start_error(exc, conversation_id) from exc
        if turn.process is not None:
            self._spawn(self._run(turn, turn.process), name=f"turn-{turn.id}")
        else:
            self._spawn(self._queued(turn), name=f"queued-{turn.id}")
        return subscription

    def _start_error(self, exc: BaseException, conversation_id: str | None) -> BaseException:
        if isinstance(exc, OSError):
            return ServiceUnavailable(
                f"Could not start Claude Code ({self.cli.path}): {exc}. {install_hint()}", code="cli_not_found"
            )
        if isinstance(exc, ConversationTaken):
            return Conflict(
                f"conversation_id {conversation_id!r} was just bound to another session; retry",
                code="conversation_taken",
            )
        return exc

    async def _launch(self, turn: Turn) -> None:
        """Make the workspace ready and start the CLI in it."""
        assert self.cli.path is not None
        created = await asyncio.to_thread(self.workspaces.prepare, turn.workspace)
        turn.created_workspace = created and turn.create_workspace
        turn.process = await CliProcess.spawn(
            build_argv(self.cli.path, turn.options),
            cwd=turn.workspace,
            env=build_env(self.settings.environ, turn.id, self.settings.child_env),
            stdin_data=turn.options.prompt.encode(),
            turn_id=turn.id,
            reaper=self.reaper,
        )
        turn.status = TurnStatus.RUNNING
        turn.started_at = turn.last_activity = asyncio.get_running_loop().time()
        self.metrics.turns_started.inc()
        self.metrics.running.set(self.gate.running)
        log.info("turn %s started (session %s, pid %d)", turn.id, turn.options.session_id or "new", turn.process.pid)

    async def _queued(self, turn: Turn) -> None:
        """Wait for a slot (at most the queue timeout), then run."""
        ticket = turn.ticket
        assert ticket is not None and ticket.admitted is not None
        waited_from = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ticket.admitted), self.settings.queue_timeout_s)
        self.metrics.queue_wait.observe(time.monotonic() - waited_from)
        if ticket.slot is None:  # timed out (or left the queue when it was cancelled)
            ticket.release()
            turn.stop(
                StopCode.QUEUE_TIMEOUT,
                f"No slot freed up within the queue timeout ({self.settings.queue_timeout_s:g}s)",
            )
        self.metrics.queue_length.set(self.gate.queued)
        if turn.stop_reason is not None:  # timed out, or stopped while its slot came
            await self._finish(turn, None)
            return
        try:
            await self.store.set_turn_status(turn.id, TurnStatus.RUNNING)
            await self._launch(turn)
        except Exception as exc:
            await self._finish(turn, None, start_error=exc)
            return
        assert turn.process is not None
        await self._run(turn, turn.process)

    # ---- running -----------------------------------------------------------------------
    def _append(self, turn: Turn, data: bytes, kind: str, name: str | None = None) -> None:
        turn.log.append(data, kind, name)
        self.recorder.has_new(turn)

    async def _run(self, turn: Turn, proc: CliProcess) -> None:
        loop = asyncio.get_running_loop()
        watchdog = asyncio.create_task(self._watch(turn, proc))
        try:
            if turn.stop_reason is not None:  # stopped while its CLI was being started
                await proc.terminate()
            try:
                append = turn.log.append
                async for batch in proc.batches():
                    turn.last_activity = loop.time()
                    for line in batch:
                        classified = events.classify(line)
                        if classified is None:
                            if line.strip():
                                log.info("turn %s: non-JSON line from the CLI: %.300r", turn.id, line)
                            continue
                        kind, obj = classified
                        if obj is not None:  # the few lines the server reads something from
                            if kind == "system/init":
                                await self._on_init(turn, obj)
                            elif kind == "result":
                                turn.result = TurnResult.of(obj)
                                turn.result_at = loop.time()
                        append(line, kind)
                    if turn.first_event_at is None and turn.last_seq:
                        turn.first_event_at = turn.last_activity
                        self.metrics.first_event.observe(turn.first_event_at - turn.started_at)
                    self.recorder.has_new(turn)
                    await turn.log.room(BACKPRESSURE_MAX_WAIT_S)
            except LineTooLong as exc:
                turn.stop(StopCode.LINE_TOO_LONG, str(exc))
                await proc.terminate()
            turn.exit_code = await proc.wait()
            await proc.stderr_done()
        except Exception as exc:
            log.exception("turn %s: reading the CLI failed", turn.id)
            turn.stop(StopCode.INTERNAL, f"The server failed while reading the CLI: {exc}")
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
        try:
            await record_session(self.store, turn, sid)
        except Exception:
            log.exception("turn %s: could not record session %s", turn.id, sid)
        turn.session_id = sid
        self.occupancy.moved(turn, sid)

    async def _watch(self, turn: Turn, proc: CliProcess) -> None:
        """End the turn at its total deadline, after too long a silence, or when the CLI does
        not exit after its result."""
        loop = asyncio.get_running_loop()
        total = self.settings.turn_timeout_s
        idle = self.settings.inactivity_timeout_s
        while True:
            now = loop.time()
            if now >= turn.started_at + total:
                turn.stop(StopCode.TURN_TIMEOUT, f"The turn ran longer than the turn timeout ({total:g}s)")
                break
            if now >= turn.last_activity + idle:
                turn.stop(
                    StopCode.INACTIVITY_TIMEOUT, f"Claude Code printed nothing for {idle:g}s (the inactivity timeout)"
                )
                break
            if turn.result_at is not None and now >= turn.result_at + POST_RESULT_GRACE_S:
                log.warning("turn %s: CLI did not exit %gs after its result; ending it", turn.id, POST_RESULT_GRACE_S)
                break
            await asyncio.sleep(WATCHDOG_TICK_S)
        await proc.terminate()

    # ---- ending ------------------------------------------------------------------------
    def _orphaned(self, turn: Turn) -> None:
        """The last follower of a turn that is not detached went away: cancel it."""
        if turn.stop(StopCode.CLIENT_DISCONNECTED, "The client disconnected"):
            log.info("turn %s: client went away; cancelling", turn.id)
            self._spawn(self._terminate(turn))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _terminate(self, turn: Turn) -> None:
        """End a stopped turn: its process if it runs, its place in the queue if it waits."""
        if turn.process is not None:
            await turn.process.terminate()
        elif turn.ticket is not None and turn.ticket.waiting:
            turn.ticket.release()

    async def cancel(self, turn: Turn, code: StopCode = StopCode.CANCELLED, message: str = "") -> None:
        """End a running or queued turn and wait until it is recorded; its followers receive
        an error event with ``code`` and their streams end. The ending runs in a task of the
        broker's own: a caller that goes away meanwhile cannot cut it short."""
        turn.stop(code, message or "The turn was cancelled")
        await asyncio.shield(self._spawn(self._terminate(turn), name=f"cancel-{turn.id}"))
        await turn.wait()

    async def _finish(self, turn: Turn, proc: CliProcess | None, start_error: BaseException | None = None) -> None:
        """Record how the turn ended, give back its ticket, free its session, end its
        followers' streams. ``proc`` is None for a turn that never ran (queue timeout,
        cancelled while queued, a start that failed)."""
        stderr = proc.stderr_tail() if proc is not None else None
        status, error = turn.outcome(stderr, start_error, self.settings.queue_timeout_s)
        if error is not None and turn.recorded:
            self._append(turn, error.event(), "error", name="error")
        turn.error = error
        if turn.created_workspace and turn.session_id is None:
            # A CLI that died before init leaves no session, so no workspace either.
            await asyncio.to_thread(self.workspaces.discard, turn.workspace)
        loop = asyncio.get_running_loop()
        duration_ms = None
        if proc is not None:
            duration_ms = (turn.result and turn.result.duration_ms) or (loop.time() - turn.started_at) * 1000
        try:
            # The log is complete in SQLite before the turn counts as finished, so that a
            # replay from the database never misses its tail.
            await asyncio.shield(self._record_end(turn, status, duration_ms))
        except Exception:
            log.exception("turn %s: could not record its end", turn.id)
        turn.release_ticket()
        self.metrics.running.set(self.gate.running)
        self.metrics.queue_length.set(self.gate.queued)
        self.metrics.turn_ended(status, turn.model, turn.result)
        if proc is not None:
            self.metrics.turn_duration.observe(loop.time() - turn.started_at)
        self._release(turn)
        turn.finish(status)
        turn.log.close()
        self._log_end(turn, status, duration_ms)
        if proc is not None:
            await proc.close()

    def _log_end(self, turn: Turn, status: TurnStatus, duration_ms: float | None) -> None:
        error = turn.error
        reason = f": {error.code}: {error.message}" if error is not None else ""
        log.log(
            logging.INFO if status is TurnStatus.SUCCEEDED else logging.WARNING,
            "turn %s %s%s",
            turn.id,
            status,
            reason,
            extra={
                "turn_id": turn.id,
                "session_id": turn.session_id,
                "key": turn.principal.name,
                "status": str(status),
                "exit_code": turn.exit_code,
                "duration_ms": round(duration_ms, 1) if duration_ms is not None else None,
                "cost_usd": turn.result.cost_usd if turn.result else None,
                "model": turn.model,
                "error_code": error.code if error else None,
            },
        )

    async def _record_end(self, turn: Turn, status: TurnStatus, duration_ms: float | None) -> None:
        result = turn.result
        if result is not None and turn.options.session_id:
            previous = await self.store.session_cost_before(turn.options.session_id)
            turn.result = result = dataclasses.replace(result, cost_usd=own_cost(result, previous))
        await self.recorder.flush()
        if not turn.recorded:
            return
        await self.store.finish_turn(
            turn.id,
            status=status,
            exit_code=turn.exit_code,
            cost_usd=result.cost_usd if result else None,
            session_cost_usd=result.total_cost_usd if result else None,
            usage=result.usage if result else None,
            num_turns=result.num_turns if result else None,
            error=turn.error.to_json() if turn.error else None,
            last_seq=turn.last_seq,
            model=turn.model,
            duration_ms=duration_ms,
        )
        if turn.session_id is not None:
            await self.store.touch_session(turn.session_id)

    def _release(self, turn: Turn) -> None:
        self.turns.pop(turn.id, None)
        self.occupancy.release(turn)

    # ---- the whole server ----------------------------------------------------------------
    def running(self) -> list[Turn]:
        return list(self.turns.values())

    def running_on(self, session_id: str) -> Turn | None:
        return self.occupancy.running_on(session_id)

    def get(self, turn_id: str) -> Turn | None:
        return self.turns.get(turn_id)

    def follow(self, row: TurnRow, after: int) -> Subscription:
        """A subscription to a turn from seq ``after``: live while it runs, else its record."""
        return Subscription(self.store, row.turn_id, after, live=self.turns.get(row.turn_id), last_seq=row.last_seq)

    async def shutdown(self) -> None:
        """Refuse new turns, end the running and queued ones (their followers hear
        ``server_shutdown``) and wait until each is recorded."""
        self._closing = True
        started = time.monotonic()
        live = list(self.turns.values())
        for turn in live:
            turn.stop(StopCode.SERVER_SHUTDOWN, "The server is shutting down")
        await asyncio.gather(*(self._terminate(t) for t in live), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.recorder.close()
        self.reaper.close()
        log.info("shutdown: ended %d running turn(s) in %.1fs", len(live), time.monotonic() - started)
