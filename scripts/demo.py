"""``make demo``: the server against the fake Anthropic API, to try it without an Anthropic key.

Starts ``tests/fake_anthropic.py`` (a scripted model that answers ``Echo(<n>): <your text>``),
then the server, whose CLI is pointed at the fake (``ANTHROPIC_BASE_URL``, a made-up
``ANTHROPIC_API_KEY``), with its data and the CLI's configuration in a temporary directory
removed at exit (or in ``--data-dir``, kept). Both run in process groups of their own, so a
Ctrl-C reaches only this script, which passes it on once to the server (SIGTERM too), waits
for it to stop, then stops the fake: the fake never outlives the server. Options other than
the ones below go to the server (``make demo ARGS="--log-format json"``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
FAKE_API = ROOT / "tests" / "fake_anthropic.py"
# The pinned CLI that `make setup` installs; `make` puts it on PATH, a direct run may not.
PINNED_CLI_DIR = ROOT / "node_modules" / ".bin"
FAKE_READY_TIMEOUT_S = 10.0
FAKE_STOP_TIMEOUT_S = 5.0
# The server gives open streams 10 s (cli.SHUTDOWN_TIMEOUT_S), then closes the database.
SERVER_STOP_TIMEOUT_S = 20.0


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """True once something accepts connections on ``port``; False if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> int:
    """Send ``sig`` to ``proc`` if it still runs, wait for it, kill it past ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else "(no output)"


def run(data_dir: Path, api_port: int, port: int, server_args: list[str]) -> int:
    fake_log = data_dir / "fake-anthropic.log"
    with fake_log.open("wb") as out:  # the child keeps its own copy of the descriptor
        fake = subprocess.Popen(
            [sys.executable, str(FAKE_API), "--port", str(api_port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    server: subprocess.Popen[bytes] | None = None
    try:
        if not wait_listening(fake, api_port, FAKE_READY_TIMEOUT_S):
            print(
                f"demo: the fake Anthropic API did not start on port {api_port} ({last_line(fake_log)}); "
                "pick another port with --api-port",
                file=sys.stderr,
            )
            return 1
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(PINNED_CLI_DIR), os.environ.get("PATH", "")]),
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{api_port}",
            "ANTHROPIC_API_KEY": "demo",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_SERVER_DATA_DIR": str(data_dir),
            # A configuration of its own: not your ~/.claude's login, settings or transcripts.
            "CLAUDE_SERVER_CLAUDE_CONFIG_DIR": str(data_dir / "claude"),
        }
        env.pop("ANTHROPIC_AUTH_TOKEN", None)  # the CLI would send it to the fake instead of the key
        print(
            f"demo: fake Anthropic API on http://127.0.0.1:{api_port}, data in {data_dir}\n"
            f"demo: try  curl -X POST localhost:{port}/api/claude -H 'Content-Type: application/json' "
            """-d '{"prompt": "hello", "stream": false}'""",
            file=sys.stderr,
            flush=True,
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "claude_server", "--port", str(port), *server_args],
            env=env,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )

        def forward(signum: int, _frame: FrameType | None) -> None:
            if server is not None and server.poll() is None:
                server.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        try:
            return server.wait()
        except KeyboardInterrupt:
            # Once only: a second SIGINT would cut the server's shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return stop(server, signal.SIGINT, SERVER_STOP_TIMEOUT_S)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if server is not None:
            stop(server, signal.SIGTERM, SERVER_STOP_TIMEOUT_S)
        stop(fake, signal.SIGTERM, FAKE_STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Any other option goes to claude-server.",
    )
    parser.add_argument("--port", type=int, default=3000, help="the server's port (default: 3000)")
    parser.add_argument("--api-port", type=int, default=8123, help="the fake Anthropic API's port (default: 8123)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the demo's data here (default: a temporary directory, removed at exit)"
    )
    args, server_args = parser.parse_known_args(argv)
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        return run(args.data_dir.resolve(), args.api_port, args.port, server_args)
    data_dir = Path(tempfile.mkdtemp(prefix="claude-server-demo-"))
    try:
        return run(data_dir, args.api_port, args.port, server_args)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the server started; the fake is stopped already
        sys.exit(130)
