#!/usr/bin/env python3
"""Forwarding throughput: a flood of stream-json from the fake CLI (tests/fake_claude.py,
``@flood=BYTES``) read through claude-server's SSE stream, versus read straight from the
fake CLI's stdout pipe.

Run from the repository root: ``python bench/forwarding.py [--mib 64] [--runs 3] [--json]``.
Both line sizes are measured: 1 KiB lines (the fake's default) and 64 KiB lines
(``@linesize=65536``). Each run is timed from the request (server) or the spawn (pipe) to
the end of the stream; the rate counts the CLI's own bytes (the ``data:`` payloads, with
their newline, for the server), in MB/s (10^6 bytes per second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
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

from tests.conftest import FAKE_API_KEY, FAKE_CLI, base_environ, start_server, stop_server  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

ARGV = ["-p", "--verbose", "--output-format", "stream-json"]  # what the server passes
LINE_SIZES = (1024, 65536)
CHUNK = 1 << 20
TARGET_RATIO = 0.5


@dataclass
class Run:
    payload_bytes: int  # the CLI's stdout bytes that reached the reader
    wire_bytes: int  # what was read (SSE framing included, for the server)
    seconds: float  # from the spawn or the request to the end of the stream
    first_s: float  # from the spawn or the request to the first byte
    client_cpu_s: float  # this process's CPU time during the run

    @property
    def mb_s(self) -> float:
        return self.payload_bytes / self.seconds / 1e6

    @property
    def stream_mb_s(self) -> float:
        """The rate once bytes flow (the CLI's start-up left out)."""
        return self.payload_bytes / (self.seconds - self.first_s) / 1e6


def prompt_for(nbytes: int, linesize: int) -> str:
    return f"@flood={nbytes} @linesize={linesize}"


def via_pipe(env: dict[str, str], cwd: Path, prompt: str, timeout: float) -> Run:
    """Spawn the fake CLI like the server does and read its stdout in large chunks until EOF."""
    cwd.mkdir(parents=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    proc = subprocess.Popen(
        [str(FAKE_CLI), *ARGV],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdin and proc.stdout
        proc.stdin.write(prompt.encode())
        proc.stdin.close()
        fd, total, deadline, first = proc.stdout.fileno(), 0, t0 + timeout, 0.0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"the fake CLI did not finish within {timeout:g}s")
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            first = first or time.perf_counter() - t0
            total += len(chunk)
        code = proc.wait(timeout)
        seconds = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    if code != 0:
        raise RuntimeError(f"the fake CLI exited with {code}")
    return Run(total, total, seconds, first, time.process_time() - cpu0)


async def via_server(url: str, prompt: str, timeout: float) -> Run:
    """POST the prompt and read the SSE body in large chunks, counting the data: payloads."""
    wire = payload = 0
    first = 0.0
    tail = b""
    last_data = b""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        cpu0, t0 = time.process_time(), time.perf_counter()
        async with http.post(f"{url}/api/claude", json={"prompt": prompt}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"server answered {resp.status}: {(await resp.text())[:500]}")
            async for chunk in resp.content.iter_chunked(CHUNK):
                first = first or time.perf_counter() - t0
                wire += len(chunk)
                buf = tail + chunk
                cut = buf.rfind(b"\n") + 1
                for line in buf[:cut].split(b"\n"):
                    if line.startswith(b"data: "):
                        payload += len(line) - 5  # without "data: ", with the line's newline
                        last_data = line
                    elif line.startswith(b"event: error"):
                        raise RuntimeError("the server streamed an error event")
                tail = buf[cut:]
        seconds = time.perf_counter() - t0
    if not last_data or json.loads(last_data[6:]).get("type") != "result":
        raise RuntimeError(f"the stream did not end with a result: {last_data[:200]!r}")
    return Run(payload, wire, seconds, first, time.process_time() - cpu0)


def summary(runs: list[Run]) -> dict[str, float]:
    rates = [r.mb_s for r in runs]
    return {
        "best_mb_s": max(rates),
        "median_mb_s": statistics.median(rates),
        "median_stream_mb_s": statistics.median(r.stream_mb_s for r in runs),
        "median_first_byte_s": statistics.median(r.first_s for r in runs),
        "median_payload_mib": statistics.median(r.payload_bytes for r in runs) / (1 << 20),
        "median_wire_mib": statistics.median(r.wire_bytes for r in runs) / (1 << 20),
        "median_seconds": statistics.median(r.seconds for r in runs),
        "median_client_cpu_s": statistics.median(r.client_cpu_s for r in runs),
    }


def bench(args: argparse.Namespace, url: str, env: dict[str, str], tmp: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    nbytes = args.mib << 20
    for linesize in LINE_SIZES:
        prompt = prompt_for(nbytes, linesize)
        runs: dict[str, list[Run]] = {"pipe": [], "server": []}
        for i in range(-args.warmup, args.runs):
            for path in ("pipe", "server") if i % 2 == 0 else ("server", "pipe"):
                if path == "pipe":
                    run = via_pipe(env, tmp / "pipe-ws" / f"{linesize}-{i + args.warmup}", prompt, args.timeout)
                else:
                    run = asyncio.run(via_server(url, prompt, args.timeout))
                label = "warm-up" if i < 0 else f"run {i + 1}/{args.runs}"
                print(
                    f"  {linesize:>5} B lines {label:>9} {path:>6}: {run.mb_s:7.1f} MB/s, "
                    f"{run.stream_mb_s:7.1f} from 1st byte ({run.payload_bytes / (1 << 20):.1f} MiB in "
                    f"{run.seconds:.3f}s, 1st byte {run.first_s:.3f}s, client CPU {run.client_cpu_s:.2f}s)",
                    flush=True,
                )
                if i >= 0:
                    runs[path].append(run)
        pipe, server = summary(runs["pipe"]), summary(runs["server"])
        results[f"lines_{linesize}"] = {
            "pipe": pipe,
            "server": server,
            "ratio_median": server["median_mb_s"] / pipe["median_mb_s"],
            "ratio_best": server["best_mb_s"] / pipe["best_mb_s"],
            "target_met": server["median_mb_s"] >= TARGET_RATIO * pipe["median_mb_s"],
            "ratio_stream_median": server["median_stream_mb_s"] / pipe["median_stream_mb_s"],
            "runs": {path: [asdict(r) for r in rs] for path, rs in runs.items()},
        }
    return results


def report(args: argparse.Namespace, results: dict[str, object]) -> None:
    print(f"\n{args.mib} MiB of stream-json per run, {args.runs} runs per path (MB/s = 10^6 bytes/s)")
    print("'stream' leaves out the time to the first byte (the CLI's start-up)\n")
    head = f"{'line size':>10} {'path':>7} {'best MB/s':>10} {'median MB/s':>12} {'stream MB/s':>12}"
    print(f"{head} {'1st byte s':>11} {'median s':>9} {'client CPU s':>13}")
    for linesize in LINE_SIZES:
        res = results[f"lines_{linesize}"]
        assert isinstance(res, dict)
        for path in ("pipe", "server"):
            s = res[path]
            print(
                f"{linesize:>10} {path:>7} {s['best_mb_s']:10.1f} {s['median_mb_s']:12.1f} "
                f"{s['median_stream_mb_s']:12.1f} {s['median_first_byte_s']:11.3f} {s['median_seconds']:9.3f} "
                f"{s['median_client_cpu_s']:13.2f}"
            )
        verdict = "MET" if res["target_met"] else "NOT MET"
        print(
            f"{'':>10} {'ratio':>7} {res['ratio_best']:10.2f} {res['ratio_median']:12.2f} "
            f"{res['ratio_stream_median']:12.2f}   target server >= {TARGET_RATIO:g} x pipe (medians): {verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64, help="MiB of stream-json per run (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per path and line size (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs per path first (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take (default 300)")
    parser.add_argument("--log-level", default="INFO", help="the server's log level (default INFO)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()
    if args.mib < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--mib and --runs must be at least 1, --warmup at least 0")
    # SIGINT (even when started in the background, where it is ignored) and SIGTERM end the
    # run like Ctrl-C does: every finally below runs.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-forwarding-") as tmp_name:
        tmp = Path(tmp_name)
        server = None
        try:
            # The fake CLI needs no API: the (never started) fake only fills ANTHROPIC_BASE_URL.
            # PYTHONPATH: the server of this checkout, whatever the venv has installed.
            extra = {"CLAUDE_SERVER_LOG_LEVEL": args.log_level, "PYTHONPATH": str(ROOT)}
            server = start_server(tmp / "server", FakeAnthropic(), FAKE_CLI, extra)
            (tmp / "home").mkdir()
            env = {**base_environ(tmp / "home"), "IS_SANDBOX": "1", "ANTHROPIC_API_KEY": FAKE_API_KEY}
            print(f"server {server.url} (log {args.log_level}), fake CLI {FAKE_CLI}", flush=True)
            results = bench(args, server.url, env, tmp)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                stop_server(server)
    report(args, results)
    if args.json:
        print(json.dumps({"mib": args.mib, "runs": args.runs, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
