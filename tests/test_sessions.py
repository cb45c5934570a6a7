"""Sessions, turns, replay, detach, interrupt, conversations, named workspaces, retention
(with the fake CLI)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.appkeys import BROKER, SESSIONS
from claude_server.config import Settings
from claude_server.routes import sessions as session_routes
from tests.helpers import (
    JSON,
    data_events,
    eventually,
    is_assistant,
    parse_sse,
    post,
    read_until,
    run_turn,
    session_of,
    texts,
)

pytestmark = pytest.mark.backends


async def new_session(client: TestClient, prompt: str = "hello", **extra: Any) -> str:
    _, events = await run_turn(client, {"prompt": prompt, **extra})
    return session_of(events)


def set_last_used(settings: Settings, sid: str, when: str) -> None:
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("UPDATE sessions SET last_used_at = ? WHERE session_id = ?", (when, sid))


def transcripts(settings: Settings, sid: str) -> list[Path]:
    return list((Path(settings.environ["HOME"]) / ".claude" / "projects").glob(f"*/{sid}.jsonl"))


# ---- listing ------------------------------------------------------------------------------


async def test_list_is_newest_first_with_cursor_pages(client: TestClient) -> None:
    sids = [await new_session(client, f"prompt number {i}") for i in range(5)]
    page = await (await client.get("/api/sessions?limit=2")).json()
    assert [s["session_id"] for s in page["sessions"]] == sids[::-1][:2]
    seen = [s["session_id"] for s in page["sessions"]]
    while page["next_cursor"]:
        page = await (await client.get(f"/api/sessions?limit=2&cursor={page['next_cursor']}")).json()
        seen += [s["session_id"] for s in page["sessions"]]
    assert seen == sids[::-1]
    item = (await (await client.get("/api/sessions?limit=1")).json())["sessions"][0]
    assert set(item) == {
        "session_id",
        "title",
        "created_at",
        "last_used_at",
        "turn_count",
        "total_cost_usd",
        "last_turn_status",
        "workspace",
        "conversation_id",
    }
    assert item["title"] == "prompt number 4"
    assert item["turn_count"] == 1 and item["total_cost_usd"] == 0.001
    assert item["last_turn_status"] == "succeeded"
    assert item["workspace"].startswith("session-")


async def test_list_filter_is_case_insensitive_and_kept_by_the_cursor(client: TestClient) -> None:
    wanted = [await new_session(client, f"Über CAFÉ plan {i}") for i in range(3)]
    await new_session(client, "something else")
    long_prompt = "x" * 300 + " needle über café at the end"
    wanted.append(await new_session(client, long_prompt))  # beyond the title, in the whole first prompt
    page = await (await client.get("/api/sessions", params={"q": "über café", "limit": "2"})).json()
    seen = [s["session_id"] for s in page["sessions"]]
    while page["next_cursor"]:
        page = await (await client.get("/api/sessions", params={"cursor": page["next_cursor"], "limit": "2"})).json()
        seen += [s["session_id"] for s in page["sessions"]]
    assert sorted(seen) == sorted(wanted)
    # a title set by PATCH is searched too
    sid = wanted[0]
    await client.patch(f"/api/sessions/{sid}", json={"title": "Renamed ZEBRA"})
    found = await (await client.get("/api/sessions", params={"q": "zebra"})).json()
    assert [s["session_id"] for s in found["sessions"]] == [sid]


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=abc", "cursor=not-a-cursor", "q=" + "x" * 1001],
)
async def test_list_bad_parameters(client: TestClient, query: str) -> None:
    resp = await client.get(f"/api/sessions?{query}")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_parameter"


async def test_list_cursor_disagreeing_with_q_is_400(client: TestClient) -> None:
    for i in range(2):
        await new_session(client, f"alpha {i}")
    page = await (await client.get("/api/sessions", params={"q": "alpha", "limit": "1"})).json()
    resp = await client.get("/api/sessions", params={"q": "beta", "cursor": page["next_cursor"]})
    assert resp.status == 400


# ---- get, patch, delete -----------------------------------------------------------------


async def test_get_shows_the_running_turn(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@sleep=30"})
    sid = session_of(await read_until(resp, lambda ev: ev.event is None))
    got = await (await client.get(f"/api/sessions/{sid}")).json()
    assert got["running_turn"]["turn_id"] == resp.headers["X-Turn-Id"]
    assert got["running_turn"]["status"] == "running"
    assert got["title"] == "@sleep=30" and got["metadata"] == {} and got["conversation_id"] is None
    resp.close()


async def test_patch_title_and_metadata_independently(client: TestClient) -> None:
    sid = await new_session(client, "a first prompt")
    r = await client.patch(f"/api/sessions/{sid}", json={"title": "My chat"})
    assert r.status == 200 and (await r.json())["title"] == "My chat"
    r = await client.patch(f"/api/sessions/{sid}", json={"metadata": {"tags": ["x"], "n": 1}})
    body = await r.json()
    assert body["title"] == "My chat" and body["metadata"] == {"tags": ["x"], "n": 1}
    r = await client.patch(f"/api/sessions/{sid}", json={"title": "Again"})
    assert (await r.json())["metadata"] == {"tags": ["x"], "n": 1}
    r = await client.patch(f"/api/sessions/{sid}", json={"metadata": {"only": True}})
    assert (await r.json())["metadata"] == {"only": True}  # replaced as a whole
    r = await client.patch(f"/api/sessions/{sid}", json={"title": None})
    assert (await r.json())["title"] == "a first prompt"  # back to the default
    got = await (await client.get(f"/api/sessions/{sid}")).json()
    assert got["metadata"] == {"only": True}


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"title": 5}, 400, "invalid_field"),
        ({"metadata": [1, 2]}, 400, "invalid_field"),
        ({"metadata": None}, 400, "invalid_field"),
        ({"title": "x" * 501}, 400, "invalid_field"),
        ({"owner": "me"}, 400, "invalid_field"),
        ({"metadata": {"big": "x" * (64 * 1024)}}, 413, "metadata_too_large"),
    ],
)
async def test_patch_errors(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    sid = await new_session(client)
    r = await client.patch(f"/api/sessions/{sid}", json=body)
    assert r.status == status
    assert (await r.json())["error"]["code"] == code


async def test_patch_and_delete_unknown_session_are_404(client: TestClient) -> None:
    assert (await client.patch("/api/sessions/nope", json={"title": "x"})).status == 404
    assert (await client.delete("/api/sessions/nope")).status == 404


@pytest.mark.sqlite
async def test_delete_removes_rows_workspace_and_transcripts(client: TestClient, settings: Settings) -> None:
    sid = await new_session(client)
    workspace = Path((await (await client.get(f"/api/sessions/{sid}")).json())["workspace_path"])
    assert workspace.is_dir() and transcripts(settings, sid)
    assert (await client.delete(f"/api/sessions/{sid}")).status == 204
    assert not workspace.exists()
    assert not transcripts(settings, sid)
    assert (await client.get(f"/api/sessions/{sid}")).status == 404
    assert (await client.delete(f"/api/sessions/{sid}")).status == 404
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


async def test_delete_keeps_a_workspace_a_fork_still_uses(client: TestClient, settings: Settings) -> None:
    sid = await new_session(client)
    _, forked = await run_turn(client, {"prompt": "fork", "session_id": sid, "fork_session": True})
    fork = session_of(forked)
    workspace = Path(data_events(forked)[0]["cwd"])
    assert (await client.delete(f"/api/sessions/{sid}")).status == 204
    assert workspace.is_dir()
    assert not transcripts(settings, sid) and transcripts(settings, fork)
    assert (await client.delete(f"/api/sessions/{fork}")).status == 204
    assert not workspace.exists()


async def test_delete_stops_a_running_turn(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@sleep=30"})
    sid = session_of(await read_until(resp, lambda ev: ev.event is None))
    assert (await client.delete(f"/api/sessions/{sid}")).status == 204
    rest = await read_until(resp, lambda ev: ev.event == "error")
    assert rest[-1].json()["code"] == "session_deleted"
    assert not client.app[BROKER].running()


# ---- history, turns and replay ----------------------------------------------------------------


async def test_messages_are_the_recorded_conversation(client: TestClient) -> None:
    sid = await new_session(client, "first")
    await run_turn(client, {"prompt": "second", "session_id": sid})
    body = await (await client.get(f"/api/sessions/{sid}/messages")).json()
    assert body["next_cursor"] is None
    assert [t["prompt"] for t in body["turns"]] == ["first", "second"]
    for turn in body["turns"]:
        assert [e["type"] for e in turn["events"]] == ["system", "assistant", "result"]
        assert turn["status"] == "succeeded"
    page = await (await client.get(f"/api/sessions/{sid}/messages?limit=1")).json()
    assert [t["prompt"] for t in page["turns"]] == ["first"]
    page = await (await client.get(f"/api/sessions/{sid}/messages?limit=1&cursor={page['next_cursor']}")).json()
    assert [t["prompt"] for t in page["turns"]] == ["second"] and page["next_cursor"] is None


async def test_a_page_of_messages_holds_a_bounded_amount_of_events(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_routes, "MESSAGES_MAX_BYTES", 5000)
    sid = await new_session(client, "@huge=6000")
    await run_turn(client, {"prompt": "small", "session_id": sid})
    page = await (await client.get(f"/api/sessions/{sid}/messages")).json()
    assert [t["prompt"] for t in page["turns"]] == ["@huge=6000"]  # a turn is never split
    page = await (await client.get(f"/api/sessions/{sid}/messages?cursor={page['next_cursor']}")).json()
    assert [t["prompt"] for t in page["turns"]] == ["small"] and page["next_cursor"] is None


async def test_turn_status_and_replay_of_a_finished_turn(client: TestClient) -> None:
    resp, events = await run_turn(client, {"prompt": "@lines=4"})
    turn_id = resp.headers["X-Turn-Id"]
    info = await (await client.get(f"/api/turns/{turn_id}")).json()
    assert info["status"] == "succeeded" and info["last_seq"] == len(events) == 6
    assert info["session_id"] == session_of(events) and info["cost_usd"] == 0.001
    replay = parse_sse(await (await client.get(f"/api/turns/{turn_id}/events")).text())
    assert [(e.id, e.data) for e in replay] == [(e.id, e.data) for e in events]
    tail = parse_sse(
        await (await client.get(f"/api/turns/{turn_id}/events", headers={"Last-Event-ID": f"{turn_id}:4"})).text()
    )
    assert [e.id for e in tail] == [f"{turn_id}:5", f"{turn_id}:6"]
    bare = parse_sse(await (await client.get(f"/api/turns/{turn_id}/events?after=5")).text())
    assert [e.id for e in bare] == [f"{turn_id}:6"]
    # the header wins over the query
    both = await client.get(f"/api/turns/{turn_id}/events?after=1", headers={"Last-Event-ID": "5"})
    assert [e.id for e in parse_sse(await both.text())] == [f"{turn_id}:6"]


async def test_replay_keeps_the_error_event(client: TestClient) -> None:
    resp, events = await run_turn(client, {"prompt": "@exit=4"})
    replay = parse_sse(await (await client.get(f"/api/turns/{resp.headers['X-Turn-Id']}/events")).text())
    assert replay[-1].event == "error" and replay[-1].json()["code"] == "cli_failed"
    assert [(e.id, e.event, e.data) for e in replay] == [(e.id, e.event, e.data) for e in events]


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize(
    "headers",
    [{"Last-Event-ID": "other-turn:3"}, {"Last-Event-ID": "abc"}, {"Last-Event-ID": "-1"}],
)
async def test_bad_last_event_id_is_400(client: TestClient, headers: dict[str, str]) -> None:
    resp, _ = await run_turn(client, {"prompt": "x"})
    r = await client.get(f"/api/turns/{resp.headers['X-Turn-Id']}/events", headers=headers)
    assert r.status == 400
    assert (await r.json())["error"]["field"] == "Last-Event-ID"


async def test_unknown_turn_is_404(client: TestClient) -> None:
    for path in ("/api/turns/nope", "/api/turns/nope/events"):
        r = await client.get(path)
        assert r.status == 404 and (await r.json())["error"]["code"] == "turn_not_found"
    assert (await client.post("/api/turns/nope/cancel")).status == 404


async def test_reconnect_gets_exactly_the_missed_events_then_the_live_tail(client: TestClient) -> None:
    first = await post(client, {"prompt": "@lines=8 @slow=0.2"})
    turn_id = first.headers["X-Turn-Id"]
    seen = await read_until(first, lambda ev: ev.id == f"{turn_id}:3")
    # A second follower takes over from the last id the first one saw (a reconnect), while
    # the first one stays (so the turn is not cancelled when it leaves).
    second = await client.get(f"/api/turns/{turn_id}/events", headers={"Last-Event-ID": seen[-1].id or ""})
    first.close()
    rest = parse_sse(await second.text())
    ids = [e.id for e in seen + rest]
    assert ids == [f"{turn_id}:{n}" for n in range(1, len(ids) + 1)]
    assert json.loads(rest[-1].data)["type"] == "result"


async def test_the_last_follower_leaving_cancels_a_turn(client: TestClient, settings: Settings) -> None:
    first = await post(client, {"prompt": "@lines=30 @slow=0.2"})
    turn_id = first.headers["X-Turn-Id"]
    await read_until(first, is_assistant)
    second = await client.get(f"/api/turns/{turn_id}/events")
    await read_until(second, is_assistant)
    first.close()
    await asyncio.sleep(0.5)
    assert client.app[BROKER].get(turn_id) is not None  # still followed by the second one
    second.close()
    assert await eventually(lambda: client.app[BROKER].get(turn_id) is None, 3)
    info = await (await client.get(f"/api/turns/{turn_id}")).json()
    assert info["status"] == "cancelled" and info["error"]["code"] == "client_disconnected"


async def test_detached_turn_runs_on_and_can_be_reattached(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@lines=6 @slow=0.3", "detach": True})
    turn_id = resp.headers["X-Turn-Id"]
    await read_until(resp, is_assistant)
    resp.close()
    await asyncio.sleep(0.5)
    assert client.app[BROKER].get(turn_id) is not None
    again = await client.get(f"/api/turns/{turn_id}/events")
    events = parse_sse(await again.text())
    assert [e.id for e in events] == [f"{turn_id}:{n}" for n in range(1, 9)]
    info = await (await client.get(f"/api/turns/{turn_id}")).json()
    assert info["status"] == "succeeded" and info["detach"] is True


# ---- interrupt -----------------------------------------------------------------------------


async def test_interrupt_a_session(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@grandchild @sleep=30"})
    sid = session_of(await read_until(resp, is_assistant))
    r = await client.post(f"/api/sessions/{sid}/interrupt")
    assert r.status == 200
    assert (await r.json())["status"] == "cancelled"
    rest = await read_until(resp, lambda ev: ev.event == "error")
    assert rest[-1].json()["code"] == "cancelled"
    assert (await resp.content.read()) == b""  # and the stream ends
    assert (await client.post(f"/api/sessions/{sid}/interrupt")).status == 409
    assert (await client.post("/api/sessions/nope/interrupt")).status == 404
    _, events = await run_turn(client, {"prompt": "still here", "session_id": sid})
    assert texts(events) == ["fake answer 2: still here"]


async def test_cancel_a_turn(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@sleep=30"})
    turn_id = resp.headers["X-Turn-Id"]
    await read_until(resp, lambda ev: ev.event is None)
    r = await client.post(f"/api/turns/{turn_id}/cancel")
    assert r.status == 200
    assert (await (await client.get(f"/api/turns/{turn_id}")).json())["status"] == "cancelled"
    again = await client.post(f"/api/turns/{turn_id}/cancel")
    assert again.status == 409 and (await again.json())["error"]["code"] == "not_running"


# ---- conversations and named workspaces ---------------------------------------------------------


async def test_conversation_id_binds_and_resumes(client: TestClient) -> None:
    _, first = await run_turn(client, {"prompt": "one", "conversation_id": "chat-42"})
    sid = session_of(first)
    _, second = await run_turn(client, {"prompt": "two", "conversation_id": "chat-42"})
    assert session_of(second) == sid and texts(second) == ["fake answer 2: two"]
    got = await (await client.get(f"/api/sessions/{sid}")).json()
    assert got["conversation_id"] == "chat-42"
    found = await (await client.get("/api/sessions", params={"conversation_id": "chat-42"})).json()
    assert [s["session_id"] for s in found["sessions"]] == [sid]
    other = await new_session(client, "unrelated", conversation_id="chat-43")
    assert other != sid
    bad = await post(client, {"prompt": "x", "conversation_id": "chat-42", "session_id": other})
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "conversation_id"
    # a fork does not move the binding
    _, forked = await run_turn(client, {"prompt": "f", "conversation_id": "chat-42", "fork_session": True})
    assert session_of(forked) != sid
    _, third = await run_turn(client, {"prompt": "three", "conversation_id": "chat-42"})
    assert session_of(third) == sid
    # deleting the session frees its conversation id
    assert (await client.delete(f"/api/sessions/{sid}")).status == 204
    fresh = await new_session(client, "fresh", conversation_id="chat-42")
    assert fresh not in (sid, other)


async def test_conversation_id_binds_an_existing_session(client: TestClient) -> None:
    sid = await new_session(client)
    _, events = await run_turn(client, {"prompt": "x", "session_id": sid, "conversation_id": "late"})
    assert session_of(events) == sid
    _, events = await run_turn(client, {"prompt": "y", "conversation_id": "late"})
    assert session_of(events) == sid


async def test_a_second_first_turn_of_a_conversation_is_409(client: TestClient) -> None:
    resp = await post(client, {"prompt": "@sleep=30", "conversation_id": "dup"})
    await read_until(resp, lambda ev: ev.event is None)
    busy = await post(client, {"prompt": "again", "conversation_id": "dup"})
    assert busy.status == 409 and (await busy.json())["error"]["code"] == "session_busy"
    resp.close()


async def test_named_workspace_is_shared(client: TestClient, settings: Settings) -> None:
    _, a = await run_turn(client, {"prompt": "a", "workspace": "team.project-1"})
    _, b = await run_turn(client, {"prompt": "b", "workspace": "team.project-1"})
    cwd = Path(data_events(a)[0]["cwd"])
    assert cwd == Path(data_events(b)[0]["cwd"]) == Path(settings.workspace_root).resolve() / "team.project-1"
    listed = await (await client.get("/api/sessions")).json()
    assert {s["workspace"] for s in listed["sessions"]} == {"team.project-1"}
    wrong = await post(client, {"prompt": "c", "session_id": session_of(a), "workspace": "elsewhere"})
    assert wrong.status == 400
    assert (await client.delete(f"/api/sessions/{session_of(a)}")).status == 204
    assert cwd.is_dir()
    assert (await client.delete(f"/api/sessions/{session_of(b)}")).status == 204
    assert not cwd.exists()


async def test_a_workspace_name_taken_by_a_file_is_409(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_concurrent=1, queue_timeout_s=1)))
    root = Path(settings.workspace_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes").write_text("a file, not a folder")
    r = await post(client, {"prompt": "x", "workspace": "notes"})
    assert r.status == 409 and (await r.json())["error"]["code"] == "workspace_unavailable"
    ok = await post(client, {"prompt": "x", "stream": False})  # the slot it took was given back
    assert ok.status == 200


@pytest.mark.sqlite  # validation before the store
@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 65, "session-1234", "a b"])
async def test_bad_workspace_names(client: TestClient, name: str) -> None:
    r = await post(client, {"prompt": "x", "workspace": name})
    assert r.status == 400 and (await r.json())["error"]["field"] == "workspace"


async def test_conversation_id_limits(client: TestClient) -> None:
    for value in ("", "x" * 257, 5):
        r = await post(client, {"prompt": "x", "conversation_id": value})
        assert r.status == 400 and (await r.json())["error"]["field"] == "conversation_id"


# ---- restart and retention ------------------------------------------------------------------


@pytest.mark.sqlite
async def test_restart_marks_running_turns_interrupted_and_kills_their_processes(
    aiohttp_client, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    sid = await new_session(await aiohttp_client(create_app(settings)))
    turn_id = "0d0e5d7e-1111-4222-8333-444455556666"
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute(
            "INSERT INTO turns (turn_id, session_id, resumed_from, status, prompt, options, workspace_path, "
            "started_at) VALUES (?, ?, ?, 'running', 'p', '{}', '/nowhere', '2026-01-01T00:00:00.000Z')",
            (turn_id, sid, sid),
        )
        conn.execute(
            "INSERT INTO events (turn_id, first_seq, last_seq, data) VALUES (?, 1, 1, ?)", (turn_id, b'{"type":"x"}')
        )
        # A CLI the gone server started and did not end (running, or warm between turns).
        conn.execute(
            "INSERT INTO processes (marker, server_id, session_id, started_at) VALUES (?, 'gone', ?, ?)",
            ("p-left-behind", sid, "2026-01-01T00:00:00.000Z"),
        )
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={"PATH": "/usr/bin:/bin", "CLAUDE_SERVER_PROCESS_ID": "p-left-behind"},
        start_new_session=True,
    )
    try:
        client = await aiohttp_client(create_app(settings))  # a new server process on the same database
        assert leftover.wait(5) == -9
        info = await (await client.get(f"/api/turns/{turn_id}")).json()
        assert info["status"] == "interrupted" and info["error"]["code"] == "interrupted"
        replay = parse_sse(await (await client.get(f"/api/turns/{turn_id}/events")).text())
        assert [e.event for e in replay] == [None, "error"]
        _, events = await run_turn(client, {"prompt": "after restart", "session_id": sid})
        assert session_of(events) == sid
    finally:
        leftover.kill()
        leftover.wait()


@pytest.mark.sqlite
async def test_retention_purges_old_sessions_only(client: TestClient, settings: Settings) -> None:
    old = await new_session(client, "old one")
    fresh = await new_session(client, "fresh one")
    set_last_used(settings, old, "2020-01-01T00:00:00.000Z")
    dry = await client.app[SESSIONS].purge(dry_run=True)
    assert [r.session_id for r in dry] == [old]
    assert (await client.get(f"/api/sessions/{old}")).status == 200
    purged = await client.app[SESSIONS].purge()
    assert [r.session_id for r in purged] == [old]
    assert (await client.get(f"/api/sessions/{old}")).status == 404
    assert (await client.get(f"/api/sessions/{fresh}")).status == 200
    assert not transcripts(settings, old)


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **settings.environ,
        "CLAUDE_SERVER_DB": settings.db_path,
        "CLAUDE_SERVER_WORKSPACE_ROOT": settings.workspace_root,
    }
    return subprocess.run(
        [sys.executable, "-m", "claude_server", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.sqlite
async def test_purge_command(client: TestClient, settings: Settings) -> None:
    old = await new_session(client, "old one")
    fresh = await new_session(client, "fresh one")
    set_last_used(settings, old, "2020-01-01T00:00:00.000Z")
    workspace = Path((await (await client.get(f"/api/sessions/{old}")).json())["workspace_path"])
    dry = await asyncio.to_thread(run_cli, settings, "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [json.loads(line)["session_id"] for line in dry.stdout.splitlines()] == [old]
    assert "would delete 1 session" in dry.stderr
    assert workspace.is_dir()
    done = await asyncio.to_thread(run_cli, settings, "purge")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 session" in done.stderr
    assert not workspace.exists()
    assert (await client.get(f"/api/sessions/{old}")).status == 404
    assert (await client.get(f"/api/sessions/{fresh}")).status == 200


async def test_headers_for_json_requests_are_required_on_patch(client: TestClient) -> None:
    sid = await new_session(client)
    r = await client.patch(f"/api/sessions/{sid}", data="title=x", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    r = await client.patch(f"/api/sessions/{sid}", data="{", headers=JSON)
    assert r.status == 400
