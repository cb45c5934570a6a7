"""End to end: the configuration API on a server with a managed configuration directory
(CLAUDE_SERVER_CLAUDE_CONFIG_DIR), the real CLI and the fake Anthropic API. What is configured
through the API must reach the model: an agent's prompt in ``system``, CLAUDE.md and rules in
the first user message, an MCP server connected with its tools."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.test_e2e_core import expect_error, post, run_turn

pytestmark = pytest.mark.e2e

JSON_HEADERS = {"Content-Type": "application/json"}

# The smallest MCP server over stdio: it answers initialize and tools/list (one tool, ping).
MCP_SERVER = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg.get("method") == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "probe", "version": "1"}}
    elif msg.get("method") == "tools/list":
        result = {"tools": [{"name": "ping", "description": "Answers pong",
                             "inputSchema": {"type": "object", "properties": {}}}]}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "no"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


@pytest.fixture(scope="module")
def managed_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("e2e-config")
    extra = {"CLAUDE_SERVER_CLAUDE_CONFIG_DIR": str(root / "claude-config")}
    server = start_server(root, fake_api, real_cli_path(), extra_env=extra)
    yield server
    stop_server(server)


def managed_dir(server: RunningServer) -> Path:
    return server.root / "claude-config"


async def put_config(http: aiohttp.ClientSession, server: RunningServer, path: str, content: Any) -> None:
    body = json.dumps({"content": content})
    async with http.put(f"{server.url}/api/config/{path}", data=body, headers=JSON_HEADERS) as resp:
        assert resp.status in (200, 201), await resp.text()


def agent_md(name: str, body: str) -> str:
    return f"---\nname: {name}\ndescription: A test agent\n---\n{body}\n"


async def test_an_agent_configured_through_the_api_shapes_the_system_prompt(
    http: aiohttp.ClientSession, managed_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    await put_config(http, managed_server, "agents/reviewer", agent_md("reviewer", "You are AGENT-MARKER-7f3a."))
    await put_config(http, managed_server, "skills/tidy", agent_md("tidy", "Tidy up."))
    turn = await run_turn(http, managed_server, {"prompt": "hello agent", "agent": "reviewer"})
    assert turn.last["type"] == "result" and not turn.last["is_error"], turn.last
    assert "reviewer" in turn.init["agents"] and "tidy" in turn.init["skills"]
    request = fake_api.for_session(turn.session_id)[-1]
    assert "AGENT-MARKER-7f3a" in json.dumps(request.body["system"])
    # The CLI's own state and transcripts moved to the managed directory with it.
    assert list(managed_dir(managed_server).glob(f"projects/*/{turn.session_id}.jsonl"))
    assert not (managed_server.home / ".claude" / "projects").exists()
    async with http.delete(f"{managed_server.url}/api/sessions/{turn.session_id}") as resp:
        assert resp.status == 204
    assert not list(managed_dir(managed_server).glob(f"projects/*/{turn.session_id}*"))

    plain = await run_turn(http, managed_server, {"prompt": "no agent"})
    assert "AGENT-MARKER-7f3a" not in fake_api.for_session(plain.session_id)[-1].text()


async def test_claude_md_and_rules_reach_the_first_user_message(
    http: aiohttp.ClientSession, managed_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    async with http.put(
        f"{managed_server.url}/api/config/claude-md",
        data="Always answer CLAUDE-MD-MARKER-51c2.\n",
        headers={"Content-Type": "text/markdown"},
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
    await put_config(http, managed_server, "rules/style", "Follow RULE-MARKER-09bd.\n")
    turn = await run_turn(http, managed_server, {"prompt": "hello memory"})
    request = fake_api.for_session(turn.session_id)[-1]
    first_user = json.dumps(next(m for m in request.body["messages"] if m["role"] == "user"))
    assert "CLAUDE-MD-MARKER-51c2" in first_user and "RULE-MARKER-09bd" in first_user
    assert "CLAUDE-MD-MARKER-51c2" not in json.dumps(request.body["system"])


async def test_a_configured_mcp_server_is_started_for_the_turns_that_name_it(
    http: aiohttp.ClientSession, managed_server: RunningServer, fake_api: FakeAnthropic
) -> None:
    script = managed_server.root / "mcp_probe.py"
    script.write_text(MCP_SERVER)
    await put_config(http, managed_server, "mcp-servers/probe", {"command": sys.executable, "args": [str(script)]})
    turn = await run_turn(http, managed_server, {"prompt": "hello tools", "mcp_servers": ["probe"]})
    assert {"name": "probe", "status": "connected"}.items() <= turn.init["mcp_servers"][0].items()
    assert "mcp__probe__ping" in turn.init["tools"]
    assert "mcp__probe__ping" in json.dumps(fake_api.for_session(turn.session_id)[-1].body)
    plain = await run_turn(http, managed_server, {"prompt": "no tools"})
    assert plain.init["mcp_servers"] == [] and "mcp__probe__ping" not in plain.init["tools"]


async def test_unknown_names_are_refused_before_the_cli_starts(
    http: aiohttp.ClientSession, managed_server: RunningServer
) -> None:
    await expect_error(await post(http, managed_server, {"prompt": "x", "agent": "ghost"}), 400, "unknown_agent")
    resp = await post(http, managed_server, {"prompt": "x", "mcp_servers": ["ghost"]})
    await expect_error(resp, 400, "unknown_mcp_server")
