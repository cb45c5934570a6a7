"""End to end: the management commands as an operator types them, against the real server
(with the real CLI and the fake Anthropic API) and its database while it runs, and
``doctor`` with the real CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAKE_API_KEY, ROOT, RunningServer, base_environ, real_cli_path
from tests.fake_anthropic import FakeAnthropic
from tests.test_e2e_core import run_turn

pytestmark = pytest.mark.e2e


def claude_server(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_server", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


async def test_status_sessions_and_turns_of_a_running_server_and_of_its_database(
    e2e_server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    turn = await run_turn(http, e2e_server, {"prompt": "managed"})
    env = base_environ(tmp_path)

    done = await asyncio.to_thread(claude_server, env, "status", "--url", e2e_server.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"from server {e2e_server.url}\n"
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert lines["status"] == "ok" and lines["cli"].startswith(f"{real_cli_path()} (2.1.330")

    db = str(e2e_server.root / "sessions.db")
    for where in (["--url", e2e_server.url], ["--db", db]):
        done = await asyncio.to_thread(claude_server, env, "sessions", "show", turn.session_id, "--json", *where)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert [t["turn_id"] for t in shown["turns"]] == [turn.turn_id]
        done = await asyncio.to_thread(claude_server, env, "turns", "show", turn.turn_id, "--events", *where)
        assert done.returncode == 0, done.stderr
        head, log = done.stdout.split("\n\n")
        assert "status     succeeded" in head and "prompt     managed" in head
        assert json.loads(log.splitlines()[-1].split(None, 1)[1])["type"] == "result" and "Echo(1): managed" in log


async def test_doctor_with_the_real_cli_and_the_fake_api(fake_api: FakeAnthropic, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    env = {
        **base_environ(tmp_path / "home"),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_BASE_URL": fake_api.base_url,
        "CLAUDE_SERVER_CLAUDE_BIN": str(real_cli_path()),
        "CLAUDE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "CLAUDE_SERVER_MAX_CONCURRENT": "1",
        "CLAUDE_SERVER_MAX_WARM": "1",
    }
    done = await asyncio.to_thread(claude_server, env, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    status = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert status["cli"] == status["api"] == status["database"] == status["workspaces"] == "OK", done.stdout
    assert f"{real_cli_path()} (2.1.330 (Claude Code))" in done.stdout
    done = await asyncio.to_thread(claude_server, {**env, "ANTHROPIC_API_KEY": "sk-ant-wrong"}, "doctor", "--json")
    assert done.returncode == 1
    api = next(c for c in json.loads(done.stdout)["checks"] if c["check"] == "api")
    assert api["status"] == "FAIL" and "refuses ANTHROPIC_API_KEY (401: invalid x-api-key)" in api["message"]
