#!/usr/bin/env python3
"""Latency of one turn with the real Claude Code CLI against the fake Anthropic API:
through claude-server (POST /api/claude, SSE) versus the same CLI spawned directly.

Run from the repository root: ``python bench/latency.py [--turns N] [--json]``.
The two paths alternate turn by turn (after warm-up turns of each) so that machine noise
hits both alike. Time to first event: request sent -> first ``data:`` line (server), or
spawn -> first stdout line (direct). Time to end: -> end of the response / process exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.conftest import base_environ, start_server, stop_server  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

ARGV = ["-p", "--verbose", "--output-format", "stream-json"]  # what the server passes
TARGET_MS, TARGET_PCT = 15.0, 5.0
MIN_TURNS_FOR_VERDICT = 10  # below this the interval of the median means little


@dataclass
class Sample:
    first_ms: float
    end_ms: float


def stats(samples: list[Sample]) -> dict[str, float]:
    """Median and p90 of the time to first event and to the end."""
    out: dict[str, float] = {}
    for key in ("first_ms", "end_ms"):
        values = [getattr(x, key) for x in samples]
        out[f"median_{key}"] = statistics.median(values)
        out[f"p90_{key}"] = statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    return out


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def is_result(line: bytes) -> bool:
    try:
        return bool(json.loads(line).get("type") == "result")
    except (ValueError, AttributeError):
        return False


async def via_server(http: aiohttp.ClientSession, url: str, prompt: str) -> Sample:
    first: float | None = None
    pending = b""
    data_lines = []
    t0 = time.perf_counter()
    async with http.post(f"{url}/api/claude", json={"prompt": prompt}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {(await resp.text())[:500]}")
        async for chunk in resp.content.iter_any():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            data = [line for line in lines if line.startswith(b"data:")]
            if data and first is None:
                first = ms_since(t0)
            data_lines += data
            if any(line.startswith(b"event: error") for line in lines):
                raise RuntimeError(f"the server streamed an error: {lines}")
    end = ms_since(t0)
    if first is None or not is_result(data_lines[-1].removeprefix(b"data:")):
        raise RuntimeError(f"the stream did not end with a result: {data_lines[-1:]!r}")
    return Sample(first, end)


async def via_cli(cli: Path, env: dict[str, str], cwd: Path, prompt: str) -> Sample:
    cwd.mkdir(parents=True)
    t0 = time.perf_counter()
    pipe = subprocess.PIPE  # in a session of its own, like the server starts it
    proc = await asyncio.create_subprocess_exec(
        str(cli), *ARGV, stdin=pipe, stdout=pipe, stderr=pipe, cwd=cwd, env=env, start_new_session=True
    )
    try:
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(prompt.encode())
        await proc.stdin.drain()
        proc.stdin.close()
        stderr = asyncio.ensure_future(proc.stderr.read())
        await proc.stdout.readline()
        first = ms_since(t0)
        rest = await proc.stdout.read()
        code = await proc.wait()
        end = ms_since(t0)
        err = await stderr
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if code != 0 or not is_result(rest.rstrip(b"\n").rsplit(b"\n", 1)[-1]):
        raise RuntimeError(f"the CLI exited {code} without a result; stderr: {err[-500:]!r}")
    return Sample(first, end)


async def run(args: argparse.Namespace, url: str, direct_env: dict[str, str], tmp: Path) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {"server": [], "direct": []}
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for i in range(-args.warmup, args.turns):
            # Alternate which path goes first too, so that neither always follows the other.
            for path in ("server", "direct") if i % 2 == 0 else ("direct", "server"):
                async with asyncio.timeout(args.timeout):
                    if path == "server":
                        sample = await via_server(http, url, args.prompt)
                    else:
                        cwd = tmp / "direct-ws" / f"turn-{i + args.warmup}"
                        sample = await via_cli(args.cli, direct_env, cwd, args.prompt)
                label = "warm-up" if i < 0 else f"turn {i + 1}/{args.turns}"
                print(
                    f"  {label:>12} {path:>6}: first {sample.first_ms:7.1f} ms, end {sample.end_ms:7.1f} ms", flush=True
                )
                if i >= 0:
                    samples[path].append(sample)
    return samples


def cli_version(cli: Path) -> str:
    done = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def median_ci(values: list[float]) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median (order statistics)."""
    ordered, n = sorted(values), len(values)
    lo = max(0, math.floor(n / 2 - 0.98 * math.sqrt(n)))
    hi = min(n - 1, math.ceil(n / 2 + 0.98 * math.sqrt(n)))
    return ordered[lo], ordered[hi]


def report(version: str, turns: int, samples: dict[str, list[Sample]]) -> dict[str, object]:
    results = {path: stats(s) for path, s in samples.items()}
    server, direct = results["server"], results["direct"]
    over_first = server["median_first_ms"] - direct["median_first_ms"]
    over_end = server["median_end_ms"] - direct["median_end_ms"]
    pct_first = 100 * over_first / direct["median_first_ms"]
    pct_end = 100 * over_end / direct["median_end_ms"]
    # Turn k of both paths ran back to back: their differences cancel the machine's slow drift.
    pairs = list(zip(samples["server"], samples["direct"], strict=True))
    paired_first = [s.first_ms - d.first_ms for s, d in pairs]
    paired_end = [s.end_ms - d.end_ms for s, d in pairs]
    ci_lo, ci_hi = median_ci(paired_first)
    allowed = max(TARGET_MS, direct["median_first_ms"] * TARGET_PCT / 100)
    print(f"\nCLI: {version}; {turns} turns per path (ms)\n")
    print(f"{'':>16} {'first median':>13} {'first p90':>10} {'end median':>11} {'end p90':>9}")
    for name, st in results.items():
        widths = {"median_first_ms": 13, "p90_first_ms": 10, "median_end_ms": 11, "p90_end_ms": 9}
        print(f"{name:>16} " + " ".join(f"{st[key]:{width}.1f}" for key, width in widths.items()))
    print(f"{'overhead':>16} {over_first:+13.1f} {'':>10} {over_end:+11.1f}   (difference of the medians)")
    print(f"{'overhead %':>16} {pct_first:+12.1f}% {'':>10} {pct_end:+10.1f}%")
    print(
        f"{'paired overhead':>16} {statistics.median(paired_first):+13.1f} {'':>10} "
        f"{statistics.median(paired_end):+11.1f}   (median of per-turn differences; "
        f"first event 95% CI {ci_lo:+.1f} .. {ci_hi:+.1f})"
    )
    # The verdict uses the paired median's interval: the CLI's own start-up varies far more
    # than the server's overhead, so a single number would pass or fail by chance.
    verdict = "MET" if ci_hi <= allowed else "NOT MET" if ci_lo > allowed else "INCONCLUSIVE"
    verdict = verdict if turns >= MIN_TURNS_FOR_VERDICT else "INCONCLUSIVE"
    print(
        f"\nTarget: the server adds at most {TARGET_PCT:g}% or {TARGET_MS:g} ms (whichever is larger, here "
        f"{allowed:.1f} ms) to the time to first event: {verdict}"
    )
    if verdict == "INCONCLUSIVE":
        print(f"  (noise larger than the target, or fewer than {MIN_TURNS_FOR_VERDICT} turns: run more --turns)")
    return {
        "cli_version": version,
        "turns": turns,
        "server": server,
        "direct": direct,
        "overhead_first_ms": over_first,
        "overhead_first_pct": pct_first,
        "overhead_end_ms": over_end,
        "overhead_end_pct": pct_end,
        "paired_overhead_first_ms": statistics.median(paired_first),
        "paired_overhead_first_ci95_ms": [ci_lo, ci_hi],
        "paired_overhead_end_ms": statistics.median(paired_end),
        "allowed_first_ms": allowed,
        "verdict": verdict,
        "samples": {path: [asdict(x) for x in xs] for path, xs in samples.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="measured turns per path (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured turns per path first (default 2)")
    parser.add_argument("--prompt", default="hello", help="the prompt of every turn (default 'hello')")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one turn may take (default 120)")
    parser.add_argument(
        "--cli", type=Path, default=ROOT / "node_modules" / ".bin" / "claude", help="the CLI (default: the pinned one)"
    )
    parser.add_argument("--log-level", default="INFO", help="the server's log level (default INFO)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()
    if args.turns < 1 or args.warmup < 0:
        parser.error("--turns must be at least 1 and --warmup at least 0")
    args.cli = args.cli.absolute()  # the server runs in a directory of its own
    if not args.cli.exists():
        parser.error(f"no CLI at {args.cli}: run `make setup` (npm ci) first, or pass --cli")
    # SIGINT (even when started in the background, where it is ignored) and SIGTERM end the
    # run like Ctrl-C does: every finally below runs.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    version = cli_version(args.cli)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp_name:
        tmp = Path(tmp_name)
        api = FakeAnthropic().start()
        server = None
        try:
            # PYTHONPATH: the server of this checkout, whatever the venv has installed.
            extra = {"CLAUDE_SERVER_LOG_LEVEL": args.log_level, "PYTHONPATH": str(ROOT)}
            server = start_server(tmp / "server", api, args.cli, extra)
            (tmp / "home").mkdir()
            # The environment the server gives the CLI (build_env keeps exactly these).
            direct_env = {
                **base_environ(tmp / "home"),
                "ANTHROPIC_BASE_URL": api.base_url,
                "ANTHROPIC_API_KEY": "sk-ant-fake-key",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "IS_SANDBOX": "1",
            }
            print(f"server {server.url} (log {args.log_level}), CLI {args.cli}", flush=True)
            samples = asyncio.run(run(args, server.url, direct_env, tmp))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                stop_server(server)
            api.stop()
    summary = report(version, args.turns, samples)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
