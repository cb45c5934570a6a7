"""The broker: starts, runs, finishes, cancels and recovers turns.

A turn is a CLI run that belongs to the server, not to the HTTP request that asked for it.
``start`` resolves the session, passes the gate (policy, budget, rate, slot or queue; or
waits for its session, ``if_busy``), creates the turn's row and writes its prompt to a CLI:
the session's warm one from the pool, or a new one (``--resume``). The CLI's lines reach the
turn's log through its ``TurnRun`` (the recorder makes them durable before followers see
them); the turn ends at the CLI's ``result``, or when the CLI exits. ``_finish`` is the one
place a turn ends, whatever path it took: it gives back the admission ticket, and the CLI
goes back to the pool or is ended. Cancelling a turn interrupts it through the control
protocol and keeps the CLI; only when that fails is the CLI ended by signal. Nothing here
imports aiohttp: routes render the events, the broker only produces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from claude_server.broker_settings import BrokerSettings
from claude_server.claude import events
from claude_server.claude.command import TurnOptions
from claude_server.claude.live import LiveCli
from claude_server.claude.probe import CliInfo, Credentials
from claude_server.claude.reaper import Reaper
from claude_server.cli_supply import SPAWN_BACKOFF_S, CliSupply
from claude_server.errors import ApiError, ServiceUnavailable
from claude_server.gate import Gate
from claude_server.metrics import Metrics
from claude_server.occupancy import Occupancy
from claude_server.outcome import StopCode, TurnStatus
from claude_server.placement import record_session, resolve_session, start_error, workspace_for
from claude_server.principal import OPEN, Principal
from claude_server.provider_routing import ProviderRouting
from claude_server.providers import Providers
from claude_server.recorder import Recorder
from claude_server.recovery import recover
from claude_server.replicas import Replicas
from claude_server.store import Store, TurnRow
from claude_server.subscription import Subscription
from claude_server.turn import Turn
from claude_server.turn_end import log_end, record_end
from claude_server.turn_run import TurnRun
from claude_server.turn_stop import terminate
from claude_server.workspaces import Workspaces

log = logging.getLogger(__name__)

# A CLI that is not kept warm gets this long after its result to exit by itself once its
# input is closed (it still writes its transcript; reported elsewhere: a CLI that never exits).
POST_RESULT_GRACE_S = 10.0


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
        providers: Providers | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.store = store
        self.workspaces = workspaces
        self.metrics = metrics or Metrics()
        self.recorder = Recorder(store)
        self.reaper = Reaper()
        self.turns: dict[str, Turn] = {}  # not yet finished
        self.occupancy = Occupancy()
        self.routing = ProviderRouting(providers, store)
        self.supply = CliSupply(settings, store, self.reaper, self.metrics, cli)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.replicas = Replicas.of(settings, store, self.reaper)

    async def open(self) -> None:
        """Record this replica, clean up after a previous process, start recording events."""
        await self.replicas.register()
        await recover(self.store, self.reaper, self.workspaces, self.settings.server_id, self.replicas.spared())
        self.recorder.start()
        self.replicas.start()

    # ---- starting ----------------------------------------------------------------------
    def deleting(self, session_id: str) -> contextlib.AbstractContextManager[None]:
        """While a session is being deleted no turn may start on it."""
        return self.occupancy.deleting(session_id)

    @property
    def cli(self) -> CliInfo:
        return self.supply.cli

    async def check_credentials(self, max_age_s: float = 0.0) -> Credentials:
        return await self.supply.credentials(max_age_s)

    async def start(
        self,
        options: TurnOptions,
        *,
        detach: bool = False,
        conversation_id: str | None = None,
        workspace_name: str | None = None,
        principal: Principal = OPEN,
        if_busy: str = "reject",
        background: bool = False,
        spawn_retries: int = 0,
    ) -> Subscription:
        """Start a turn (or queue it for a slot) and return the caller's subscription to it.

        ``conversation_id`` resumes the session bound to it, or binds the new session;
        ``workspace_name`` puts a new session in a shared, named workspace; ``if_busy``
        says what to do when a turn runs on the session: ``reject`` (409), ``queue`` (run
        after it) or ``interrupt`` (end it, then run). Raises ``ApiError`` for what the
        client should hear before any stream, checked in this order: server closing or CLI
        missing (503), bad combination (400), unknown or foreign session (404), policy
        (403), budget (429), busy session (409), rate and queue (429). A ``background``
        turn (a task) takes only a spare slot, else raises ``NoSpareSlot``; a CLI that fails
        before it prints anything is started again up to ``spawn_retries`` times."""
        if self._closing:
            raise ServiceUnavailable("The server is shutting down", code="shutting_down")
        await self.supply.available()
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
        turn.spawn_retries = spawn_retries
        now = await self.gate.admit(turn, lambda: self.occupancy.check(turn, if_busy), background)
        # From here on the turn owns its ticket (or its place in the session's line): every
        # way out goes through _finish.
        self.turns[turn.id] = turn
        if self._closing:  # the shutdown began while this start awaited
            turn.stop(StopCode.SERVER_SHUTDOWN, "The server is shutting down")
        session_free: asyncio.Future[bool] | None = None
        busy_with = None
        if now:
            self.occupancy.claim(turn)
        else:
            assert session is not None
            busy_with = self.occupancy.running_on(session.session_id)
            session_free = self.occupancy.enqueue(turn, front=if_busy == "interrupt")
        self.metrics.queue_length.set(self.gate.queued)
        subscription = Subscription(self.store, turn.id, 0, live=turn)
        try:
            self.routing.choose(turn)
            if session is not None and conversation_id is not None and session.conversation_id is None:
                await self.store.bind_conversation(session.session_id, conversation_id)
            await self.replicas.claim(turn)  # 409 while another replica runs a turn on it
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
            await self.routing.bind(turn)
            if turn.status is TurnStatus.RUNNING and turn.stop_reason is None:
                await self._launch(turn)
        except BaseException as exc:
            heard = start_error(exc, self.cli.path, conversation_id)
            # Refused (a 4xx: busy on another replica, a conversation bound meanwhile) rather
            # than failed: not counted as a turn, nor against the key's rate limit.
            refused = isinstance(heard, ApiError) and heard.status < 500 and not turn.recorded
            await self._finish(turn, None, start_error=exc, refused=refused)
            subscription.close()  # after: closing the last follower of a live turn cancels it
            raise heard from exc
        if turn.process is not None:
            self._spawn(self._run_to_end(turn), name=f"turn-{turn.id}")
        elif session_free is not None:
            self._spawn(self._after_session(turn, session_free), name=f"waiting-{turn.id}")
            if if_busy == "interrupt" and busy_with is not None:
                busy_with.stop(StopCode.CANCELLED, "Interrupted by a new message on the session")
                self._spawn(self._terminate(busy_with), name=f"interrupt-{busy_with.id}")
        else:
            self._spawn(self._queued(turn), name=f"queued-{turn.id}")
        return subscription

    async def _launch(self, turn: Turn) -> None:
        """Make the workspace ready, take the session's warm CLI or start one, and write
        the prompt to it."""
        created = await asyncio.to_thread(self.workspaces.prepare, turn.workspace)
        turn.created_workspace = created and turn.create_workspace
        again, live = turn.process is not None, await self.supply.take(turn)
        turn.process = live
        turn.warm = live.turns > 0
        turn.run = TurnRun(
            turn,
            live,
            on_init=self._on_init,
            on_api_retry=self.routing.api_retry,
            has_new=self.recorder.has_new,
            first_event=self.metrics.first_event.observe,
            permission_timeout_s=self.settings.permission_timeout_s,
        )
        live.attach(turn.run)
        turn.status = TurnStatus.RUNNING
        turn.started_at = turn.last_activity = asyncio.get_running_loop().time()
        if turn.recorded:
            await self.store.set_turn_process(turn.id, live.marker)
        await live.send(turn.options.prompt)  # a CLI gone meanwhile ends the turn through its run
        if not again:
            self.metrics.turns_started.inc()
        self.metrics.running.set(self.gate.running)
        log.info(
            "turn %s started (session %s, pid %d, %s)",
            turn.id,
            turn.options.session_id or "new",
            live.pid,
            "warm" if turn.warm else "cold",
        )

    async def _after_session(self, turn: Turn, session_free: asyncio.Future[bool]) -> None:
        """Wait until the turn before it on the session ended, then take a slot and run."""
        try:
            mine = await session_free
        except asyncio.CancelledError:
            mine = False
        if not mine or turn.stop_reason is not None:
            await self._finish(turn, None)
            return
        try:
            self.gate.enter(turn)
        except Exception as exc:
            turn.stop(StopCode.QUEUE_TIMEOUT, str(exc))
            await self._finish(turn, None)
            return
        await self._queued(turn)

    async def _queued(self, turn: Turn) -> None:
        """Wait for a slot (at most the queue timeout), then run."""
        ticket = turn.ticket
        assert ticket is not None
        if ticket.admitted is not None and ticket.slot is None:
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
            await self._finish(turn, turn.process, start_error=exc)
            return
        await self._run_to_end(turn)

    # ---- running -----------------------------------------------------------------------
    async def _run_to_end(self, turn: Turn) -> None:
        """Run the launched turn. When its CLI ended before it printed anything, start
        another (``--resume``) that the client cannot tell from the first: at once when it
        was a warm CLI that had died between turns, after a backoff when a new one crashed
        and the turn has ``spawn_retries`` left."""
        failures = 0
        while True:
            assert turn.process is not None
            warm = turn.warm
            if await self._run(turn, turn.process):
                return
            if not warm:
                failures += 1
                await asyncio.sleep(SPAWN_BACKOFF_S * 2 ** (failures - 1))
            if turn.stop_reason is not None:  # stopped meanwhile
                await self._finish(turn, None)
                return
            try:
                await self._launch(turn)
            except Exception as exc:
                await self._finish(turn, turn.process, start_error=exc)
                return

    async def _run(self, turn: Turn, live: LiveCli) -> bool:
        """Wait for the turn's result (or its CLI's end); a CLI that is not to stay warm is
        then given its time to exit by itself. False (and the turn not finished) when the
        turn's warm CLI was found dead before it printed anything."""
        run = turn.run
        assert run is not None
        watchdog = asyncio.create_task(self._watch(run))
        lost = False
        try:
            if turn.stop_reason is not None:  # stopped while its CLI was being started
                await self._terminate(turn)
            await run.done.wait()
            lost = not run.printed and not live.alive and turn.stop_reason is None
            lost = lost and (turn.warm or turn.spawn_retries > 0)
            if lost:
                if not turn.warm:
                    turn.spawn_retries -= 1
                    tail = live.process.stderr_tail()
                    log.warning("turn %s: its CLI ended before printing anything (stderr: %.300r)", turn.id, tail)
                log.info("turn %s: its CLI %s is gone; starting a new one", turn.id, live.marker)
                return False
            if live.failure is not None:
                code = StopCode.LINE_TOO_LONG if live.line_too_long else StopCode.INTERNAL
                turn.stop(code, live.failure)
            if not self.supply.keeps(turn, live, self._closing):
                await live.end(POST_RESULT_GRACE_S)
            if not live.process.running:
                turn.exit_code = await live.process.wait()
                await live.process.stderr_done()
        except Exception as exc:
            log.exception("turn %s: running the CLI failed", turn.id)
            turn.stop(StopCode.INTERNAL, f"The server failed while running the CLI: {exc}")
            await live.close()
        finally:
            watchdog.cancel()
            if lost:
                await self.supply.retire(live)
            else:
                await self._finish(turn, live)
        return True

    async def _on_init(self, turn: Turn, obj: dict[str, Any]) -> None:
        model = obj.get("model")
        if isinstance(model, str):
            turn.model = model
        sid = events.session_id(obj)
        if turn.process is not None and sid is not None:
            turn.process.session_id = sid
        if sid is None or sid == turn.session_id:
            return
        try:
            await record_session(self.store, turn, sid)
            await self.routing.session_recorded(turn, sid)
            await self.replicas.claim(turn, sid)
        except Exception:
            log.exception("turn %s: could not record session %s", turn.id, sid)
        turn.session_id = sid
        self.occupancy.moved(turn, sid)

    # ---- ending ------------------------------------------------------------------------
    async def _watch(self, run: TurnRun) -> None:
        await run.deadline(self.settings.turn_timeout_s, self.settings.inactivity_timeout_s)
        await self._terminate(run.turn)

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
        await terminate(turn, self.occupancy)

    async def cancel(self, turn: Turn, code: StopCode = StopCode.CANCELLED, message: str = "") -> None:
        """End a running or queued turn and wait until it is recorded; its followers receive
        an error event with ``code`` and their streams end. The ending runs in a task of the
        broker's own: a caller that goes away meanwhile cannot cut it short."""
        turn.stop(code, message or "The turn was cancelled")
        await asyncio.shield(self._spawn(self._terminate(turn), name=f"cancel-{turn.id}"))
        await turn.wait()

    async def stop_session(self, session_id: str, code: StopCode, message: str) -> None:
        """End everything of a session: the turns waiting for it, the one running on it,
        its warm CLI (the session is being deleted)."""
        for waiting in self.occupancy.waiting_on(session_id):
            await self.cancel(waiting, code, message)
        running = self.running_on(session_id)
        if running is not None:
            await self.cancel(running, code, message)
        await self.supply.end_session(session_id)

    async def _finish(
        self, turn: Turn, live: LiveCli | None, start_error: BaseException | None = None, refused: bool = False
    ) -> None:
        """Record how the turn ended, give back its ticket, free its session, end its
        followers' streams, and keep its CLI warm or end it. ``live`` is None for a turn
        that never ran (queue timeout, cancelled while queued, a start that failed or was
        ``refused``)."""
        if turn.run is not None:
            turn.run.prompts.deny_all("The turn ended", "server", tell_cli=False)
        exited = live is not None and (turn.result is None or not live.process.running)
        stderr = live.process.stderr_tail() if live is not None and exited else None
        status, error = turn.outcome(stderr, start_error, self.settings.queue_timeout_s)
        if error is not None and turn.recorded:
            turn.log.append(error.event(), "error", "error")
            self.recorder.has_new(turn)
        turn.error = error
        if turn.created_workspace and turn.session_id is None:
            # A CLI that died before init leaves no session, so no workspace either.
            await asyncio.to_thread(self.workspaces.discard, turn.workspace)
        loop = asyncio.get_running_loop()
        duration_ms = None
        if live is not None:
            duration_ms = (turn.result and turn.result.duration_ms) or (loop.time() - turn.started_at) * 1000
        try:
            # The log is complete in SQLite before the turn counts as finished, so that a
            # replay from the database never misses its tail.
            await asyncio.shield(record_end(self.store, self.recorder, turn, live, status, duration_ms))
        except Exception:
            log.exception("turn %s: could not record its end", turn.id)
        turn.release_ticket()
        self.routing.ended(turn)
        self.metrics.running.set(self.gate.running)
        self.metrics.queue_length.set(self.gate.queued)
        if refused:
            await self.gate.give_back(turn)
        else:
            self.metrics.turn_ended(status, turn.model, turn.result)
        if live is not None:
            self.metrics.turn_duration.observe(loop.time() - turn.started_at)
        # Into the pool before the session is free: a turn waiting for it takes this CLI.
        kept = live is not None and self.supply.keeps(turn, live, self._closing) and self.supply.keep(live)
        self._release(turn)
        await self.replicas.release(turn, self.running_on)
        turn.finish(status)
        turn.log.close()
        log_end(turn, status, duration_ms, start_error if refused else None)
        if live is not None and not kept:
            await self.supply.retire(live)

    def _release(self, turn: Turn) -> None:
        self.turns.pop(turn.id, None)
        self.occupancy.leave(turn)  # a turn that ended while waiting for its session
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
        return Subscription.of_row(self.store, row, after, self.turns.get(row.turn_id))

    async def shutdown(self) -> None:
        """Refuse new turns, end the running and queued ones (their followers hear
        ``server_shutdown``) and wait until each is recorded; end every warm CLI."""
        self._closing = True
        started = time.monotonic()
        live = list(self.turns.values())
        for turn in live:
            turn.stop(StopCode.SERVER_SHUTDOWN, "The server is shutting down")
        await asyncio.gather(*(self._terminate(t) for t in live), return_exceptions=True)
        while self._tasks:  # including those of turns whose start was under way
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        warm = await self.supply.close()
        await self.recorder.close()
        await self.replicas.close()
        self.reaper.close()
        log.info(
            "shutdown: ended %d running turn(s) and %d warm CLI(s) in %.1fs",
            len(live),
            warm,
            time.monotonic() - started,
        )
