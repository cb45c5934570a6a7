#!/usr/bin/env python3
"""Under load: many concurrent streams through claude-server, each a turn of the fake CLI
(tests/fake_claude.py) that prints one line every ``--interval`` seconds, while a separate
client polls ``GET /health`` and the server process's memory is sampled.

Run from the repository root:
``python bench/load.py [--streams 100] [--lines 50] [--interval 0.1] [--json]``.

The server runs as a subprocess (``python -m claude_server``) with as many slots as streams
(``CLAUDE_SERVER_MAX_CONCURRENT``) and a queue as long, so every stream is admitted at once.
Each turn's prompt is ``@lines=N @slow=S``: the fake CLI prints its init line, then N
assistant lines, sleeping S seconds before each, then its result line; a stream counts as
completed when its last ``data:`` line is that result. All streams start together.

``/health`` is polled every ``--poll-interval`` seconds (start to start) by a client of its
own, in a thread with its own event loop, on one keep-alive connection: first for
``--idle`` seconds before the streams start (the idle baseline), then until the last stream
ends (the latencies judged). The server's VmRSS and VmHWM (``/proc/<pid>/status``) are
sampled just as often from another thread; the peak is the larger of the highest VmRSS seen
and the final VmHWM, in MB (10^6 bytes). Targets: peak RSS < 100 MB, /health p99 < 50 ms.

The fake CLI starts with ``#!/usr/bin/env python3``. The directory of the interpreter running
this script comes first on the server's (and so the CLI's) PATH, so that this interpreter
runs it rather than a wrapper found first on PATH: a pyenv shim (bash, then ``pyenv exec``)
costs about 0.1 s of CPU per start against 0.04 s for the fake itself, and a hundred of them
on two cores measure the shim. ``--path-as-is`` keeps the caller's PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.conftest import FAKE_CLI, start_server, stop_server  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

CHUNK = 64 * 1024
TARGET_RSS_MB = 100.0
TARGET_HEALTH_P99_MS = 50.0


@dataclass
class Stream:
    ok: bool  # ended with the CLI's result line
    data_lines: int  # data: lines received
    first_s: float  # from the request to the first data: line
    seconds: float  # from the request to the end of the stream
    error: str | None = None


@dataclass
class Health:
    """/health latencies of one phase, in ms, and the polls that failed."""

    latencies_ms: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # perf_counter() when each poll was sent
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        values = sorted(self.latencies_ms)
        if not values:
            return {"polls": 0, "errors": len(self.errors)}
        p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
        return {
            "polls": len(values),
            "errors": len(self.errors),
            "median_ms": statistics.median(values),
            "p90_ms": statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0],
            "p99_ms": p99,
            "max_ms": values[-1],
        }

    def slowest(self, since: float, count: int = 5) -> list[dict[str, float]]:
        """The slowest polls, with when they were sent (seconds after ``since``)."""
        worst = sorted(zip(self.latencies_ms, self.sent_at, strict=True), reverse=True)[:count]
        return [{"ms": ms, "at_s": at - since} for ms, at in worst]


@dataclass
class Memory:
    """The server's resident memory, from /proc/<pid>/status, in kB (KiB, as the kernel writes it)."""

    before_kb: int = 0  # VmRSS when the streams start
    max_rss_kb: int = 0  # the highest VmRSS sampled
    hwm_kb: int = 0  # VmHWM at the end: the peak the kernel saw
    samples: int = 0

    @property
    def peak_mb(self) -> float:
        return max(self.max_rss_kb, self.hwm_kb) * 1024 / 1e6


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


def sample_memory(pid: int, interval: float, stop: threading.Event, memory: Memory) -> None:
    """Thread body: VmRSS every ``interval`` seconds until ``stop``, then the final VmHWM."""
    while not stop.is_set():
        status = read_status(pid)
        memory.max_rss_kb = max(memory.max_rss_kb, status["VmRSS"])
        memory.samples += 1
        stop.wait(interval)
    memory.hwm_kb = read_status(pid)["VmHWM"]


class HealthPoller:
    """Polls /health in a thread of its own (with its own event loop and connection), so that
    the streams' client never delays a poll; ``phase`` chooses where latencies go."""

    def __init__(self, url: str, interval: float, timeout: float) -> None:
        self.url = f"{url}/health"
        self.interval = interval
        self.timeout = timeout
        self.phases: dict[str, Health] = {}
        self.phase = "idle"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="health-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _main(self) -> None:
        asyncio.run(self._poll())

    async def _poll(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._ready.set()
            next_at = time.perf_counter()
            while not self._stop.is_set():
                health = self.phases.setdefault(self.phase, Health())
                t0 = time.perf_counter()
                try:
                    async with http.get(self.url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"status {resp.status}")
                    health.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    health.sent_at.append(t0)
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                    health.errors.append(f"{type(exc).__name__}: {exc}")
                next_at = max(next_at + self.interval, time.perf_counter())
                await asyncio.sleep(next_at - time.perf_counter())


async def one_stream(http: aiohttp.ClientSession, url: str, prompt: str) -> Stream:
    """POST the prompt and read the SSE body to its end, counting the data: lines."""
    t0 = time.perf_counter()
    first = 0.0
    count = 0
    last_data = b""
    tail = b""
    try:
        async with http.post(f"{url}/api/claude", json={"prompt": prompt}) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300]
                return Stream(False, 0, 0.0, time.perf_counter() - t0, f"status {resp.status}: {text}")
            async for chunk in resp.content.iter_chunked(CHUNK):
                *lines, tail = (tail + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        first = first or time.perf_counter() - t0
                        count += 1
                        last_data = line
                    elif line.startswith(b"event: error"):
                        return Stream(False, count, first, time.perf_counter() - t0, "the server streamed an error")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Stream(False, count, first, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - t0
    try:
        ok = json.loads(last_data[6:]).get("type") == "result"
    except ValueError:
        ok = False
    return Stream(ok, count, first, seconds, None if ok else f"did not end with a result: {last_data[:200]!r}")


async def run_streams(args: argparse.Namespace, url: str) -> list[Stream]:
    prompt = f"@lines={args.lines} @slow={args.interval:g}"
    timeout = aiohttp.ClientTimeout(total=args.lines * args.interval + args.timeout)
    # limit=0: one connection per stream (the default pool holds 100 and would queue the rest).
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        return list(await asyncio.gather(*(one_stream(http, url, prompt) for _ in range(args.streams))))


def bench(args: argparse.Namespace, url: str, pid: int) -> dict[str, object]:
    poller = HealthPoller(url, args.poll_interval, args.timeout)
    memory = Memory()
    stop_memory = threading.Event()
    sampler = threading.Thread(
        target=sample_memory, args=(pid, args.poll_interval, stop_memory, memory), name="rss-sampler", daemon=True
    )
    poller.start()
    try:
        time.sleep(args.idle)
        memory.before_kb = read_status(pid)["VmRSS"]
        sampler.start()
        poller.phase = "load"
        t0 = time.perf_counter()
        streams = asyncio.run(run_streams(args, url))
        wall = time.perf_counter() - t0
    finally:
        poller.stop()
        stop_memory.set()
        if sampler.is_alive():
            sampler.join()
    done = [s for s in streams if s.ok]
    return {
        "streams": args.streams,
        "lines": args.lines,
        "interval_s": args.interval,
        "started": len(streams),
        "completed": len(done),
        "wall_s": wall,
        "stream_seconds_median": statistics.median(s.seconds for s in streams),
        "stream_seconds_max": max(s.seconds for s in streams),
        "first_event_s_median": statistics.median(s.first_s for s in done) if done else None,
        "errors": sorted({s.error for s in streams if s.error}),
        "memory": {**asdict(memory), "peak_mb": memory.peak_mb, "before_mb": memory.before_kb * 1024 / 1e6},
        "health_idle": poller.phases.get("idle", Health()).summary(),
        "health_load": poller.phases.get("load", Health()).summary(),
        "health_slowest": poller.phases.get("load", Health()).slowest(t0),
        "health_errors": poller.phases.get("load", Health()).errors[:5],
        "path_as_is": args.path_as_is,
    }


def report(results: dict[str, object]) -> bool:
    """Print the results; True when every stream completed."""
    memory, idle, load = results["memory"], results["health_idle"], results["health_load"]
    assert isinstance(memory, dict) and isinstance(idle, dict) and isinstance(load, dict)
    print(
        f"\n{results['streams']} concurrent streams, {results['lines']} lines each, one every "
        f"{results['interval_s']:g}s ({results['wall_s']:.2f}s for all of them)\n"
    )
    print(
        f"streams completed / started: {results['completed']} / {results['started']} "
        f"(stream time median {results['stream_seconds_median']:.2f}s, max {results['stream_seconds_max']:.2f}s; "
        f"first event median {results['first_event_s_median'] or float('nan'):.2f}s)"
    )
    for error in results["errors"]:  # type: ignore[attr-defined]
        print(f"  failed: {error}")
    print(f"peak server RSS: {memory['peak_mb']:.1f} MB (VmRSS {memory['before_mb']:.1f} MB when the streams started)")
    print(
        f"/health under load: median {load.get('median_ms', float('nan')):.1f} ms, "
        f"p99 {load.get('p99_ms', float('nan')):.1f} ms, max {load.get('max_ms', float('nan')):.1f} ms "
        f"({load['polls']} polls, {load['errors']} failed)"
    )
    slowest = ", ".join(f"{p['ms']:.0f} ms at {p['at_s']:.2f}s" for p in results["health_slowest"])  # type: ignore[attr-defined]
    if slowest:
        print(f"  slowest polls (sent that long after the streams started): {slowest}")
    print(
        f"/health idle:       median {idle.get('median_ms', float('nan')):.1f} ms, "
        f"p99 {idle.get('p99_ms', float('nan')):.1f} ms ({idle['polls']} polls)"
    )
    rss_met = memory["peak_mb"] < TARGET_RSS_MB
    p99 = load.get("p99_ms")
    health_met = p99 is not None and load["errors"] == 0 and p99 < TARGET_HEALTH_P99_MS
    print(f"\ntarget peak RSS < {TARGET_RSS_MB:g} MB: {'MET' if rss_met else 'NOT MET'}")
    print(f"target /health p99 < {TARGET_HEALTH_P99_MS:g} ms: {'MET' if health_met else 'NOT MET'}")
    results["rss_target_met"], results["health_target_met"] = rss_met, health_met
    return results["completed"] == results["started"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams (default 100)")
    parser.add_argument("--lines", type=int, default=50, help="assistant lines per turn (default 50)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds before each line (default 0.1)")
    parser.add_argument("--poll-interval", type=float, default=0.02, help="seconds between polls (default 0.02)")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds of polling before the load (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds of slack per stream (default 60)")
    parser.add_argument("--log-level", default="INFO", help="the server's log level (default INFO)")
    parser.add_argument(
        "--path-as-is", action="store_true", help="give the server the caller's PATH (see above) unchanged"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()
    if args.streams < 1 or args.lines < 1 or args.interval < 0 or args.poll_interval <= 0 or args.idle < 0:
        parser.error("--streams and --lines must be at least 1, --interval and --idle at least 0, --poll-interval > 0")
    # SIGINT (even when started in the background, where it is ignored) and SIGTERM end the
    # run like Ctrl-C does: every finally below runs.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        server = None
        try:
            # The fake CLI needs no API: the (never started) fake only fills ANTHROPIC_BASE_URL.
            # PYTHONPATH: the server of this checkout, whatever the venv has installed.
            extra = {
                "CLAUDE_SERVER_LOG_LEVEL": args.log_level,
                "PYTHONPATH": str(ROOT),
                "CLAUDE_SERVER_MAX_CONCURRENT": str(args.streams),
                "CLAUDE_SERVER_MAX_QUEUE": str(args.streams),
            }
            if not args.path_as_is:
                extra["PATH"] = os.pathsep.join(
                    [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
                )
            server = start_server(tmp / "server", FakeAnthropic(), FAKE_CLI, extra)
            print(f"server {server.url} (pid {server.proc.pid}, log {args.log_level}), fake CLI {FAKE_CLI}", flush=True)
            results = bench(args, server.url, server.proc.pid)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                stop_server(server)
    all_done = report(results)
    if args.json:
        print(json.dumps(results))
    return 0 if all_done else 1


if __name__ == "__main__":
    sys.exit(main())
