"""End to end: every dollar counted once, with the real CLI against the fake Anthropic API.

The CLI's ``total_cost_usd`` on a resumed session is the session's running total, and a
fork starts from its parent's (docs/cli-behaviour.md, "Costs across turns"); the fake API
bills every request alike, so five one-request turns (new, resume, resume, fork, resume
the fork) each cost the same, while the CLI reports 1, 2, 3, 4 and 5 times that. The
server must record each turn's own cost, and sum only those: per session, in the stats
and in the metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.test_e2e_core import TurnStream, get_json, run_turn

pytestmark = pytest.mark.e2e

# Costs are floats summed in SQLite and in Python: equal up to rounding.
CENT_FRACTION = 1e-9
COST_METRIC = re.compile(r"^claude_server_cost_usd_total\{[^}]*\} (\S+)$", re.M)


def result_of(turn: TurnStream) -> dict[str, Any]:
    assert (turn.last["type"], turn.last["subtype"], turn.last["is_error"]) == ("result", "success", False), turn.last
    return turn.last


def run_cost(result: dict[str, Any]) -> float:
    """What this CLI run spent by its own account."""
    return sum(float(m["costUSD"]) for m in result["model_usage_since_last_result"].values())


async def test_costs_are_counted_once_across_resume_and_fork(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    try:
        first = await run_turn(http, server, {"prompt": "cost one"})
        a = first.session_id
        second = await run_turn(http, server, {"prompt": "cost two", "session_id": a})
        third = await run_turn(http, server, {"prompt": "cost three", "session_id": a})
        fork = await run_turn(http, server, {"prompt": "cost four", "session_id": a, "fork_session": True})
        b = fork.session_id
        assert b != a
        fifth = await run_turn(http, server, {"prompt": "cost five", "session_id": b})
        turns = [first, second, third, fork, fifth]
        assert [t.session_id for t in turns] == [a, a, a, b, b]

        results = [result_of(t) for t in turns]
        each = run_cost(results[0])
        assert each > 0, results[0]
        # The fake API bills alike: the CLI says so, run by run and in its running total.
        assert [run_cost(r) for r in results] == pytest.approx([each] * 5, abs=CENT_FRACTION)
        reported = [float(r["total_cost_usd"]) for r in results]
        # The session's running total; a fork started in stream-json mode counts from 0
        # (measured on 2.1.330; in text mode it started from its parent's total).
        assert reported == pytest.approx([each * n for n in (1, 2, 3, 1, 2)], abs=CENT_FRACTION), reported

        recorded = [await get_json(http, f"{server.url}/api/turns/{t.turn_id}") for t in turns]
        own = [r["cost_usd"] for r in recorded]
        assert own == pytest.approx([each] * 5, abs=CENT_FRACTION), own
        assert [r["session_cost_usd"] for r in recorded] == pytest.approx(reported, abs=CENT_FRACTION)
        assert [r["session_id"] for r in recorded] == [a, a, a, b, b]

        session_a = await get_json(http, f"{server.url}/api/sessions/{a}")
        session_b = await get_json(http, f"{server.url}/api/sessions/{b}")
        assert session_a["total_cost_usd"] == pytest.approx(sum(own[:3]), abs=CENT_FRACTION), session_a
        assert session_b["total_cost_usd"] == pytest.approx(sum(own[3:]), abs=CENT_FRACTION), session_b
        assert (session_a["turn_count"], session_b["turn_count"], session_b["forked_from"]) == (3, 2, a)

        stats = await get_json(http, f"{server.url}/api/stats")
        assert stats["total"]["turns"] == 5, stats
        assert stats["total"]["cost_usd"] == pytest.approx(sum(own), abs=CENT_FRACTION), stats
        for group_by in ("day", "model"):
            grouped = await get_json(http, f"{server.url}/api/stats?group_by={group_by}")
            assert sum(g["cost_usd"] for g in grouped["groups"]) == pytest.approx(sum(own), abs=CENT_FRACTION)

        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 200
            metrics = await resp.text()
        counted = [float(v) for v in COST_METRIC.findall(metrics)]
        assert counted, metrics
        assert sum(counted) == pytest.approx(sum(own), abs=CENT_FRACTION), metrics
    finally:
        await asyncio.to_thread(stop_server, server)
