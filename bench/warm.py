#!/usr/bin/env python3
"""Warm against cold follow-up turns, with the real Claude Code CLI and the fake Anthropic API.

Two servers run side by side: one keeps each session's CLI warm between turns (the
default), the other starts a new CLI with ``--resume`` for every turn
(``CLAUDE_SERVER_WARM_IDLE_TIMEOUT=0``). Each gets one session, then turns 2..N alternate
between them, so that machine noise hits both alike. Printed: time to first event (request
sent -> first ``data:`` line) and to the end of the stream, median and p90 per path, and the
ratio of the medians (target: warm at most 1/10 of cold to the first event).

Run from the repository root: ``python bench/warm.py [--turns N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.conftest import start_server, stop_server  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

TARGET_RATIO = 0.1


async def turn(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> tuple[float, float, str]:
    """(ms to the first event, ms to the end, the session id)."""
    t0 = time.perf_counter()
    first: float | None = None
    session = ""
    pending = b""
    async with http.post(f"{url}/api/claude", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {(await resp.text())[:500]}")
        async for chunk in resp.content.iter_any():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"event: error"):
                    raise RuntimeError(f"the server streamed an error: {lines}")
                if line.startswith(b"data:"):
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
                    obj = json.loads(line[5:])
                    session = obj.get("session_id") or session
    end = (time.perf_counter() - t0) * 1000
    if first is None:
        raise RuntimeError("the stream carried no event")
    return first, end, session


def summary(values: list[float]) -> dict[str, float]:
    p90 = statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    return {"median": statistics.median(values), "p90": p90}


async def run(args: argparse.Namespace, urls: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {path: {"first": [], "end": []} for path in urls}
    sessions: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout)) as http:
        for path, url in urls.items():
            _, _, sessions[path] = await turn(http, url, {"prompt": args.prompt})
        for i in range(args.turns):
            for path in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
                body = {"prompt": f"{args.prompt} {i + 2}", "session_id": sessions[path]}
                first, end, _ = await turn(http, urls[path], body)
                print(f"  turn {i + 2:>3} {path}: first {first:7.1f} ms, end {end:7.1f} ms", flush=True)
                samples[path]["first"].append(first)
                samples[path]["end"].append(end)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="follow-up turns per path (default 20)")
    parser.add_argument("--prompt", default="hello", help="the prompt of every turn (default 'hello')")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one turn may take (default 120)")
    parser.add_argument(
        "--cli", type=Path, default=ROOT / "node_modules" / ".bin" / "claude", help="the CLI (default: the pinned one)"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    args.cli = args.cli.absolute()
    if not args.cli.exists():
        parser.error(f"no CLI at {args.cli}: run `make setup` (npm ci) first, or pass --cli")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp_name:
        tmp = Path(tmp_name)
        api = FakeAnthropic().start()
        servers = {}
        try:
            for path, idle in (("warm", "300"), ("cold", "0")):
                extra = {"CLAUDE_SERVER_WARM_IDLE_TIMEOUT": idle, "CLAUDE_SERVER_LOG_LEVEL": "INFO"}
                servers[path] = start_server(tmp / path, api, args.cli, {**extra, "PYTHONPATH": str(ROOT)})
            samples = asyncio.run(run(args, {path: s.url for path, s in servers.items()}))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            for server in servers.values():
                stop_server(server)
            api.stop()
    out = {path: {key: summary(values) for key, values in kinds.items()} for path, kinds in samples.items()}
    ratio = out["warm"]["first"]["median"] / out["cold"]["first"]["median"]
    print(f"\n{args.turns} follow-up turns per path, one session each")
    for path in ("warm", "cold"):
        f, e = out[path]["first"], out[path]["end"]
        print(
            f"  {path}: first event median {f['median']:7.1f} ms (p90 {f['p90']:7.1f}), "
            f"end median {e['median']:7.1f} ms (p90 {e['p90']:7.1f})"
        )
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"  warm/cold, first event: {ratio:.3f} (target <= {TARGET_RATIO}: {verdict})")
    if args.json:
        print(json.dumps({"turns": args.turns, **out, "ratio_first": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
