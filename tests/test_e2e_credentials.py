"""End to end, the real CLI without credentials: the server says so before any turn
(/health degraded, with the reason), and a turn fails with a code that says what happened,
on the native stream, without streaming, and on the compatible routes."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import RunningServer, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import parse_sse

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def no_login(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    # An empty key is no key for the CLI (docs/cli-behaviour.md), and the HOME is empty.
    server = start_server(tmp_path_factory.mktemp("nologin"), fake_api, real_cli_path(), {"ANTHROPIC_API_KEY": ""})
    yield server
    stop_server(server)


async def test_health_says_the_cli_has_no_credentials(http: aiohttp.ClientSession, no_login: RunningServer) -> None:
    body = await (await http.get(f"{no_login.url}/health")).json()
    assert body["status"] == "degraded"
    assert body["credentials"]["found"] is False
    assert any("no credentials" in p and "ANTHROPIC_API_KEY" in p for p in body["problems"]), body
    assert "Claude Code has no credentials" in no_login.log_text()


async def test_a_turn_fails_as_not_logged_in_everywhere(
    http: aiohttp.ClientSession, no_login: RunningServer, fake_api: FakeAnthropic
) -> None:
    before = len(fake_api.requests)
    async with http.post(f"{no_login.url}/api/claude", json={"prompt": "hello"}) as resp:
        assert resp.status == 200
        events = parse_sse(await resp.text())
        turn_id = resp.headers["X-Turn-Id"]
    result = events[-2].json()
    assert result["type"] == "result" and result["is_error"] is True and "Not logged in" in result["result"]
    assert events[-1].event == "error" and events[-1].json()["code"] == "not_logged_in"
    turn = await (await http.get(f"{no_login.url}/api/turns/{turn_id}")).json()
    assert turn["status"] == "failed" and turn["error"]["code"] == "not_logged_in"
    assert f"turn {turn_id} failed: not_logged_in" in no_login.log_text()

    async with http.post(f"{no_login.url}/api/claude", json={"prompt": "hello", "stream": False}) as resp:
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "not_logged_in" and "ANTHROPIC_API_KEY" in error["message"]

    body = {"model": "claude-code", "messages": [{"role": "user", "content": "hello"}]}
    async with http.post(f"{no_login.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "not_logged_in" and "not logged in" in error["message"]
    assert len(fake_api.requests) == before  # the CLI asked no model
