"""A finished turn, recorded: its row (with its own cost, whatever CLI ran it) and its log
line. No aiohttp here."""

from __future__ import annotations

import dataclasses
import logging

from claude_server.claude.live import LiveCli
from claude_server.outcome import TurnStatus, own_cost, warm_cost
from claude_server.recorder import Recorder
from claude_server.store import Store
from claude_server.turn import Turn

log = logging.getLogger("claude_server.broker")


async def record_end(
    store: Store, recorder: Recorder, turn: Turn, live: LiveCli | None, status: TurnStatus, duration_ms: float | None
) -> None:
    """The turn's end in the store, with its own cost, once its whole log is there."""
    result = turn.result
    session_cost = result.total_cost_usd if result else None
    if result is not None:
        # The CLI's total is the session's running total in a CLI started for this turn,
        # the CLI's own running total in a warm one (CLI-FACTS, "Interactive mode").
        sid = turn.options.session_id
        previous = await store.session_cost_before(sid) if sid else None
        if turn.warm and live is not None:
            cost = warm_cost(result, live.last_total_cost)
            session_cost = (previous or 0.0) + (cost or 0.0)
        else:
            cost = own_cost(result, previous)
        if live is not None:
            live.last_total_cost = result.total_cost_usd
        turn.result = result = dataclasses.replace(result, cost_usd=cost)
    await recorder.flush()
    if not turn.recorded:
        return
    await store.finish_turn(
        turn.id,
        status=status,
        exit_code=turn.exit_code,
        cost_usd=result.cost_usd if result else None,
        session_cost_usd=session_cost,
        usage=result.usage if result else None,
        num_turns=result.num_turns if result else None,
        error=turn.error.to_json() if turn.error else None,
        last_seq=turn.last_seq,
        model=turn.model,
        duration_ms=duration_ms,
    )
    if turn.session_id is not None:
        await store.touch_session(turn.session_id)


def log_end(turn: Turn, status: TurnStatus, duration_ms: float | None, refused: BaseException | None = None) -> None:
    """One line per finished turn, with what an operator greps for; a turn ``refused``
    before it started gets one line saying why."""
    if refused is not None:
        log.info("turn %s refused before it started: %s", turn.id, refused)
        return
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
