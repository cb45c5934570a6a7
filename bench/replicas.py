#!/usr/bin/env python3
"""Two replicas on one database: turns per second against one replica with the stand-in CLI
(``tests/fake_claude.py``), and how long an event takes to reach a follower on the other
replica (it reads the shared event log; see ``turn.Subscription``), against the same event
reaching a client of the replica that runs the turn.

Run from the repository root: ``python bench/replicas.py [--turns N] [--concurrency C]
[--follows N] [--db postgresql://... | --postgres] [--json]``. Without ``--db`` both replicas share one
SQLite file in a temporary directory. Target: p50 of the follower's extra delay under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

TARGET_P50_MS = 100.0
LINES = 20  # assistant lines of one followed turn
LINE_GAP_S = 0.05  # between them


def replica(shared: Path, name: str, api: FakeAnthropic, db: str | None, concurrency: int) -> RunningServer:
    env = {
        "CLAUDE_SERVER_DB": db or str(shared / "sessions.db"),
        "CLAUDE_SERVER_WORKSPACE_ROOT": str(shared / "workspace"),
        "CLAUDE_SERVER_CLAUDE_CONFIG_DIR": str(shared / "claude-config"),
        "CLAUDE_SERVER_REPLICA_ID": name,
        "CLAUDE_SERVER_MAX_CONCURRENT": str(concurrency),
        "CLAUDE_SERVER_MAX_WARM": "0",
        "CLAUDE_SERVER_LOG_LEVEL": "WARNING",
    }
    return start_server(shared / name, api, FAKE_CLI, env)


async def throughput(http: aiohttp.ClientSession, server: RunningServer, turns: int, concurrency: int) -> float:
    """Turns per second: ``turns`` non-streaming turns, ``concurrency`` at a time."""
    lanes = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with lanes, http.post(f"{server.url}/api/claude", json={"prompt": f"t{i}", "stream": False}) as r:
            body = await r.json()
            assert r.status == 200, body

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(turns)))
    return turns / (time.perf_counter() - t0)


async def arrivals(resp: aiohttp.ClientResponse) -> dict[str, float]:
    """When each event id arrived."""
    seen: dict[str, float] = {}
    buffer = b""
    while chunk := await resp.content.readany():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"id:"):
                    seen[line[3:].strip().decode()] = time.perf_counter()
    return seen


async def follow_delays(http: aiohttp.ClientSession, owner: RunningServer, other: RunningServer) -> list[float]:
    """Per event of one turn: ms between its arrival at the owner's client and at a follower
    on the other replica."""
    prompt = f"@lines={LINES} @slow={LINE_GAP_S} follow me"
    async with http.post(f"{owner.url}/api/claude", json={"prompt": prompt}) as resp:
        assert resp.status == 200, await resp.text()
        turn_id = resp.headers["X-Turn-Id"]
        mine = asyncio.create_task(arrivals(resp))
        async with http.get(f"{other.url}/api/turns/{turn_id}/events") as followed:
            assert followed.status == 200, await followed.text()
            theirs = await arrivals(followed)
        here = await mine
    # The events stored before the follower connected are a replay, not a delay: skipped.
    first = min(theirs.values())
    return [(theirs[k] - here[k]) * 1000 for k in here if k in theirs and here[k] > first]


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    api = FakeAnthropic().start()
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp)
        a = replica(shared, "a", api, args.db, args.concurrency)
        b = replica(shared, "b", api, args.db, args.concurrency)
        try:
            async with aiohttp.ClientSession() as http:
                await throughput(http, a, args.concurrency, args.concurrency)  # warm-up
                rate = await throughput(http, a, args.turns, args.concurrency)
                delays: list[float] = []
                for _ in range(args.follows):
                    delays.extend(await follow_delays(http, a, b))
        finally:
            stop_server(a)
            stop_server(b)
            api.stop()
    return {
        "database": "postgresql" if args.db else "sqlite",
        "turns": args.turns,
        "concurrency": args.concurrency,
        "turns_per_s": round(rate, 1),
        "follower_events": len(delays),
        "follower_p50_ms": round(pct(delays, 50), 1),
        "follower_p90_ms": round(pct(delays, 90), 1),
        "target_p50_ms": TARGET_P50_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--follows", type=int, default=5, help="followed turns (20 events each)")
    parser.add_argument("--db", help="a postgresql:// URL (default: one SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="start a PostgreSQL of its own (as the tests do)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = None
    if args.postgres:
        from tests.postgres_server import PostgresServer

        server = PostgresServer().start()
        args.db = asyncio.run(server.new_database())
    try:
        result = asyncio.run(main_async(args))
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(result))
        return
    print(f"database: {result['database']}")
    print(
        f"turns per second against one replica: {result['turns_per_s']} "
        f"({args.turns} turns, {args.concurrency} at a time)"
    )
    print(
        f"event to a follower on the other replica, after the owner's client: p50 {result['follower_p50_ms']} ms, "
        f"p90 {result['follower_p90_ms']} ms ({result['follower_events']} events; target p50 < {TARGET_P50_MS:g} ms)"
    )


if __name__ == "__main__":
    main()
