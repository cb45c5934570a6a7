"""Ending a stopped turn: an interrupt through the control protocol when it was cancelled
(its CLI stays, warm), else, or when the interrupt is not answered in time, its CLI ended by
signal; a turn still waiting leaves its place. No aiohttp here."""

from __future__ import annotations

import asyncio
import logging

from claude_server.claude.live import ControlError
from claude_server.cli_supply import INTERRUPTING
from claude_server.occupancy import Occupancy
from claude_server.turn import Turn

log = logging.getLogger("claude_server.broker")

# An interrupt through the control protocol ends a turn within milliseconds (measured);
# without the CLI's result within this long, the CLI is ended by signal instead.
INTERRUPT_GRACE_S = 3.0


async def terminate(turn: Turn, occupancy: Occupancy) -> None:
    """End a stopped turn: interrupt it (its CLI stays) when it was cancelled, else, or
    when the interrupt is not answered in time, end its CLI; a waiting turn leaves its
    place in the queue or in its session's line."""
    live, run = turn.process, turn.run
    if live is None or run is None:
        if turn.ticket is not None and turn.ticket.waiting:
            turn.ticket.release()
        elif turn.ticket is None:
            occupancy.leave(turn)
        return
    stop = turn.stop_reason
    run.prompts.deny_all(stop.message if stop else "The turn was stopped", "interrupt", interrupt=True)
    if stop is not None and stop.code in INTERRUPTING and live.alive and not run.done.is_set():
        try:
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                await live.control("interrupt")
                await run.done.wait()
            return
        except (ControlError, TimeoutError) as exc:
            log.warning("turn %s: interrupt failed (%s); ending its CLI", turn.id, exc or "no result in time")
    await live.process.terminate()
