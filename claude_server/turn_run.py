"""One turn running in a CLI process: the sink its lines go to while it runs.

The CLI's reader (``claude.live``) hands each batch of lines here: they go into the turn's
log as they are (the recorder makes them durable before followers see them); ``init``
records the session, ``result`` ends the turn. The CLI's ``can_use_tool`` requests go to the
turn's ``Prompts``. ``done`` is set at the result, or when the CLI's output ends without
one. No aiohttp here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from claude_server.claude.live import Line, LiveCli
from claude_server.outcome import StopCode, TurnResult
from claude_server.prompts import Prompts, encode
from claude_server.turn import Turn

log = logging.getLogger(__name__)

# A flood waits at most this long per batch for a slow follower to make room in memory.
BACKPRESSURE_MAX_WAIT_S = 1.0
# The watchdog looks at the deadlines at least this often.
WATCHDOG_TICK_S = 1.0


class TurnRun:
    def __init__(
        self,
        turn: Turn,
        live: LiveCli,
        *,
        on_init: Callable[[Turn, dict[str, Any]], Awaitable[None]],
        on_api_retry: Callable[[Turn, dict[str, Any]], None],
        has_new: Callable[[Turn], None],
        first_event: Callable[[float], None],
        permission_timeout_s: float,
    ) -> None:
        self.turn = turn
        self.live = live
        self._on_init = on_init
        self._on_api_retry = on_api_retry
        self._has_new = has_new
        self._first_event = first_event
        self.done = asyncio.Event()
        self.printed = False  # any line of the CLI's reached the turn
        self.prompts = Prompts(live.answer, self._log_event, permission_timeout_s)

    def _log_event(self, event: dict[str, Any]) -> None:
        if self.turn.log.closed:
            return
        self.turn.log.append(encode(event), event["type"], event["type"])
        self._has_new(self.turn)

    async def lines(self, batch: list[Line]) -> None:
        turn = self.turn
        if self.done.is_set():  # after the result: the next turn's business, or stray
            log.debug("turn %s: %d line(s) after its result dropped", turn.id, len(batch))
            return
        self.printed = True
        loop = asyncio.get_running_loop()
        turn.last_activity = loop.time()
        append = turn.log.append
        for line, kind, obj in batch:
            if obj is not None:  # the few lines the server reads something from
                if kind == "system/init":
                    await self._on_init(turn, obj)
                elif kind == "system/api_retry":
                    self._on_api_retry(turn, obj)
                elif kind == "result":
                    turn.result = TurnResult.of(obj)
                    turn.result_at = loop.time()
            append(line, kind)
        if turn.first_event_at is None and turn.last_seq:
            turn.first_event_at = turn.last_activity
            self._first_event(turn.first_event_at - turn.started_at)
        self._has_new(turn)
        if turn.result is not None:
            self.done.set()
            return
        await turn.log.room(BACKPRESSURE_MAX_WAIT_S)

    def control_request(self, request_id: str, request: dict[str, Any]) -> None:
        if request.get("subtype") == "can_use_tool" and not self.done.is_set():
            self.turn.last_activity = asyncio.get_running_loop().time()
            self.prompts.ask(request_id, request)
            return
        log.warning(
            "turn %s: the CLI asked %r, which this server does not answer", self.turn.id, request.get("subtype")
        )
        self.live.refuse(request_id, "This server does not answer that request")

    def control_cancelled(self, request_id: str) -> None:
        self.prompts.cancelled(request_id)

    def ended(self) -> None:
        self.done.set()

    @property
    def waiting_for_client(self) -> bool:
        return bool(self.prompts.pending)

    async def deadline(self, total_s: float, idle_s: float) -> None:
        """Return once the turn ran past its total deadline, or went silent for too long
        (not counting the time a request waits for the client), with the turn stopped."""
        loop = asyncio.get_running_loop()
        turn = self.turn
        while True:
            now = loop.time()
            if now >= turn.started_at + total_s:
                turn.stop(StopCode.TURN_TIMEOUT, f"The turn ran longer than the turn timeout ({total_s:g}s)")
                return
            if self.waiting_for_client:
                turn.last_activity = now
            elif now >= turn.last_activity + idle_s:
                turn.stop(
                    StopCode.INACTIVITY_TIMEOUT,
                    f"Claude Code printed nothing for {idle_s:g}s (the inactivity timeout)",
                )
                return
            await asyncio.sleep(WATCHDOG_TICK_S)
