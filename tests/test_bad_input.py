"""Input that once made the server answer 500, each now a 4xx that names the problem (or, for
a value merely out of range, a correct answer): header bytes that are no UTF-8, bodies not in
their Content-Encoding, JSON nested too deeply, dates at the ends of the calendar, cursors
that decode to lone surrogates, and sequence numbers past SQLite's integers."""

from __future__ import annotations

import base64
import gzip
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from claude_server.json_input import MAX_DEPTH
from claude_server.routes.turns import resume_point
from claude_server.store import Store
from claude_server.store.events import MAX_SEQ
from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import JSON, run_turn, session_of, wait_until


async def a_session(client: TestClient) -> str:
    _, events = await run_turn(client, {"prompt": "hi"})
    return session_of(events)


# ---- header bytes that are no UTF-8 --------------------------------------------------------

OPERATOR_KEY = "kéy-1"  # not ASCII: sent as its UTF-8 bytes


def raw_get(server: RunningServer, headers: bytes) -> tuple[int, Any]:
    """GET /api/sessions with header lines exactly as given (http clients refuse such bytes)."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[dict[str, RunningServer]]:
    running = {
        "open": start_server(tmp_path_factory.mktemp("open"), fake_api, FAKE_CLI),
        "keyed": start_server(
            tmp_path_factory.mktemp("keyed"), fake_api, FAKE_CLI, {"CLAUDE_SERVER_API_KEYS": OPERATOR_KEY}
        ),
    }
    yield running
    for server in running.values():
        stop_server(server)
    for server in running.values():
        assert "unhandled error" not in server.log_text(), server.log_text()[-5000:]


NOT_UTF8 = [
    b"x-api-key: \xff\xfe\r\n",
    b"x-api-key: \xed\xa0\x80\r\n",  # a UTF-8-encoded surrogate
    b"Authorization: Bearer \xff\r\n",
    b"Authorization: \xff\xfe \xc3\r\n",
    b"x-api-key: k\xe9y-1\r\n",  # the operator key in Latin-1
]


@pytest.mark.parametrize("header", NOT_UTF8)
def test_key_bytes_that_are_no_utf8_are_401_with_keys(servers: dict[str, RunningServer], header: bytes) -> None:
    status, body = raw_get(servers["keyed"], header)
    assert status == 401 and body["error"]["code"] == "unauthorized", body


@pytest.mark.parametrize("header", NOT_UTF8)
def test_key_bytes_that_are_no_utf8_do_not_matter_without_keys(
    servers: dict[str, RunningServer], header: bytes
) -> None:
    status, body = raw_get(servers["open"], header)
    assert status == 200 and body["sessions"] == [], body


def test_a_key_that_is_not_ascii_works_as_utf8(servers: dict[str, RunningServer]) -> None:
    for header in (b"x-api-key: k\xc3\xa9y-1\r\n", b"Authorization: Bearer k\xc3\xa9y-1\r\n"):
        status, body = raw_get(servers["keyed"], header)
        assert status == 200, body


# ---- bodies that cannot be decoded -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_in_its_content_encoding_is_400(client: TestClient, encoding: str) -> None:
    """aiohttp decodes the body as it is read; the handler got RequestPayloadError, a 500."""
    for method, path, ctype in (
        ("POST", "/api/claude", "application/json"),
        ("POST", "/v1/messages", "application/json"),
        ("PUT", "/api/config/claude-md", "text/markdown"),
        ("PUT", "/api/config/skills/s/files/notes.txt", "text/plain"),
    ):
        resp = await client.request(
            method, path, data=b"not compressed", headers={"Content-Type": ctype, "Content-Encoding": encoding}
        )
        assert resp.status == 400, (path, await resp.text())
        body = await resp.json()
        message = body["error"]["message"]
        assert f"content-encoding: {encoding}" in message, body
        if path.startswith("/api/"):
            assert body["error"]["code"] == "invalid_body", body


async def test_a_body_in_its_content_encoding_is_read(client: TestClient) -> None:
    data = gzip.compress(b'{"prompt": "zipped", "stream": false}')
    resp = await client.post("/api/claude", data=data, headers={**JSON, "Content-Encoding": "gzip"})
    assert resp.status == 200 and (await resp.json())["result"] == "fake answer 1: zipped"


def test_a_body_no_handler_reads_that_cannot_be_decoded_leaves_no_traceback(
    servers: dict[str, RunningServer],
) -> None:
    """aiohttp drains an unread body after the answer; failing to decode it, it logged
    "Unhandled exception" with a traceback."""
    server = servers["open"]
    port = int(server.url.rsplit(":", 1)[1])
    body = b"\x00garbage" * 100
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Encoding: deflate\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert wait_until(lambda: "ContentEncodingError" in server.log_text())
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


# ---- JSON nested too deeply -----------------------------------------------------------------


def nested(depth: int, inner: str = "1") -> str:
    """``depth`` levels of arrays and objects, alternating."""
    opened = "".join("[" if i % 2 else '{"a":' for i in range(depth))
    closed = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opened + inner + closed


# Just past the limit (parses, then pydantic and json.dumps would recurse through it), near
# Python's recursion limit, and far past it (json.loads raised RecursionError).
DEPTHS = [MAX_DEPTH + 1, 900, 1000, 30_000]


def deep_bodies(depth: int) -> list[tuple[str, str, str, str]]:
    """(method, path, body, shape) for every route that reads a JSON body."""
    message = '{"role": "user", "content": DEEP}'
    routes = [
        ("POST", "/api/claude", '{"prompt": "hi", "metadata": DEEP}', "native"),
        ("POST", "/api/claude", '{"prompt": DEEP}', "native"),
        ("POST", "/api/claude", "DEEP", "native"),
        ("PATCH", "/api/sessions/{sid}", '{"metadata": {"x": DEEP}}', "native"),
        ("PUT", "/api/config/agents/a", '{"content": DEEP}', "native"),
        ("PUT", "/api/config/settings", '{"content": DEEP}', "native"),
        ("PUT", "/api/config/mcp-servers/m", '{"content": DEEP}', "native"),
        ("POST", "/v1/chat/completions", f'{{"model": "sonnet", "messages": [{message}]}}', "openai"),
        ("POST", "/v1/messages", f'{{"model": "sonnet", "max_tokens": 9, "messages": [{message}]}}', "anthropic"),
    ]
    deep = nested(depth)
    return [(method, path, body.replace("DEEP", deep), shape) for method, path, body, shape in routes]


@pytest.mark.parametrize("depth", DEPTHS)
async def test_json_nested_too_deeply_is_400(client: TestClient, depth: int) -> None:
    sid = await a_session(client)
    for method, path, body, shape in deep_bodies(depth):
        resp = await client.request(method, path.format(sid=sid), data=body, headers=JSON)
        assert resp.status == 400, (method, path, await resp.text())
        answer = await resp.json()
        if shape == "native":
            assert answer["error"]["code"] == "json_too_deep", answer
            message = answer["error"]["message"]
        elif shape == "openai":
            assert answer["error"]["code"] == "json_too_deep" and answer["error"]["type"] == "invalid_request_error"
            message = answer["error"]["message"]
        else:
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", answer
            message = answer["error"]["message"]
        assert "nested too deeply" in message and str(MAX_DEPTH) in message, message


@pytest.mark.parametrize("depth", DEPTHS)
async def test_configuration_text_nested_too_deeply_is_400(client: TestClient, depth: int) -> None:
    """settings.json and MCP servers may also come as the file's text."""
    for path in ("/api/config/settings", "/api/config/mcp-servers/m"):
        for data, headers in (
            (nested(depth), {"Content-Type": "text/plain"}),
            (json.dumps({"content": nested(depth)}), JSON),
        ):
            resp = await client.put(path, data=data, headers=headers)
            assert resp.status == 400, await resp.text()
            error = (await resp.json())["error"]
            assert error["code"] == "invalid_content" and "nested too deeply" in error["message"], error


async def test_json_as_deep_as_the_limit_is_taken(client: TestClient) -> None:
    sid = await a_session(client)
    metadata = json.loads(nested(MAX_DEPTH - 2))  # inside {"metadata": {...}}
    resp = await client.patch(f"/api/sessions/{sid}", data=json.dumps({"metadata": metadata}), headers=JSON)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["metadata"] == metadata
    settings = json.loads(nested(MAX_DEPTH - 1))
    resp = await client.put("/api/config/settings", data=json.dumps(settings), headers={"Content-Type": "text/plain"})
    assert resp.status in (200, 201), await resp.text()


# ---- dates at the ends of the calendar --------------------------------------------------------


async def stats(client: TestClient, query: str) -> tuple[int, Any]:
    resp = await client.get(f"/api/stats?{query}")
    return resp.status, await resp.json()


def turns(body: Any) -> int:
    return int(body["total"]["turns"])


@pytest.mark.backends
async def test_stats_at_the_ends_of_the_calendar(client: TestClient) -> None:
    await run_turn(client, {"prompt": "counted"})
    everything = [
        "to=9999-12-31",  # the day after it is no date (OverflowError)
        "from=0001-01-01",
        "from=0001-01-01&to=9999-12-31",
        "from=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "to=9999-12-31T23:59:59.999999-23:59",  # after year 9999 in UTC
        "to=9999-12-31T23:59:59.999999",
        "from=2000-01-01T00:00:00-23:59:59.999999",
    ]
    for query in everything:
        status, body = await stats(client, query)
        assert status == 200 and turns(body) == 1, (query, body)
    nothing = [
        "to=0001-01-01",
        "to=0001-01-01T00:00:00%2B05:00",
        "from=9999-12-31",
        "from=9999-12-31T23:00:00-05:00",
        "from=0001-01-01T00:00:00%2B05:00&to=0001-01-01T00:00:00%2B04:00",  # both before year 1
    ]
    for query in nothing:
        status, body = await stats(client, query)
        assert status == 200 and turns(body) == 0, (query, body)
    status, body = await stats(client, "to=9999-12-31")
    assert body["to"] is None and body["from"] is None
    status, body = await stats(client, "from=0001-01-01T00:00:00%2B05:00")
    assert body["from"] == "0001-01-01T00:00:00.000Z"


async def test_stats_bounds_in_any_time_zone(client: TestClient) -> None:
    await run_turn(client, {"prompt": "counted"})
    now = datetime.now(UTC)
    for zone in ("Z", "+00:00", "+14:00", "-12:00", "+05:30", "-23:59", "+23:59:59"):
        sign, offset = (1, timedelta()) if zone == "Z" else (int(zone[0] + "1"), _offset(zone[1:]))
        local = (now + sign * offset).replace(tzinfo=None)
        before = (local - timedelta(minutes=5)).isoformat() + zone
        after = (local + timedelta(minutes=5)).isoformat() + zone
        q = lambda s: s.replace("+", "%2B")  # noqa: E731
        assert turns((await stats(client, f"from={q(before)}&to={q(after)}"))[1]) == 1, zone
        assert turns((await stats(client, f"from={q(after)}"))[1]) == 0, zone
        assert turns((await stats(client, f"to={q(before)}"))[1]) == 0, zone
    today = now.date()
    assert turns((await stats(client, f"from={today}&to={today}"))[1]) == 1
    assert turns((await stats(client, f"from={today:%Y%m%d}&to={today:%Y%m%d}"))[1]) == 1  # the basic format
    assert turns((await stats(client, f"to={today - timedelta(days=1)}"))[1]) == 0


def _offset(text: str) -> timedelta:
    parts = [int(p) for p in text.split(":")]
    return timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2] if len(parts) > 2 else 0)


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-02-30",
        "to=2026-13-01",
        "from=2026-01-01T25:00",
        "to=2026-01-01T10:00%2B24:00",
        "from=yesterday",
        "to=" + "9" * 5000,
        "from=2026-11-22&to=2026-11-21",
        "from=9999-12-31T23:00:00-05:00&to=9999-12-31",  # from is 10000-01-01T04:00Z, after to
    ],
)
async def test_stats_with_impossible_dates_are_400(client: TestClient, query: str) -> None:
    status, body = await stats(client, query)
    assert status == 400 and body["error"]["code"] == "invalid_parameter", body
    assert body["error"]["field"] in ("from", "to")


# ---- cursors that decode to lone surrogates ---------------------------------------------------


def cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


BAD_CURSORS = [
    cursor(["\ud800", "x", None]),
    cursor(["x", "\udfff"]),
    cursor(["\udc80"]),
    cursor([["\ud800"], "x", None]),
    cursor([1, 2, 3]),
    cursor([]),
    base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode(),
    "not base64!",
    "\u00e9",
]


@pytest.mark.backends
@pytest.mark.parametrize("bad", BAD_CURSORS)
async def test_a_cursor_the_server_did_not_give_is_400_on_every_list(client: TestClient, bad: str) -> None:
    sid = await a_session(client)
    for path in ("/api/sessions", f"/api/sessions/{sid}/messages", "/api/config/agents", "/api/config/skills"):
        resp = await client.get(path, params={"cursor": bad})
        assert resp.status == 400, (path, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_parameter" and error["field"] == "cursor", error


@pytest.mark.parametrize("limit", ["0", "-1", "501", str(2**63), "9" * 5000, "1.5", "x", "1_000"])
async def test_a_limit_out_of_range_is_400_on_every_list(client: TestClient, limit: str) -> None:
    sid = await a_session(client)
    for path in ("/api/sessions", f"/api/sessions/{sid}/messages", "/api/config/agents"):
        resp = await client.get(path, params={"limit": limit})
        assert resp.status == 400, (path, limit, await resp.text())
        assert (await resp.json())["error"]["field"] == "limit"


# ---- sequence numbers past SQLite's integers ---------------------------------------------------

HUGE_SEQS = [str(2**63 - 1), str(2**63), str(2**64), "9" * 30]


@pytest.mark.backends
@pytest.mark.parametrize("seq", HUGE_SEQS)
async def test_a_seq_past_any_turn_replays_nothing_of_a_finished_turn(client: TestClient, seq: str) -> None:
    resp, _ = await run_turn(client, {"prompt": "hi"})
    turn_id = resp.headers["X-Turn-Id"]
    for params, headers in (
        ({"after": seq}, {}),
        ({}, {"Last-Event-ID": seq}),
        ({}, {"Last-Event-ID": f"{turn_id}:{seq}"}),
        ({"after": "1"}, {"Last-Event-ID": f" {turn_id}:{seq} "}),
    ):
        replay = await client.get(f"/api/turns/{turn_id}/events", params=params, headers=headers)
        assert replay.status == 204, (params, headers, await replay.text())


@pytest.mark.parametrize("seq", HUGE_SEQS)
async def test_a_seq_past_any_turn_follows_a_live_turn_from_its_end(client: TestClient, seq: str) -> None:
    resp = await client.post("/api/claude", data=json.dumps({"prompt": "@sleep=1", "detach": True}), headers=JSON)
    turn_id = resp.headers["X-Turn-Id"]
    resp.close()
    follow = await client.get(f"/api/turns/{turn_id}/events", headers={"Last-Event-ID": f"{turn_id}:{seq}"})
    assert follow.status == 200
    assert await follow.text() == ""  # nothing after that seq; the stream ends with the turn


@pytest.mark.parametrize(
    "value",
    ["9" * 31, "-1", f"-{2**64}", "1e3", "0x10", "abc", "1:2:3", "other-turn:5", "\u00e9", "1.0", "NaN"],
)
async def test_a_seq_that_is_no_number_is_400(client: TestClient, value: str) -> None:
    resp, _ = await run_turn(client, {"prompt": "hi"})
    turn_id = resp.headers["X-Turn-Id"]
    for params, headers, field in (({"after": value}, {}, "after"), ({}, {"Last-Event-ID": value}, "Last-Event-ID")):
        bad = await client.get(f"/api/turns/{turn_id}/events", params=params, headers=headers)
        assert bad.status == 400, (value, await bad.text())
        assert (await bad.json())["error"]["field"] == field


@pytest.mark.parametrize("seq", HUGE_SEQS)
def test_a_seq_past_sqlites_integers_is_clamped(seq: str) -> None:
    """Handed to SQLite, 2**63 raised OverflowError (after the 200 and its headers were sent)."""
    for path, headers in ((f"/x?after={seq}", {}), ("/x", {"Last-Event-ID": f"t1:{seq}"})):
        assert resume_point(make_mocked_request("GET", path, headers=headers), "t1") == min(int(seq), MAX_SEQ)


async def test_the_store_reads_no_events_past_sqlites_integers(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "sessions.db")
    try:
        for after in (MAX_SEQ, 2**63, 2**64, -(2**64)):
            assert await store.events("no-such-turn", after=after) == []
    finally:
        await store.close()
