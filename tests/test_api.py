"""POST /api/claude and friends through the app, with the fake CLI (tests/fake_claude.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server import broker, sse
from claude_server.app import create_app
from claude_server.appkeys import BROKER
from claude_server.claude.probe import TESTED_CLI_VERSION
from claude_server.config import Settings
from tests.conftest import FAKE_CLI
from tests.helpers import (
    JSON,
    SseEvent,
    data_events,
    eventually,
    is_assistant,
    marked_pids,
    parse_sse,
    pid_alive,
    post,
    process_of,
    read_until,
    run_turn,
    session_of,
    texts,
)

pytestmark = pytest.mark.backends

# ---- the happy paths ----------------------------------------------------------------------


async def test_new_session_streams_every_line_as_sse(client: TestClient, settings: Settings) -> None:
    resp, events = await run_turn(client, {"prompt": "hello"})
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    turn_id = resp.headers["X-Turn-Id"]
    assert [ev.id for ev in events] == [f"{turn_id}:{n}" for n in range(1, len(events) + 1)]
    objs = data_events(events)
    assert [o["type"] for o in objs] == ["system", "assistant", "result"]
    init = objs[0]
    workspace = Path(init["cwd"])
    assert workspace.parent == Path(settings.workspace_root).resolve()
    assert workspace.name.startswith("session-")
    assert texts(events) == ["fake answer 1: hello"]

    sid = init["session_id"]
    got = await (await client.get(f"/api/sessions/{sid}")).json()
    assert got["session_id"] == sid
    assert got["workspace_path"] == str(workspace)
    assert got["created_at"] <= got["last_used_at"]
    assert got["running_turn"] is None


async def test_lines_pass_byte_for_byte(client: TestClient) -> None:
    resp = await post(client, {"prompt": "hi @unknown"})
    raw = await resp.read()
    # The fake prints json.dumps() output (with spaces after separators): re-serialising
    # would change the bytes.
    assert b'data: {"type": "brand_new_type", "subtype": "surprise"' in raw


async def test_resume_runs_in_the_same_workspace_with_history(client: TestClient) -> None:
    _, first = await run_turn(client, {"prompt": "one"})
    sid = session_of(first)
    _, second = await run_turn(client, {"prompt": "two", "session_id": sid})
    assert session_of(second) == sid
    assert data_events(second)[0]["cwd"] == data_events(first)[0]["cwd"]
    # The session's CLI stayed warm: the second turn ran in it.
    assert data_events(second)[0]["fake_pid"] == data_events(first)[0]["fake_pid"]
    assert data_events(second)[0]["fake_turn_in_process"] == 2
    assert texts(second) == ["fake answer 2: two"]


async def test_a_warm_cli_that_dies_as_the_next_turn_arrives_is_replaced_unseen(client: TestClient) -> None:
    _, first = await run_turn(client, {"prompt": "one @die-at-next"})
    sid = session_of(first)
    _, second = await run_turn(client, {"prompt": "two", "session_id": sid})
    # The prompt went to the warm CLI, which exited without a line: the turn ran again in
    # a new CLI resuming the session, and the stream shows only that one.
    init = data_events(second)[0]
    assert init["fake_pid"] != data_events(first)[0]["fake_pid"] and "--resume=" + sid in init["fake_argv"]
    assert [e["type"] for e in data_events(second)].count("system") == 1
    assert texts(second) == ["fake answer 2: two"] and data_events(second)[-1]["subtype"] == "success"


async def test_without_warm_clis_a_resume_starts_the_cli_with_resume(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, warm_idle_timeout_s=0)))
    _, first = await run_turn(client, {"prompt": "one"})
    sid = session_of(first)
    _, second = await run_turn(client, {"prompt": "two", "session_id": sid})
    assert "--resume=" + sid in data_events(second)[0]["fake_argv"]
    assert data_events(second)[0]["fake_pid"] != data_events(first)[0]["fake_pid"]
    assert texts(second) == ["fake answer 2: two"]


async def test_fork_records_the_new_id_against_the_same_workspace(client: TestClient) -> None:
    _, first = await run_turn(client, {"prompt": "one"})
    sid = session_of(first)
    _, forked = await run_turn(client, {"prompt": "two", "session_id": sid, "fork_session": True})
    new_sid = session_of(forked)
    assert new_sid != sid
    assert texts(forked) == ["fake answer 2: two"]
    row = await (await client.get(f"/api/sessions/{new_sid}")).json()
    assert row["forked_from"] == sid
    assert row["workspace_path"] == data_events(first)[0]["cwd"]
    # the old one stays resumable
    _, again = await run_turn(client, {"prompt": "three", "session_id": sid})
    assert session_of(again) == sid


async def test_stream_false_answers_one_json(client: TestClient) -> None:
    resp = await post(client, {"prompt": "quiet", "stream": False})
    assert resp.status == 200
    body = await resp.json()
    assert resp.headers["X-Turn-Id"] == body["turn_id"]
    assert body["result"] == "fake answer 1: quiet"
    assert body["subtype"] == "success" and body["is_error"] is False
    assert body["total_cost_usd"] == 0.001 and body["num_turns"] == 1 and body["duration_ms"] == 5
    assert body["usage"] == {"input_tokens": 10, "output_tokens": 12}
    assert (await client.get(f"/api/sessions/{body['session_id']}")).status == 200


async def test_options_reach_the_cli(client: TestClient) -> None:
    body = {
        "prompt": "opts",
        "model": "sonnet",
        "permission_mode": "acceptEdits",
        "allowedTools": ["Bash(git log:*)", "Read"],
        "disallowed_tools": ["WebFetch"],
        "max_turns": 3,
        "max_budget_usd": 2,
        "append_system_prompt": "be terse",
        "include_partial_messages": True,
    }
    _, events = await run_turn(client, body)
    argv = data_events(events)[0]["fake_argv"]
    for flag in (
        "--model=sonnet",
        "--permission-mode=acceptEdits",
        "--allowedTools=Bash(git log:*),Read",
        "--disallowedTools=WebFetch",
        "--max-turns=3",
        "--max-budget-usd=2.0",
        "--append-system-prompt=be terse",
        "--include-partial-messages",
    ):
        assert flag in argv


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_the_cli_sees_only_allowed_environment(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    environ = {**settings.environ, "CLAUDE_SERVER_API_KEYS": "secret", "CLAUDECODE": "1", "OTHER_SECRET": "x"}
    client = await aiohttp_client(create_app(replace(settings, environ=environ)))
    resp, events = await run_turn(client, {"prompt": "env"})
    env_names = set(data_events(events)[0]["fake_env"])
    assert {"CLAUDE_SERVER_API_KEYS", "CLAUDECODE", "OTHER_SECRET"}.isdisjoint(env_names)
    assert {"PATH", "HOME", "CLAUDE_SERVER_PROCESS_ID"} <= env_names


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_huge_lines_arrive_intact(client: TestClient) -> None:
    size = 8 * 1024 * 1024
    _, events = await run_turn(client, {"prompt": f"@huge={size}"})
    assert texts(events) == ["h" * size]


async def test_non_json_lines_and_stderr_noise_are_not_sent(client: TestClient) -> None:
    _, events = await run_turn(client, {"prompt": "x @nonjson @stderr=1000000"})
    assert [o["type"] for o in data_events(events)] == ["system", "assistant", "result"]
    assert all("not json" not in ev.data for ev in events)


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_ping_after_silence(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "PING_INTERVAL_S", 0.2)
    resp = await post(client, {"prompt": "@sleep=1"})
    raw = (await resp.read()).decode()
    assert ": ping\n\n" in raw
    assert texts(parse_sse(raw)) == ["fake answer 1: @sleep=1"]


# ---- failures after the stream started ------------------------------------------------------


def error_event(events: list[SseEvent]) -> dict[str, Any]:
    assert events[-1].event == "error", events
    body = events[-1].json()
    assert body["type"] == "error"
    return dict(body)


async def test_exit_without_result_is_an_error_event(client: TestClient) -> None:
    resp, events = await run_turn(client, {"prompt": "@exit=3 @stderr=20"})
    err = error_event(events)
    assert err["code"] == "cli_failed"
    assert err["exit_code"] == 3
    assert "exited with code 3" in err["message"]
    assert "noise" in err["stderr_tail"]
    assert events[-1].id == f"{resp.headers['X-Turn-Id']}:{len(events)}"


async def test_exit_without_result_without_stream_is_502(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@exit=3", "stream": False})
    assert resp.status == 502
    body = await resp.json()
    assert body["error"]["code"] == "cli_failed" and body["error"]["exit_code"] == 3


@pytest.mark.sqlite
async def test_death_before_init_leaves_no_session_and_no_workspace(client: TestClient, settings: Settings) -> None:
    _, events = await run_turn(client, {"prompt": "@die-before-init"})
    err = error_event(events)
    assert err["code"] == "cli_failed"
    assert "died before init" in err["message"]
    assert list(Path(settings.workspace_root).iterdir()) == []
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        status, error = conn.execute("SELECT status, error FROM turns").fetchone()
    assert status == "failed" and json.loads(error)["code"] == "cli_failed"


async def test_skip_permissions_as_root_says_how_to_fix_it(client: TestClient) -> None:
    _, events = await run_turn(client, {"prompt": "@as-root", "dangerously-skip-permissions": True})
    err = error_event(events)
    assert "IS_SANDBOX=1" in err["message"]
    assert "root/sudo" in err["stderr_tail"]


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_inactivity_timeout(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, inactivity_timeout_s=0.5)))
    _, events = await run_turn(client, {"prompt": "@sleep=30"})
    assert error_event(events)["code"] == "inactivity_timeout"


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_turn_timeout(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, turn_timeout_s=1.0)))
    _, events = await run_turn(client, {"prompt": "@lines=50 @slow=0.1"})
    assert error_event(events)["code"] == "turn_timeout"
    assert 3 <= len(texts(events)) < 50


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_timeout_without_stream_is_504(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, inactivity_timeout_s=0.5)))
    resp = await post(client, {"prompt": "@sleep=30", "stream": False})
    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "inactivity_timeout"


@pytest.mark.sqlite  # the CLI's process, not the store
async def test_a_cli_that_never_exits_after_its_result_is_ended(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "POST_RESULT_GRACE_S", 0.3)
    _, events = await run_turn(client, {"prompt": "@hang-after-result"})
    assert data_events(events)[-1]["type"] == "result"
    assert all(ev.event != "error" for ev in events)


# ---- processes ------------------------------------------------------------------------------


async def disconnect_mid_turn(client: TestClient, prompt: str) -> tuple[str, str, int]:
    resp = await post(client, {"prompt": prompt})
    turn_id = resp.headers["X-Turn-Id"]
    seen = await read_until(resp, is_assistant)
    text = texts(seen)[0]
    grandchild = int(text.rsplit("pid=", 1)[1]) if "pid=" in text else 0
    process = await process_of(client, turn_id)
    assert marked_pids(process)
    resp.close()
    return turn_id, process, grandchild


@pytest.mark.parametrize("prompt", ["@grandchild @sleep=30", "@grandchild @ignore-term @sleep=30"])
async def test_without_warm_clis_a_disconnect_ends_the_whole_process_tree_within_2s(
    aiohttp_client,
    settings: Settings,
    prompt: str,  # type: ignore[no-untyped-def]
) -> None:
    client = await aiohttp_client(create_app(replace(settings, warm_idle_timeout_s=0)))
    loop = asyncio.get_running_loop()
    _, process, grandchild = await disconnect_mid_turn(client, prompt)
    started = loop.time()
    assert await eventually(lambda: not marked_pids(process) and not pid_alive(grandchild), 2.0)
    assert loop.time() - started < 2.0
    broker = client.app[BROKER]
    assert await eventually(lambda: not broker.running(), 2.0)


async def test_a_disconnect_interrupts_the_turn_and_keeps_the_cli_warm(client: TestClient) -> None:
    loop = asyncio.get_running_loop()
    turn_id, process, _ = await disconnect_mid_turn(client, "@grandchild @sleep=30")
    started = loop.time()
    broker = client.app[BROKER]
    assert await eventually(lambda: not broker.running(), 2.0)
    assert loop.time() - started < 2.0
    assert marked_pids(process)
    row = await (await client.get(f"/api/turns/{turn_id}")).json()
    assert (row["status"], row["error"]["code"]) == ("cancelled", "client_disconnected")
    _, events = await run_turn(client, {"prompt": "back", "session_id": row["session_id"]})
    assert await process_of(client, events[0].id.rsplit(":", 1)[0]) == process  # type: ignore[union-attr]


@pytest.mark.sqlite
async def test_session_resumes_after_a_disconnect(client: TestClient, settings: Settings) -> None:
    resp = await post(client, {"prompt": "@sleep=30"})
    init = await read_until(resp, lambda ev: ev.event is None)
    sid = session_of(init)
    resp.close()
    broker = client.app[BROKER]
    assert await eventually(lambda: broker.running_on(sid) is None, 3.0)
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT status FROM turns").fetchone() == ("cancelled",)
    _, events = await run_turn(client, {"prompt": "back", "session_id": sid})
    assert texts(events) == ["fake answer 2: back"]


async def test_a_busy_session_is_409(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@sleep=30"})
    sid = session_of(await read_until(resp, lambda ev: ev.event is None))
    busy = await post(client, {"prompt": "again", "session_id": sid})
    assert busy.status == 409
    body = await busy.json()
    assert body["error"]["code"] == "session_busy"
    assert body["error"]["turn_id"] == resp.headers["X-Turn-Id"]
    resp.close()


async def test_shutdown_ends_running_turns(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@grandchild @sleep=30"})
    turn_id = resp.headers["X-Turn-Id"]
    await read_until(resp, is_assistant)
    process = await process_of(client, turn_id)
    assert marked_pids(process)
    shutdown = asyncio.create_task(client.app[BROKER].shutdown())
    rest = await read_until(resp, lambda ev: ev.event == "error")
    assert rest[-1].json()["code"] == "server_shutdown"
    await shutdown
    assert not marked_pids(process)
    refused = await post(client, {"prompt": "late"})
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "shutting_down"


# ---- errors before any stream ---------------------------------------------------------------


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "prompt", "is required"),
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   \n"}, "prompt", "empty"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": "x", "bogus": 1}, "bogus", "unknown field"),
        ({"prompt": "x", "allowedTools": "Bash"}, "allowedTools", "list"),
        ({"prompt": "x", "allowedTools": [1]}, "allowedTools.0", "string"),
        ({"prompt": "x", "allowedTools": ["-rf"]}, "allowedTools.0", "start with '-'"),
        ({"prompt": "x", "disallowedTools": [""]}, "disallowedTools.0", "empty"),
        ({"prompt": "x", "max_turns": "3"}, "max_turns", "integer"),
        ({"prompt": "x", "max_turns": 0}, "max_turns", "greater than or equal to 1"),
        ({"prompt": "x", "max_turns": True}, "max_turns", "integer"),
        ({"prompt": "x", "max_budget_usd": -1}, "max_budget_usd", "greater than 0"),
        ({"prompt": "x", "stream": "yes"}, "stream", "boolean"),
        ({"prompt": "x", "dangerously-skip-permissions": 1}, "dangerously-skip-permissions", "boolean"),
        (
            {"prompt": "x", "dangerously-skip-permissions": True, "dangerously_skip_permissions": True},
            "dangerously_skip_permissions",
            "unknown field",
        ),
        ({"prompt": "x", "permission_mode": "yolo"}, "permission_mode", "acceptEdits"),
        ({"prompt": "x", "model": "a\x00b"}, "model", "NUL"),
        ({"prompt": "x", "model": ""}, "model", "at least 1"),
        ({"prompt": "x", "session_id": "../etc"}, "session_id", "not a session id"),
        ({"prompt": "x", "system_prompt": "s" * 200_000}, "system_prompt", "command-line argument"),
        ({"prompt": "x", "session_id": "abc", "system_prompt": "s"}, "system_prompt", "resumed turn"),
        ({"prompt": "x", "session_id": "abc", "append_system_prompt": "s"}, "append_system_prompt", "resumed"),
        ({"prompt": "x", "fork_session": True}, "fork_session", "needs a session_id"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    client: TestClient, settings: Settings, body: dict[str, Any], field: str, words: str
) -> None:
    resp = await post(client, body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_field"
    assert err["field"] == field
    assert field in err["message"] and words in err["message"]
    assert not Path(settings.workspace_root).exists() or list(Path(settings.workspace_root).iterdir()) == []


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        ("not json", JSON, 400, "invalid_json"),
        ("[1, 2]", JSON, 400, "invalid_json"),
        (b"\xff\xfe", JSON, 400, "invalid_json"),
        ('{"prompt": "a\\ud800b"}', JSON, 400, "invalid_json"),
        ('{"prompt": "x", "metadata": {"k": "\\udfff"}}', JSON, 400, "invalid_json"),
        ('{"prompt": "x"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("prompt=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
)
async def test_bad_bodies(client: TestClient, data: Any, headers: dict[str, str], status: int, code: str) -> None:
    resp = await post(client, data, headers)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


async def test_body_too_large_is_413(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_body_bytes=1024)))
    resp = await post(client, {"prompt": "x" * 2048})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"


async def test_unknown_session_is_404(client: TestClient, settings: Settings) -> None:
    resp = await post(client, {"prompt": "x", "session_id": "00000000-0000-0000-0000-000000000000"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "session_not_found"
    assert (await client.get("/api/sessions/nope")).status == 404


async def test_unknown_route_and_method_answer_json(client: TestClient) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/api/claude")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


# ---- the CLI missing, health, CORS ----------------------------------------------------------


async def test_missing_cli_is_503_with_install_hint_and_health_says_so(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, claude_bin="claude-is-not-installed")))
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["cli"]["found"] is False and "not found" in health["cli"]["error"]
    resp = await post(client, {"prompt": "x"})
    assert resp.status == 503
    err = (await resp.json())["error"]
    assert err["code"] == "cli_not_found" and "npm install" in err["message"]


async def test_a_cli_that_exits_the_instant_it_starts_is_an_error_event_never_a_500(
    aiohttp_client, settings: Settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cli = tmp_path / "claude"
    cli.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {FAKE_CLI} "$@"\nexit 1\n')
    cli.chmod(0o755)
    client = await aiohttp_client(create_app(replace(settings, claude_bin=str(cli))))
    for _ in range(8):
        resp = await post(client, {"prompt": "x"})
        assert resp.status == 200
        events = parse_sse(await asyncio.wait_for(resp.text(), 20))
        assert events[-1].event == "error" and events[-1].json()["code"] == "cli_failed", events[-1]
    whole = await post(client, {"prompt": "x", "stream": False})
    assert whole.status == 502 and (await whole.json())["error"]["code"] == "cli_failed"


async def test_health(client: TestClient) -> None:
    body = await (await client.get("/health")).json()
    assert body["status"] == "ok" and body["problems"] == []
    assert body["cli"] == {
        "found": True,
        "version": "9.9.9 (Fake Claude Code)",
        "path": str(Path(__file__).resolve().parent / "fake_claude.py"),
        "error": None,
        "tested_version": TESTED_CLI_VERSION,
        "warning": body["cli"]["warning"],
    }
    # The fake's version is not the tested one: said, but not a reason to be degraded.
    assert "9.9.9" in body["cli"]["warning"] and TESTED_CLI_VERSION in body["cli"]["warning"]
    assert body["warnings"] == [body["cli"]["warning"]]
    assert body["credentials"]["found"] is True
    assert body["running_turns"] == 0
    assert isinstance(body["version"], str)


async def test_health_is_degraded_without_credentials(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    environ = {k: v for k, v in settings.environ.items() if k != "ANTHROPIC_API_KEY"}
    client = await aiohttp_client(create_app(replace(settings, environ=environ)))
    body = await (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert body["credentials"]["found"] is False
    assert "ANTHROPIC_API_KEY" in body["problems"][0] and "not logged in" in body["problems"][0]


async def test_not_logged_in_fails_the_turn_with_a_code(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    environ = {k: v for k, v in settings.environ.items() if k != "ANTHROPIC_API_KEY"}
    client = await aiohttp_client(create_app(replace(settings, environ=environ)))
    resp, events = await run_turn(client, {"prompt": "hello"})
    assert data_events(events)[-1]["type"] == "result" and data_events(events)[-1]["is_error"] is True
    error = events[-1]
    assert error.event == "error" and error.json()["code"] == "not_logged_in"
    assert "ANTHROPIC_API_KEY" in error.json()["message"]
    turn = await (await client.get(f"/api/turns/{resp.headers['X-Turn-Id']}")).json()
    assert turn["status"] == "failed" and turn["error"]["code"] == "not_logged_in"
    # Without streaming: an error status with the code, and the result kept.
    resp = await post(client, {"prompt": "hello", "stream": False})
    assert resp.status == 502
    body = await resp.json()
    assert body["error"]["code"] == "not_logged_in" and body["error"]["result"]["is_error"] is True


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        (401, "authentication_failed", 502),
        (429, "api_rate_limited", 429),
        (500, "api_error", 502),
        (529, "api_overloaded", 503),
    ],
)
async def test_api_errors_the_cli_gave_up_on_have_codes(client: TestClient, status: int, code: str, http: int) -> None:
    resp, events = await run_turn(client, {"prompt": f"@api-error={status}"})
    assert events[-1].event == "error" and events[-1].json()["code"] == code
    resp = await post(client, {"prompt": f"@api-error={status}", "stream": False})
    assert resp.status == http and (await resp.json())["error"]["code"] == code


async def test_cors(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, cors_origins=("http://chat.example",))))
    pre = await client.options(
        "/api/claude",
        headers={
            "Origin": "http://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status == 200
    assert pre.headers["Access-Control-Allow-Origin"] == "http://chat.example"
    resp = await post(client, {"prompt": "cors"}, {**JSON, "Origin": "http://chat.example"})
    await resp.read()
    assert resp.headers["Access-Control-Allow-Origin"] == "http://chat.example"
    assert "X-Turn-Id" in resp.headers.get("Access-Control-Expose-Headers", "")


@pytest.mark.sqlite
async def test_migrations_are_applied_once(client: TestClient, settings: Settings) -> None:
    with sqlite3.connect(settings.db_path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
    assert names == sorted(p.name for p in (Path(__file__).resolve().parent.parent / "migrations").glob("*.sql"))
