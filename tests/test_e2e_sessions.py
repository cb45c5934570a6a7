"""End to end: sessions, turns, reconnects, interrupts, restarts, files, retention, keys and
admission, through the real server (a subprocess) running the real Claude Code CLI against
the fake Anthropic API (tests/fake_anthropic.py).

The fake model answers ``Echo(<number of conversation messages>): <newest user text>``;
``[[bash: cmd]]`` makes it call the Bash tool and then answer ``Tool said: <output>``;
``[[slow: S]]`` spreads its answer over S seconds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.conftest import RunningServer, base_environ, real_cli_path, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import SseEvent, marked_pids, session_of
from tests.test_e2e_core import (
    ECHO_RE,
    SseReader,
    TurnStream,
    content_blocks,
    data_objects,
    expect_error,
    get_json,
    is_init,
    no_process_left,
    post,
    process_of,
    run_turn,
    start_long_tool,
    tool_ended,
    wait_turn_finished,
)

pytestmark = pytest.mark.e2e

# How soon after an interrupt or a restart no process of the turn may be left.
PROCESS_GONE_TIMEOUT_S = 5.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120)
SKIP_PERMISSIONS = {"dangerously-skip-permissions": True}


# ---- small helpers ------------------------------------------------------------------------


def token() -> str:
    """A word no other test's prompt contains."""
    return f"tok{uuid.uuid4().hex[:10]}"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def seqs(events: list[SseEvent], turn_id: str) -> list[int]:
    """The seq numbers of the events that carry an id (``queued`` events have none)."""
    out = []
    for ev in events:
        if ev.id is not None:
            owner, _, seq = ev.id.rpartition(":")
            assert owner == turn_id, ev
            out.append(int(seq))
    return out


def echo_count(turn: TurnStream, prompt: str) -> int:
    """N of the turn's one ``Echo(N): <prompt>`` answer."""
    echoes = [m for text in turn.texts if (m := ECHO_RE.fullmatch(text))]
    assert [m.group(2) for m in echoes] == [prompt], turn.texts
    return int(echoes[0].group(1))


def is_result(ev: SseEvent) -> bool:
    return ev.event is None and ev.json().get("type") == "result"


def is_text_delta(ev: SseEvent) -> bool:
    if ev.event is not None:
        return False
    obj = ev.json()
    event = obj.get("event") or {}
    return obj.get("type") == "stream_event" and (event.get("delta") or {}).get("type") == "text_delta"


def transcripts(server: RunningServer, session_id: str) -> list[Path]:
    """The CLI's transcripts of a session, whatever project folder they are in."""
    return list((server.home / ".claude" / "projects").glob(f"*/{session_id}.jsonl"))


def tool_outputs(turn: TurnStream) -> str:
    """Everything the Bash tool printed, as the CLI reported it back."""
    out = []
    for block in content_blocks(turn.events, "user", "tool_result"):
        inner = block.get("content")
        out.append(inner if isinstance(inner, str) else json.dumps(inner))
    return "\n".join(out)


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON body (or None) of a request that answers at once."""
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def raw_status(server: RunningServer, method: str, target: str, body: bytes = b"") -> int:
    """Send the request line exactly as written: a client library would normalise the path."""
    url = URL(server.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split(b" ", 2)[1])


@contextlib.asynccontextmanager
async def events_stream(
    http: aiohttp.ClientSession, server: RunningServer, turn_id: str, last_event_id: str | None = None
) -> AsyncIterator[SseReader]:
    """GET /api/turns/{id}/events (from ``Last-Event-ID`` if given), open for reading."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with http.get(f"{server.url}/api/turns/{turn_id}/events", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "text/event-stream"
        yield SseReader(resp)


async def replay(http: aiohttp.ClientSession, server: RunningServer, turn_id: str) -> list[SseEvent]:
    """The whole event log of a turn, as the events endpoint replays it."""
    async with events_stream(http, server, turn_id) as reader:
        return await reader.rest()


@contextlib.asynccontextmanager
async def started_turn(
    http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]
) -> AsyncIterator[tuple[aiohttp.ClientResponse, SseReader]]:
    """A streaming turn, open, after its init line was read."""
    async with await post(http, server, body) as resp:
        assert resp.status == 200, await resp.text()
        reader = SseReader(resp)
        await reader.until(is_init)
        yield resp, reader


@contextlib.asynccontextmanager
async def client_with(headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends ``headers`` (an API key) with every request."""
    async with aiohttp.ClientSession(headers=headers, timeout=REQUEST_TIMEOUT) as session:
        yield session


def kill_leftovers(process_id: str) -> None:
    """Do not leave a failed test's processes behind."""
    for pid in marked_pids(process_id):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m claude_server <args>`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "claude_server", *args], env=env, capture_output=True, text=True, timeout=60
    )


def cli_env(server: RunningServer, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``server`` as far as the command line needs it."""
    return {
        **base_environ(server.home),
        "CLAUDE_SERVER_DB": str(server.root / "sessions.db"),
        "CLAUDE_SERVER_WORKSPACE_ROOT": str(server.workspace_root),
        **(extra or {}),
    }


def db_query(server: RunningServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(server.root / "sessions.db")) as conn, conn:
        return list(conn.execute(sql, params).fetchall())


@contextlib.contextmanager
def dedicated_server(root: Path, api: FakeAnthropic, extra_env: dict[str, str]) -> Iterator[RunningServer]:
    server = start_server(root, api, real_cli_path(), extra_env)
    try:
        yield server
    finally:
        stop_server(server)


# ---- sessions: list, get, patch, delete, history ------------------------------------------


async def test_list_get_patch_and_delete_sessions(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    url = f"{e2e_server.url}/api/sessions"
    tok = token()
    first = await run_turn(http, e2e_server, {"prompt": f"Alpha {tok} first"})
    second = await run_turn(http, e2e_server, {"prompt": f"Beta {tok} second"})
    s1, s2 = first.session_id, second.session_id

    async def listed(**params: str) -> dict[str, Any]:
        return await get_json(http, str(URL(url).with_query(params)))

    # Newest first; the filter is case-insensitive; pages follow the cursor.
    both = await listed(q=tok.upper())
    assert [s["session_id"] for s in both["sessions"]] == [s2, s1]
    assert both["next_cursor"] is None
    assert both["sessions"][1]["title"] == f"Alpha {tok} first"
    assert both["sessions"][1]["turn_count"] == 1
    assert [s["session_id"] for s in (await listed(q=f"ALPHA {tok}"))["sessions"]] == [s1]
    page1 = await listed(q=tok, limit="1")
    assert [s["session_id"] for s in page1["sessions"]] == [s2]
    assert page1["next_cursor"]
    page2 = await listed(cursor=page1["next_cursor"], limit="1")
    assert [s["session_id"] for s in page2["sessions"]] == [s1]
    assert page2["next_cursor"] is None

    # PATCH title and metadata; the filter then finds the new title.
    renamed = f"Renamed {token()}"
    async with http.patch(f"{url}/{s1}", json={"title": renamed, "metadata": {"project": "e2e", "n": 1}}) as resp:
        patched = await resp.json()
        assert resp.status == 200, patched
    assert (patched["title"], patched["metadata"]) == (renamed, {"project": "e2e", "n": 1})
    detail = await get_json(http, f"{url}/{s1}")
    assert (detail["title"], detail["metadata"]) == (renamed, {"project": "e2e", "n": 1})
    assert [s["session_id"] for s in (await listed(q=renamed.lower()))["sessions"]] == [s1]

    # DELETE removes the rows, the workspace and the transcripts, and nothing of the other.
    assert transcripts(e2e_server, s1)
    kept = {path: path.read_bytes() for path in transcripts(e2e_server, s2)}
    assert kept
    assert first.cwd.is_dir() and first.cwd != second.cwd
    async with http.delete(f"{url}/{s1}") as resp:
        assert resp.status == 204, await resp.text()
    assert not first.cwd.exists()
    assert transcripts(e2e_server, s1) == []
    for gone in (f"{url}/{s1}", f"{url}/{s1}/messages", f"{e2e_server.url}/api/turns/{first.turn_id}"):
        status, body = await status_of(http, "GET", gone)
        assert status == 404, (gone, body)
    assert (await get_json(http, f"{url}/{s1}", 404))["error"]["code"] == "session_not_found"
    status, body = await status_of(http, "DELETE", f"{url}/{s1}")
    assert (status, body["error"]["code"]) == (404, "session_not_found")

    assert (await get_json(http, f"{url}/{s2}"))["turn_count"] == 1
    assert second.cwd.is_dir()
    assert {path: path.read_bytes() for path in transcripts(e2e_server, s2)} == kept
    assert [s["session_id"] for s in (await listed(q=tok))["sessions"]] == [s2]


async def test_messages_are_the_recorded_history(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    one = await run_turn(http, e2e_server, {"prompt": "first question"})
    two = await run_turn(http, e2e_server, {"prompt": "second question", "session_id": one.session_id})

    history = await get_json(http, f"{e2e_server.url}/api/sessions/{one.session_id}/messages")

    assert history["session_id"] == one.session_id
    assert history["next_cursor"] is None
    turns = history["turns"]
    assert [t["turn_id"] for t in turns] == [one.turn_id, two.turn_id]
    assert [t["prompt"] for t in turns] == ["first question", "second question"]
    assert [t["status"] for t in turns] == ["succeeded", "succeeded"]
    echoes = ("Echo(1): first question", "Echo(3): second question")
    for recorded, streamed, echo in zip(turns, (one, two), echoes, strict=True):
        events = recorded["events"]
        assert events == data_objects(streamed.events)  # the very lines that were streamed
        assert (events[0]["type"], events[0]["subtype"]) == ("system", "init")
        assert events[0]["session_id"] == one.session_id
        assert events[-1]["type"] == "result"
        assert echo in streamed.texts


# ---- following a turn: reconnect, detach ----------------------------------------------------


async def test_reconnect_gets_the_missed_events_then_the_live_tail(
    http: aiohttp.ClientSession, e2e_server: RunningServer
) -> None:
    body = {"prompt": "[[slow: 3]] reconnect with me, " + "word " * 12, "include_partial_messages": True}
    async with await post(http, e2e_server, body) as first:
        assert first.status == 200, await first.text()
        turn_id = first.headers["X-Turn-Id"]
        reader = SseReader(first)
        await reader.until(is_text_delta)
        await reader.until(is_text_delta)
        seen = reader.events
        assert seen[-1].id is not None

        async with events_stream(http, e2e_server, turn_id, last_event_id=seen[-1].id) as second:
            first.close()  # the first connection goes while the second follows
            turn = await get_json(http, f"{e2e_server.url}/api/turns/{turn_id}")
            assert turn["status"] == "running", turn
            tail = await second.rest()

    ids = seqs(seen, turn_id) + seqs(tail, turn_id)
    assert ids == list(range(1, len(ids) + 1)), ids
    assert any(is_text_delta(ev) for ev in tail), "no live event reached the second connection"
    assert is_result(tail[-1]), tail[-1]
    assert tail[-1].json()["subtype"] == "success"
    finished = await wait_turn_finished(http, e2e_server, turn_id)
    assert finished["status"] == "succeeded"
    assert finished["last_seq"] == ids[-1]


async def disconnect_after_init(http: aiohttp.ClientSession, server: RunningServer, body: dict[str, Any]) -> str:
    """Start a streaming turn, drop the connection once it has begun; returns its id."""
    async with started_turn(http, server, body) as (resp, _):
        resp.close()
        return resp.headers["X-Turn-Id"]


async def test_detached_turn_runs_on_and_can_be_reattached(
    http: aiohttp.ClientSession, e2e_server: RunningServer
) -> None:
    prompt = "[[slow: 2]] detached or not"

    async def detach_and_leave() -> str:
        turn_id = await disconnect_after_init(http, e2e_server, {"prompt": prompt, "detach": True})
        turn = await get_json(http, f"{e2e_server.url}/api/turns/{turn_id}")
        assert (turn["status"], turn["detach"]) == ("running", True), turn
        return turn_id

    # The same disconnect, with and without detach, at the same time.
    detached_id, attached_id = await asyncio.gather(
        detach_and_leave(), disconnect_after_init(http, e2e_server, {"prompt": prompt})
    )

    finished = await wait_turn_finished(http, e2e_server, detached_id)
    assert finished["status"] == "succeeded", finished
    events = await replay(http, e2e_server, detached_id)
    assert seqs(events, detached_id) == list(range(1, finished["last_seq"] + 1))
    whole = TurnStream({"X-Turn-Id": detached_id}, events)
    assert whole.texts == [f"Echo(1): {prompt}"]
    assert whole.last["type"] == "result"

    cancelled = await wait_turn_finished(http, e2e_server, attached_id)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["error"]["code"] == "client_disconnected"
    last = (await replay(http, e2e_server, attached_id))[-1]
    assert (last.event, last.json()["code"]) == ("error", "client_disconnected")


# ---- ending a turn: interrupt, server restart -----------------------------------------------


async def test_interrupt_ends_the_turn_and_its_tool(http: aiohttp.ClientSession, e2e_server: RunningServer) -> None:
    resp, reader, process = await start_long_tool(http, e2e_server)
    turn_id = resp.headers["X-Turn-Id"]
    try:
        async with resp:
            session_id = session_of(reader.events)
            async with http.post(f"{e2e_server.url}/api/sessions/{session_id}/interrupt") as answer:
                interrupted = await answer.json()
                assert answer.status == 200, interrupted
            assert (interrupted["turn_id"], interrupted["status"]) == (turn_id, "cancelled")
            events = await reader.rest()
        assert events[-1].event == "error", events[-1]
        assert events[-1].json()["code"] == "cancelled"
        assert (await get_json(http, f"{e2e_server.url}/api/turns/{turn_id}"))["status"] == "cancelled"
        # The tool ends; the CLI stays warm for the session's next turn.
        assert await tool_ended(process, PROCESS_GONE_TIMEOUT_S), f"still running: {marked_pids(process)}"
        assert marked_pids(process)
    except BaseException:
        kill_leftovers(process)
        raise

    status, body = await status_of(http, "POST", f"{e2e_server.url}/api/sessions/{session_id}/interrupt")
    assert (status, body["error"]["code"]) == (409, "not_running")
    again = await run_turn(http, e2e_server, {"prompt": "after the interrupt", "session_id": session_id})
    assert again.session_id == session_id
    assert echo_count(again, "after the interrupt") >= 3


async def test_a_restart_marks_the_running_turn_interrupted_and_ends_its_processes(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
    restarted: RunningServer | None = None
    turn_id = process = ""
    try:
        resp, reader, process = await start_long_tool(http, server)
        turn_id = resp.headers["X-Turn-Id"]
        session_id = session_of(reader.events)
        assert marked_pids(process)
        server.proc.kill()
        await asyncio.to_thread(server.proc.wait, 10)
        resp.close()

        restarted = await asyncio.to_thread(start_server, tmp_path, fake_api, real_cli_path())
        assert await no_process_left(process, PROCESS_GONE_TIMEOUT_S), f"still running: {marked_pids(process)}"
        turn = await get_json(http, f"{restarted.url}/api/turns/{turn_id}")
        assert turn["status"] == "interrupted", turn
        assert turn["error"]["code"] == "interrupted"

        events = await replay(http, restarted, turn_id)
        assert seqs(events, turn_id) == list(range(1, len(events) + 1))
        assert is_init(events[0])
        assert (events[-1].event, events[-1].json()["code"]) == ("error", "interrupted")

        again = await run_turn(http, restarted, {"prompt": "after the restart", "session_id": session_id})
        assert again.session_id == session_id
        assert echo_count(again, "after the restart") >= 3
    finally:
        if process:
            kill_leftovers(process)
        for running in (server, restarted):
            if running is not None:
                await asyncio.to_thread(stop_server, running)


# ---- files ------------------------------------------------------------------------------------


async def test_files_written_by_tools_and_uploaded_for_them(
    http: aiohttp.ClientSession, e2e_server: RunningServer
) -> None:
    made = await run_turn(http, e2e_server, {"prompt": "[[bash: printf made-by-tool > out.txt]]", **SKIP_PERMISSIONS})
    sid, workspace = made.session_id, made.cwd
    files = f"{e2e_server.url}/api/sessions/{sid}/files"

    listing = await get_json(http, files)
    entries = {e["name"]: e for e in listing["entries"]}
    assert (entries["out.txt"]["type"], entries["out.txt"]["size"]) == ("file", len("made-by-tool"))
    async with http.get(f"{files}/out.txt") as resp:
        assert resp.status == 200
        assert await resp.read() == b"made-by-tool" == (workspace / "out.txt").read_bytes()

    content = f"uploaded {token()}"
    async with http.put(f"{files}/docs/in.txt", data=content.encode()) as resp:
        assert resp.status == 201, await resp.text()
        assert await resp.json() == {"path": "docs/in.txt", "size": len(content)}
    read = await run_turn(
        http, e2e_server, {"prompt": "[[bash: cat docs/in.txt]]", "session_id": sid, **SKIP_PERMISSIONS}
    )
    assert f"Tool said: {content}" in read.texts

    async with http.get(f"{e2e_server.url}/api/sessions/{sid}/archive") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/gzip"
        archive = await resp.read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        packed = {name: tar.extractfile(members[f"{workspace.name}/{name}"]) for name in ("out.txt", "docs/in.txt")}
        assert {name: fh.read() for name, fh in packed.items() if fh} == {
            "out.txt": b"made-by-tool",
            "docs/in.txt": content.encode(),
        }

    # One way out of the workspace per operation; each refused, nothing written outside.
    outside = workspace.parent / "escaped.txt"
    base = f"/api/sessions/{sid}"
    status, _ = await status_of(http, "GET", files, params={"path": "../.."})
    assert status == 400
    assert await raw_status(e2e_server, "GET", f"{base}/files/..%2F..%2F..%2Fetc%2Fpasswd") == 400
    assert await raw_status(e2e_server, "PUT", f"{base}/files/..%2Fescaped.txt", b"out") == 400
    assert await raw_status(e2e_server, "DELETE", f"{base}/files/..%2F{workspace.name}") == 400
    assert 400 <= await raw_status(e2e_server, "GET", f"/api/sessions/..%2F..%2F{sid}/archive") < 500
    assert not outside.exists()
    assert workspace.is_dir()


# ---- retention --------------------------------------------------------------------------------


async def test_purge_removes_only_sessions_past_the_retention(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    retention = {"CLAUDE_SERVER_SESSION_RETENTION_DAYS": "1"}
    with dedicated_server(tmp_path, fake_api, retention) as server:
        old, fresh = await asyncio.gather(
            run_turn(http, server, {"prompt": "old one"}), run_turn(http, server, {"prompt": "fresh one"})
        )
        # Past a 1-day retention, yet within the 30-day default: only the setting decides.
        three_days_ago = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        db_query(server, "UPDATE sessions SET last_used_at = ? WHERE session_id = ?", three_days_ago, old.session_id)
        env = cli_env(server, retention)

        dry = await asyncio.to_thread(run_cli, env, "purge", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert [json.loads(line)["session_id"] for line in dry.stdout.splitlines()] == [old.session_id], (
            dry.stdout,
            dry.stderr,
        )
        assert "would delete 1 session(s) unused for more than 1 days" in dry.stderr
        assert old.cwd.is_dir() and transcripts(server, old.session_id)
        await get_json(http, f"{server.url}/api/sessions/{old.session_id}")

        done = await asyncio.to_thread(run_cli, env, "purge")
        assert done.returncode == 0, done.stderr
        assert [json.loads(line)["session_id"] for line in done.stdout.splitlines()] == [old.session_id]
        await get_json(http, f"{server.url}/api/sessions/{old.session_id}", 404)
        assert db_query(server, "SELECT count(*) FROM turns WHERE turn_id = ?", old.turn_id) == [(0,)]
        assert db_query(server, "SELECT count(*) FROM events WHERE turn_id = ?", old.turn_id) == [(0,)]
        assert not old.cwd.exists()
        assert transcripts(server, old.session_id) == []

        await get_json(http, f"{server.url}/api/sessions/{fresh.session_id}")
        assert fresh.cwd.is_dir() and transcripts(server, fresh.session_id)


# ---- keys: ownership, and what the CLI may see of the server ----------------------------------

OPERATOR_KEY = "super-secret-operator-key"
UNRELATED_SECRET = "hunter2"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    """A server that requires keys, with a secret of its own in its environment."""
    extra = {"CLAUDE_SERVER_API_KEYS": OPERATOR_KEY, "DATABASE_PASSWORD": UNRELATED_SECRET}
    with dedicated_server(tmp_path_factory.mktemp("keyed"), fake_api, extra) as server:
        yield server


async def create_key(server: RunningServer, name: str) -> str:
    done = await asyncio.to_thread(
        run_cli, base_environ(server.home), "keys", "create", "--name", name, "--db", str(server.root / "sessions.db")
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["secret"])


async def test_a_key_sees_only_its_own_sessions(http: aiohttp.ClientSession, keyed_server: RunningServer) -> None:
    api = f"{keyed_server.url}/api"
    key_a, key_b = await asyncio.gather(
        create_key(keyed_server, f"a-{token()}"), create_key(keyed_server, f"b-{token()}")
    )
    async with client_with(bearer(key_a)) as as_a, client_with({"x-api-key": key_b}) as as_b:
        turn = await run_turn(as_a, keyed_server, {"prompt": "mine"})
        sid, tid = turn.session_id, turn.turn_id

        session = f"{api}/sessions/{sid}"
        for method, url in [
            ("GET", session),
            ("GET", f"{session}/messages"),
            ("GET", f"{session}/files"),
            ("GET", f"{session}/archive"),
            ("PATCH", session),
            ("POST", f"{session}/interrupt"),
            ("DELETE", session),
            ("GET", f"{api}/turns/{tid}"),
            ("GET", f"{api}/turns/{tid}/events"),
            ("POST", f"{api}/turns/{tid}/cancel"),
        ]:
            kwargs: dict[str, Any] = {"json": {"title": "taken"}} if method == "PATCH" else {}
            status, body = await status_of(as_b, method, url, **kwargs)
            assert status == 404, (method, url, status, body)
        await expect_error(
            await post(as_b, keyed_server, {"prompt": "yours?", "session_id": sid}), 404, "session_not_found"
        )
        assert (await get_json(as_b, f"{api}/sessions"))["sessions"] == []

        for headers in ({}, bearer("not-a-key")):
            async with client_with(headers) as anonymous:
                status, body = await status_of(anonymous, "GET", f"{api}/sessions")
                assert (status, body["error"]["code"]) == (401, "unauthorized")
                await expect_error(await post(anonymous, keyed_server, {"prompt": "hi"}), 401, "unauthorized")

        assert [s["session_id"] for s in (await get_json(as_a, f"{api}/sessions"))["sessions"]] == [sid]
        assert (await get_json(as_a, session))["title"] == "mine"
    async with client_with(bearer(OPERATOR_KEY)) as operator:
        assert sid not in [s["session_id"] for s in (await get_json(operator, f"{api}/sessions"))["sessions"]]
        everyone = await get_json(operator, f"{api}/sessions?all=true")
        assert sid in [s["session_id"] for s in everyone["sessions"]]


async def test_the_cli_environment_holds_none_of_the_server_secrets(keyed_server: RunningServer) -> None:
    async with client_with(bearer(OPERATOR_KEY)) as operator:
        turn = await run_turn(operator, keyed_server, {"prompt": "[[bash: env]]", **SKIP_PERMISSIONS})

        process = await process_of(operator, keyed_server, turn.turn_id)

    printed = tool_outputs(turn)
    assert "PATH=" in printed
    assert f"CLAUDE_SERVER_PROCESS_ID={process}" in printed
    said = [text for text in turn.texts if text.startswith("Tool said: ")]
    assert len(said) == 1 and f"CLAUDE_SERVER_PROCESS_ID={process}" in said[0], turn.texts
    everything = "\n".join(ev.data for ev in turn.events)
    for secret in (OPERATOR_KEY, UNRELATED_SECRET, "CLAUDE_SERVER_API_KEYS", "DATABASE_PASSWORD"):
        assert secret not in everything, secret


# ---- admission --------------------------------------------------------------------------------


async def test_a_full_server_queues_one_turn_and_refuses_the_next(
    http: aiohttp.ClientSession, fake_api: FakeAnthropic, tmp_path: Path
) -> None:
    one_slot = {"CLAUDE_SERVER_MAX_CONCURRENT": "1", "CLAUDE_SERVER_MAX_QUEUE": "1"}
    with dedicated_server(tmp_path, fake_api, one_slot) as server:
        # The second turn is posted once the first one runs (holds the only slot).
        async with (
            started_turn(http, server, {"prompt": "[[slow: 2]] first"}) as (_, first_reader),
            await post(http, server, {"prompt": "second"}) as second,
        ):
            assert second.status == 200, await second.text()
            second_id = second.headers["X-Turn-Id"]
            second_reader = SseReader(second)
            queued = await second_reader.until(lambda ev: True)
            assert (queued.event, queued.id, queued.json()) == ("queued", None, {"type": "queued", "position": 1})
            turn = await get_json(http, f"{server.url}/api/turns/{second_id}")
            assert turn["status"] == "queued", turn

            async with await post(http, server, {"prompt": "third"}) as third:
                assert third.status == 429, await third.text()
                assert int(third.headers["Retry-After"]) >= 1
                assert (await third.json())["error"]["code"] == "queue_full"

            first_events = await first_reader.rest()
            assert is_result(first_events[-1])
            second_events = await second_reader.rest()

        assert [ev.event for ev in second_events if ev.event] == ["queued"]
        assert seqs(second_events, second_id) == list(range(1, len(second_events)))
        done = TurnStream(dict(second.headers), second_events[1:])
        assert done.texts == ["Echo(1): second"]
        assert done.last["type"] == "result"
        assert (await wait_turn_finished(http, server, second_id))["status"] == "succeeded"
