"""Property tests: malformed JSON, wrong types, huge and odd unicode values thrown at every
endpoint of a running server (with the fake CLI) never produce a 5xx."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic

EXAMPLES = 60

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-16", categories=("Cs", "Co", "Cn", "Zs", "Mn")), max_size=20),
    st.just("x" * 200_000),
    st.just("\x00"),
    st.just("../../etc/passwd"),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
FIELDS = [
    "prompt",
    "session_id",
    "dangerously-skip-permissions",
    "dangerously_skip_permissions",
    "allowedTools",
    "allowed_tools",
    "disallowedTools",
    "model",
    "permission_mode",
    "max_turns",
    "system_prompt",
    "append_system_prompt",
    "fork_session",
    "include_partial_messages",
    "max_budget_usd",
    "stream",
    "detach",
    "conversation_id",
    "workspace",
    "title",
    "metadata",
]
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)
bodies = st.one_of(
    objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
segments = st.text(max_size=30).map(lambda t: urllib.parse.quote(t.encode("utf-8", "surrogatepass"), safe=""))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("fuzz"), fake_api, FAKE_CLI, {"CLAUDE_SERVER_LOG_LEVEL": "WARNING"})
    yield running
    stop_server(running)
    # aiohttp itself logs the requests it rejects as malformed HTTP (400s); what must never
    # appear is an error of ours.
    log = running.log_text()
    assert "unhandled error" not in log, log[-5000:]
    assert "Traceback" not in log or "claude_server" not in log.split("Traceback", 1)[1], log[-5000:]


def request(
    server: RunningServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> int:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def ok(status: int) -> bool:
    return status < 500


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=bodies)
def test_post_claude(server: RunningServer, body: bytes) -> None:
    assert ok(request(server, "POST", "/api/claude", body))


@FUZZ
@given(body=objects, prompt=json_scalars.filter(lambda v: isinstance(v, str) and v.strip() != ""))
def test_post_claude_with_a_prompt(server: RunningServer, body: dict[str, Any], prompt: str) -> None:
    body = {**body, "prompt": prompt, "stream": False}
    assert ok(request(server, "POST", "/api/claude", json.dumps(body).encode()))


@FUZZ
@given(body=bodies, sid=segments)
def test_patch_session(server: RunningServer, body: bytes, sid: str) -> None:
    assert ok(request(server, "PATCH", f"/api/sessions/{sid}", body))


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["limit", "cursor", "q", "all", "x"]), st.text(max_size=40), max_size=4))
def test_list_sessions(server: RunningServer, params: dict[str, str]) -> None:
    query = urllib.parse.urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})
    assert ok(request(server, "GET", f"/api/sessions?{query}"))


@FUZZ
@given(turn=segments, last=st.text(max_size=40), after=segments)
def test_turn_events(server: RunningServer, turn: str, last: str, after: str) -> None:
    header = last.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
    assert ok(request(server, "GET", f"/api/turns/{turn}/events?after={after}", headers={"Last-Event-ID": header}))


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["from", "to", "group_by"]), st.text(max_size=30), max_size=3))
def test_stats(server: RunningServer, params: dict[str, str]) -> None:
    query = urllib.parse.urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})
    assert ok(request(server, "GET", f"/api/stats?{query}"))


@pytest.fixture(scope="module")
def session_id(server: RunningServer) -> str:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(
        "POST", "/api/claude", body=b'{"prompt": "fuzz", "stream": false}', headers={"Content-Type": "application/json"}
    )
    sid = json.loads(conn.getresponse().read())["session_id"]
    conn.close()
    return str(sid)


@FUZZ
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE"]),
    parts=st.lists(segments | st.sampled_from(["..", ".", "%2e%2e", ""]), min_size=1, max_size=4),
    body=st.binary(max_size=100),
)
def test_files(server: RunningServer, session_id: str, method: str, parts: list[str], body: bytes) -> None:
    path = "/".join(parts)
    assert ok(request(server, method, f"/api/sessions/{session_id}/files/{path}", body))
    assert ok(request(server, "GET", f"/api/sessions/{session_id}/files?path={path}"))
    assert not (Path(server.workspace_root).parent / "escaped").exists()
