"""End to end: starting the server (a subprocess, the fake CLI) where it must refuse, and
where it must make something of what it was given.

- A second server on a database another server holds refuses to start, says so in one
  line, and leaves the first one's turns alone (its recovery would otherwise mark them
  interrupted and kill their processes).
- A relative ``--claude-bin`` is resolved against the directory the server started in:
  the CLI runs inside a session's workspace, where the relative path means nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAKE_CLI, RunningServer, base_environ, free_port, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.test_e2e_core import SseReader, data_objects, get_json, is_init, post, run_turn, wait_turn_finished

pytestmark = pytest.mark.e2e

# "Within a few seconds": the Python start-up and the imports take about one.
REFUSAL_TIMEOUT_S = 10.0
# The first server's turn runs this long, well past the second server's attempt.
TURN_PROMPT = "@lines=60 @slow=0.1 the first server's turn"


@dataclass
class SecondAttempt:
    """The first server, its turn's whole stream, and how the second server ended."""

    first: RunningServer
    turn_id: str
    status_after_refusal: str
    events: list
    returncode: int | None
    output: str
    elapsed_s: float


def run_second_server(first: RunningServer) -> tuple[int | None, str, float]:
    """``python -m claude_server`` on the first server's database and workspace root, on
    another port, as an operator would start it by mistake (default log level)."""
    env = {
        **base_environ(first.home),
        "CLAUDE_SERVER_PORT": str(free_port()),
        "CLAUDE_SERVER_DB": str(first.root / "sessions.db"),
        "CLAUDE_SERVER_WORKSPACE_ROOT": str(first.workspace_root),
        "CLAUDE_SERVER_CLAUDE_BIN": str(FAKE_CLI),
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_server"],
        env=env,
        cwd=first.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = proc.communicate(timeout=REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out.decode(errors="replace"), time.monotonic() - started
    return proc.returncode, out.decode(errors="replace"), time.monotonic() - started


async def second_server_during_a_turn(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, root: Path
) -> SecondAttempt:
    first = await asyncio.to_thread(start_server, root, fake_api, FAKE_CLI)
    try:
        async with await post(http, first, {"prompt": TURN_PROMPT, "detach": True}) as resp:
            assert resp.status == 200, await resp.text()
            turn_id = resp.headers["X-Turn-Id"]
            reader = SseReader(resp)
            await reader.until(is_init)
            rest = asyncio.create_task(reader.rest())
            returncode, output, elapsed = await asyncio.to_thread(run_second_server, first)
            status = (await get_json(http, f"{first.url}/api/turns/{turn_id}"))["status"]
            events = await rest
        return SecondAttempt(first, turn_id, status, events, returncode, output, elapsed)
    except BaseException:
        await asyncio.to_thread(stop_server, first)
        raise


async def test_a_second_server_on_the_same_database_hurts_nothing(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    attempt = await second_server_during_a_turn(http, fake_api, tmp_path)
    first = attempt.first
    try:
        assert attempt.returncode in (1, 2), (attempt.returncode, attempt.output)
        assert attempt.elapsed_s < REFUSAL_TIMEOUT_S
        # It failed while the first server's turn ran, and the turn went on to succeed.
        assert attempt.status_after_refusal == "running"
        ids = [ev.id for ev in attempt.events]
        assert ids == [f"{attempt.turn_id}:{seq}" for seq in range(1, len(ids) + 1)], ids
        assert [ev.event for ev in attempt.events if ev.event] == [], attempt.events
        objects = data_objects(attempt.events)
        assert [o["type"] for o in objects].count("assistant") == 60
        assert (objects[-1]["type"], objects[-1]["subtype"]) == ("result", "success")
        turn = await wait_turn_finished(http, first, attempt.turn_id)
        assert (turn["status"], turn["error"]) == ("succeeded", None), turn
        assert turn["last_seq"] == len(ids)

        # The first server still owns its database and keeps serving.
        holder = (tmp_path / "sessions.db.lock").read_text().split()
        assert holder[0] == str(first.proc.pid), holder
        health = await get_json(http, f"{first.url}/health")
        assert health["database"]["ok"] is True, health
        again = await run_turn(http, first, {"prompt": "after the second server"})
        assert again.last["type"] == "result" and again.last["subtype"] == "success", again.events
    finally:
        await asyncio.to_thread(stop_server, first)


async def test_a_second_server_on_the_same_database_says_why_in_one_line(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    attempt = await second_server_during_a_turn(http, fake_api, tmp_path)
    try:
        assert attempt.returncode in (1, 2), (attempt.returncode, attempt.output)
        lines = [line for line in attempt.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in attempt.output, attempt.output
        assert str(tmp_path / "sessions.db") in lines[0], lines[0]
        assert f"pid {attempt.first.proc.pid}" in lines[0], lines[0]
    finally:
        await asyncio.to_thread(stop_server, attempt.first)


# ---- a relative --claude-bin ------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["tests/fake_claude.py", "./tests/fake_claude.py"])
async def test_a_relative_claude_bin_is_resolved_at_start(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path, relative: str
) -> None:
    # The server starts in tmp_path (start_server's cwd), which holds the CLI at `relative`.
    cli = tmp_path / "tests" / "fake_claude.py"
    cli.parent.mkdir()
    shutil.copy2(FAKE_CLI, cli)
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, FAKE_CLI, {"CLAUDE_SERVER_CLAUDE_BIN": relative})
    try:
        health = await get_json(http, f"{server.url}/health")
        assert health["cli"]["found"] is True, health
        assert os.path.isabs(health["cli"]["path"]), health
        assert Path(health["cli"]["path"]) == cli.resolve(), health
        assert health["cli"]["version"] == "9.9.9 (Fake Claude Code)", health

        turn = await run_turn(http, server, {"prompt": "from a relative path"})
        assert turn.last["type"] == "result" and turn.last["subtype"] == "success", turn.events
        assert turn.cwd.parent == server.workspace_root.resolve(), turn.cwd  # it ran in its workspace
        assert (await wait_turn_finished(http, server, turn.turn_id))["status"] == "succeeded"
    finally:
        await asyncio.to_thread(stop_server, server)
