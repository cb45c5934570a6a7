"""Keys, ownership, admission, limits, policy, budgets, headers, metrics and stats (fake CLI)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.cli import check_exposure
from claude_server.config import Settings
from claude_server.rate_limit import RateLimiter
from claude_server.store import Store
from tests.helpers import JSON, parse_sse, post, read_until, run_turn, session_of, texts

OPERATOR = "op-secret-1"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings.environ, "CLAUDE_SERVER_DB": settings.db_path}
    return subprocess.run(
        [sys.executable, "-m", "claude_server", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def create_key(settings: Settings, name: str, *extra: str) -> str:
    done = await asyncio.to_thread(run_cli, settings, "keys", "create", "--name", name, *extra)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["secret"])


@pytest.fixture
async def keyed(aiohttp_client, settings: Settings) -> tuple[TestClient, Settings]:  # type: ignore[no-untyped-def]
    settings = replace(settings, api_keys=(OPERATOR,))
    return await aiohttp_client(create_app(settings)), settings


async def as_key(client: TestClient, secret: str, body: dict[str, Any]) -> Any:
    return await client.post("/api/claude", data=json.dumps(body), headers={**JSON, **bearer(secret)})


# ---- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": "Basic b3A6c2VjcmV0"}],
)
async def test_missing_or_wrong_key_is_401(keyed: tuple[TestClient, Settings], headers: dict[str, str]) -> None:
    client, _ = keyed
    for method, path in (("POST", "/api/claude"), ("GET", "/api/sessions"), ("GET", "/api/turns/x")):
        r = await client.request(method, path, json={"prompt": "x"}, headers=headers)
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"


async def test_both_headers_are_accepted_and_health_stays_open(keyed: tuple[TestClient, Settings]) -> None:
    client, _ = keyed
    assert (await client.get("/api/sessions", headers=bearer(OPERATOR))).status == 200
    assert (await client.get("/api/sessions", headers={"x-api-key": OPERATOR})).status == 200
    assert (await client.get("/health")).status == 200


async def test_health_can_require_a_key(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,), health_auth=True)))
    assert (await client.get("/health")).status == 401
    assert (await client.get("/health", headers=bearer(OPERATOR))).status == 200


async def test_keys_created_and_revoked_count_at_once(client: TestClient, settings: Settings) -> None:
    # The server runs open until the first key exists...
    assert (await client.get("/api/sessions")).status == 200
    secret = await create_key(settings, "alice")
    assert secret.startswith("csk_")
    assert (await client.get("/api/sessions")).status == 401
    assert (await client.get("/api/sessions", headers=bearer(secret))).status == 200
    listed = await asyncio.to_thread(run_cli, settings, "keys", "list")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["alice"] and "secret" not in rows[0]
    with sqlite3.connect(settings.db_path) as conn:
        stored = conn.execute("SELECT secret_hash FROM api_keys").fetchone()[0]
    assert secret not in stored  # only a hash is kept
    done = await asyncio.to_thread(run_cli, settings, "keys", "revoke", "alice")
    assert done.returncode == 0 and json.loads(done.stdout)["revoked_at"]
    assert (await client.get("/api/sessions", headers=bearer(secret))).status == 401


async def test_key_cli_errors(settings: Settings) -> None:
    await create_key(settings, "dup")
    again = await asyncio.to_thread(run_cli, settings, "keys", "create", "--name", "dup")
    assert again.returncode == 1 and "exists already" in again.stderr
    missing = await asyncio.to_thread(run_cli, settings, "keys", "revoke", "nobody")
    assert missing.returncode == 1 and "no key" in missing.stderr


def test_no_keys_means_loopback_only(settings: Settings) -> None:
    assert check_exposure(replace(settings, host="127.0.0.1")) is None
    refusal = check_exposure(replace(settings, host="0.0.0.0"))
    assert refusal and "--insecure-no-auth" in refusal
    assert check_exposure(replace(settings, host="0.0.0.0", insecure_no_auth=True)) is None
    assert check_exposure(replace(settings, host="0.0.0.0", api_keys=("k",))) is None


def test_the_server_refuses_to_start_exposed_without_keys(settings: Settings) -> None:
    env = {**settings.environ, "CLAUDE_SERVER_DB": settings.db_path, "CLAUDE_SERVER_HOST": "0.0.0.0"}
    done = subprocess.run(
        [sys.executable, "-m", "claude_server", "--port", "0"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "refusing to listen" in done.stderr


# ---- ownership ------------------------------------------------------------------------------


async def test_another_key_cannot_see_or_touch_a_session(keyed: tuple[TestClient, Settings]) -> None:
    client, settings = keyed
    a, b = await create_key(settings, "a"), await create_key(settings, "b")
    resp = await as_key(client, a, {"prompt": "mine", "conversation_id": "conv-1"})
    turn_id = resp.headers["X-Turn-Id"]
    events = parse_sse(await resp.text())
    sid = session_of(events)
    hb = bearer(b)
    for method, path in (
        ("GET", f"/api/sessions/{sid}"),
        ("PATCH", f"/api/sessions/{sid}"),
        ("DELETE", f"/api/sessions/{sid}"),
        ("GET", f"/api/sessions/{sid}/messages"),
        ("POST", f"/api/sessions/{sid}/interrupt"),
        ("GET", f"/api/sessions/{sid}/files"),
        ("GET", f"/api/sessions/{sid}/archive"),
        ("GET", f"/api/turns/{turn_id}"),
        ("GET", f"/api/turns/{turn_id}/events"),
        ("POST", f"/api/turns/{turn_id}/cancel"),
    ):
        r = await client.request(method, path, json={"title": "x"}, headers=hb)
        assert r.status == 404, (method, path, r.status)
    r = await as_key(client, b, {"prompt": "resume", "session_id": sid})
    assert r.status == 404
    listed = await (await client.get("/api/sessions", headers=hb)).json()
    assert listed["sessions"] == []
    # the same conversation id is B's own: a new session, not A's
    _, other = await run_turn_as(client, b, {"prompt": "theirs", "conversation_id": "conv-1"})
    assert session_of(other) != sid
    # A still has it
    assert (await client.get(f"/api/sessions/{sid}", headers=bearer(a))).status == 200


async def run_turn_as(client: TestClient, secret: str, body: dict[str, Any]) -> tuple[Any, list[Any]]:
    resp = await as_key(client, secret, body)
    assert resp.status == 200, await resp.text()
    return resp, parse_sse(await resp.text())


async def test_ownership_is_checked_before_busy(keyed: tuple[TestClient, Settings]) -> None:
    client, settings = keyed
    a, b = await create_key(settings, "a"), await create_key(settings, "b")
    resp = await as_key(client, a, {"prompt": "@sleep=30"})
    sid = session_of(await read_until(resp, lambda ev: ev.event is None))
    assert (await as_key(client, b, {"prompt": "x", "session_id": sid})).status == 404
    assert (await as_key(client, a, {"prompt": "x", "session_id": sid})).status == 409
    resp.close()


async def test_admins_see_their_own_unless_they_ask_for_all(keyed: tuple[TestClient, Settings]) -> None:
    client, settings = keyed
    user = await create_key(settings, "user")
    admin = await create_key(settings, "boss", "--admin")
    _, events = await run_turn_as(client, user, {"prompt": "user's"})
    sid = session_of(events)
    ha = bearer(admin)
    assert (await (await client.get("/api/sessions", headers=ha)).json())["sessions"] == []
    assert (await client.get(f"/api/sessions/{sid}", headers=ha)).status == 404
    everything = await (await client.get("/api/sessions?all=true", headers=ha)).json()
    assert [s["session_id"] for s in everything["sessions"]] == [sid]
    assert (await client.get(f"/api/sessions/{sid}?all=true", headers=ha)).status == 200
    r = await client.get("/api/sessions?all=true", headers=bearer(user))
    assert r.status == 403 and (await r.json())["error"]["code"] == "admin_only"
    assert (await client.get("/api/sessions?all=maybe", headers=ha)).status == 400


async def test_sessions_from_before_keys_are_for_admins_only(client: TestClient, settings: Settings) -> None:
    sid = await new_open_session(client)
    user = await create_key(settings, "user")
    admin = await create_key(settings, "boss", "--admin")
    assert (await client.get(f"/api/sessions/{sid}", headers=bearer(user))).status == 404
    assert (await client.get(f"/api/sessions/{sid}?all=true", headers=bearer(admin))).status == 200


async def new_open_session(client: TestClient) -> str:
    _, events = await run_turn(client, {"prompt": "open"})
    return session_of(events)


# ---- admission --------------------------------------------------------------------------------


@pytest.fixture
async def one_slot(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(replace(settings, max_concurrent=1, max_queue=1, queue_timeout_s=30)))


async def test_a_queued_turn_reports_its_place_and_runs_when_a_slot_frees(one_slot: TestClient) -> None:
    client = one_slot
    first = await post(client, {"prompt": "@sleep=1"})
    await read_until(first, lambda ev: ev.event is None)
    second = await post(client, {"prompt": "second"})
    got = await read_until(second, lambda ev: ev.event == "queued")
    assert got[-1].json() == {"type": "queued", "position": 1} and got[-1].id is None
    third = await post(client, {"prompt": "third"})
    assert third.status == 429 and int(third.headers["Retry-After"]) >= 1
    assert (await third.json())["error"]["code"] == "queue_full"
    rest = parse_sse(await second.text())
    assert texts(rest) == ["fake answer 1: second"]
    await first.read()


async def test_a_client_that_leaves_the_queue_frees_its_place(one_slot: TestClient) -> None:
    client = one_slot
    first = await post(client, {"prompt": "@sleep=30"})
    await read_until(first, lambda ev: ev.event is None)
    second = await post(client, {"prompt": "waits"})
    await read_until(second, lambda ev: ev.event == "queued")
    second.close()
    await asyncio.sleep(0.3)
    third = await post(client, {"prompt": "gets the place"})
    assert third.status == 200
    await read_until(third, lambda ev: ev.event == "queued")
    third.close()
    first.close()


async def test_queue_timeout(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_concurrent=1, queue_timeout_s=0.5)))
    first = await post(client, {"prompt": "@sleep=30"})
    await read_until(first, lambda ev: ev.event is None)
    streaming = parse_sse(await (await post(client, {"prompt": "waits"})).text())
    assert streaming[0].event == "queued"
    err = streaming[-1].json()
    assert streaming[-1].event == "error" and err["code"] == "queue_timeout" and err["retry_after"] >= 1
    quiet = await post(client, {"prompt": "waits", "stream": False})
    assert quiet.status == 429 and quiet.headers["Retry-After"]
    assert (await quiet.json())["error"]["code"] == "queue_timeout"
    first.close()


async def test_rate_limit_per_key(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, rate_limit_per_min=2, api_keys=(OPERATOR,))))
    for _ in range(2):
        assert (await as_key(client, OPERATOR, {"prompt": "x", "stream": False})).status == 200
    limited = await as_key(client, OPERATOR, {"prompt": "x"})
    assert limited.status == 429 and (await limited.json())["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 30


async def test_a_refused_turn_does_not_count_against_the_rate_limit(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, rate_limit_per_min=3, api_keys=(OPERATOR,))))
    first = await as_key(client, OPERATOR, {"prompt": "x", "stream": False})
    sid = (await first.json())["session_id"]
    running = await as_key(client, OPERATOR, {"prompt": "@sleep=30", "session_id": sid})
    await read_until(running, lambda ev: ev.event is None)
    busy = await as_key(client, OPERATOR, {"prompt": "x", "session_id": sid})
    assert busy.status == 409
    assert (await as_key(client, OPERATOR, {"prompt": "x", "stream": False})).status == 200  # the third
    limited = await as_key(client, OPERATOR, {"prompt": "x"})
    assert limited.status == 429 and (await limited.json())["error"]["code"] == "rate_limited"
    running.close()


async def test_a_batch_of_tasks_takes_its_turns_all_or_none(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, rate_limit_per_min=3, api_keys=(OPERATOR,))))
    headers = {**JSON, **bearer(OPERATOR)}

    async def submit(n: int) -> Any:
        body = {"tasks": [{"prompt": "@sleep=0"} for _ in range(n)]}
        return await client.post("/api/tasks/batch", data=json.dumps(body), headers=headers)

    too_many = await submit(4)
    assert too_many.status == 429
    assert "more than key" in (await too_many.json())["error"]["message"]
    assert (await submit(2)).status in (200, 201, 202)
    assert (await submit(2)).status == 429  # one left: nothing taken
    assert (await as_key(client, OPERATOR, {"prompt": "x", "stream": False})).status == 200


@pytest.mark.backends
async def test_rate_limiter_refills_evenly_and_every_server_counts_the_same(database: str) -> None:
    now = [1000.0]
    one, two = await Store.open(database), await Store.open(database)
    try:
        a, b = (RateLimiter(60, store, clock=lambda: now[0]) for store in (one, two))
        assert [await limiter.take("k") for limiter in (a, b) for _ in range(30)] == [0.0] * 60
        assert await b.take("k") == pytest.approx(1.0)
        assert await a.take("other") == 0
        now[0] += 1.0
        assert await b.take("k") == 0 and await a.take("k") > 0
        now[0] += 10.0  # ten more
        assert await a.take("k", 11) == pytest.approx(1.0)  # all or none: nothing taken
        assert await b.take("k", 10) == 0
        await a.give_back("k", 5)
        assert await b.take("k", 5) == 0 and await b.take("k") > 0
        now[0] -= 30.0  # a clock behind the last take refills nothing
        assert await a.take("k") > 0
        # Taken at once through both servers, a bucket of 10 lets exactly 10 through.
        c, d = RateLimiter(10, one, clock=lambda: now[0]), RateLimiter(10, two, clock=lambda: now[0])
        waits = await asyncio.gather(*(limiter.take("k2") for limiter in (c, d) for _ in range(8)))
        assert sum(1 for wait in waits if wait == 0) == 10
    finally:
        await one.close()
        await two.close()


# ---- limits, policy, budgets -----------------------------------------------------------------


async def test_prompt_too_large_is_413(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_prompt_bytes=100)))
    r = await post(client, {"prompt": "é" * 60})
    assert r.status == 413 and (await r.json())["error"]["code"] == "prompt_too_large"


@pytest.mark.parametrize(
    ("changes", "body", "setting"),
    [
        ({"allow_skip_permissions": False}, {"dangerously-skip-permissions": True}, "CLAUDE_SERVER_ALLOW_SKIP"),
        ({"allow_skip_permissions": False}, {"permission_mode": "bypassPermissions"}, "CLAUDE_SERVER_ALLOW_SKIP"),
        ({"permission_modes": ("plan", "default")}, {"permission_mode": "acceptEdits"}, "CLAUDE_SERVER_PERMISSION"),
    ],
)
async def test_policy_refusals_name_the_setting(
    aiohttp_client, settings: Settings, changes: dict[str, Any], body: dict[str, Any], setting: str
) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, **changes)))
    r = await post(client, {"prompt": "x", **body})
    assert r.status == 403
    err = (await r.json())["error"]
    assert err["code"] == "policy_refused" and setting in err["message"]
    ok = await post(client, {"prompt": "x", "permission_mode": "plan", "stream": False})
    assert ok.status == 200


async def test_daily_budget(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,), daily_budget_usd=0.0015)))
    spender = await create_key(settings, "spender", "--daily-budget-usd", "0.001")
    assert (await as_key(client, spender, {"prompt": "x", "stream": False})).status == 200  # costs 0.001
    refused = await as_key(client, spender, {"prompt": "x"})
    assert refused.status == 429
    err = (await refused.json())["error"]
    assert err["code"] == "budget_exceeded" and "spender" in err["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    # the operator key has the server's default budget: one turn fits, the second does not
    assert (await as_key(client, OPERATOR, {"prompt": "x", "stream": False})).status == 200
    assert (await as_key(client, OPERATOR, {"prompt": "x", "stream": False})).status == 200
    assert (await as_key(client, OPERATOR, {"prompt": "x"})).status == 429


# ---- headers, metrics, stats -------------------------------------------------------------------


async def test_security_headers_and_request_id_on_every_response(client: TestClient) -> None:
    for r in (
        await client.get("/health"),
        await client.get("/nowhere"),
        await post(client, {"prompt": "x"}),
        await client.get("/api/sessions", headers={"X-Request-Id": "req-123"}),
    ):
        await r.read()
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Request-Id"]
    assert r.headers["X-Request-Id"] == "req-123"
    r = await client.get("/health", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces"


async def test_metrics_count_what_ran(client: TestClient) -> None:
    await run_turn(client, {"prompt": "one"})
    await run_turn(client, {"prompt": "@exit=3"})
    text = await (await client.get("/metrics")).text()
    assert "claude_server_turns_started_total 2.0" in text
    assert 'claude_server_turns_finished_total{status="succeeded"} 1.0' in text
    assert 'claude_server_turns_finished_total{status="failed"} 1.0' in text
    assert 'claude_server_cost_usd_total{model="fake-model"} 0.001' in text
    assert 'claude_server_tokens_total{kind="output",model="fake-model"} 12.0' in text
    assert "claude_server_time_to_first_event_seconds_count 2.0" in text
    assert "claude_server_running_clis 0.0" in text


async def test_metrics_are_for_admins(keyed: tuple[TestClient, Settings]) -> None:
    client, settings = keyed
    user = await create_key(settings, "user")
    assert (await client.get("/metrics", headers=bearer(user))).status == 403
    assert (await client.get("/metrics", headers=bearer(OPERATOR))).status == 200


async def test_stats_match_the_turns_that_ran(keyed: tuple[TestClient, Settings]) -> None:
    client, settings = keyed
    user = await create_key(settings, "user")
    for _ in range(2):
        await run_turn_as(client, user, {"prompt": "ok"})
    await run_turn_as(client, user, {"prompt": "@exit=2"})
    await run_turn_as(client, OPERATOR, {"prompt": "operator's"})
    mine = await (await client.get("/api/stats?group_by=model", headers=bearer(user))).json()
    assert mine["groups"] == [
        {
            "group": "fake-model",
            "turns": 3,
            "successes": 2,
            "failures": 1,
            "cost_usd": pytest.approx(0.002),
            "input_tokens": 20,
            "output_tokens": 24,
            "mean_duration_ms": pytest.approx(mine["groups"][0]["mean_duration_ms"]),
        }
    ]
    by_key = await (await client.get("/api/stats?group_by=key", headers=bearer(OPERATOR))).json()
    assert {g["group"]: g["turns"] for g in by_key["groups"]} == {"user": 3, "operator-1": 1}
    assert by_key["total"]["turns"] == 4 and by_key["total"]["successes"] == 3
    by_day = await (await client.get("/api/stats?from=2020-01-01&to=2999-12-31", headers=bearer(OPERATOR))).json()
    assert sum(g["turns"] for g in by_day["groups"]) == 4
    assert (await client.get("/api/stats?from=2999-01-01", headers=bearer(OPERATOR))).status == 200
    for bad in ("group_by=color", "from=yesterday", "from=2026-02-01&to=2026-01-01"):
        assert (await client.get(f"/api/stats?{bad}", headers=bearer(OPERATOR))).status == 400
    assert (await client.get("/api/stats?group_by=key", headers=bearer(user))).status == 403


async def test_health_reports_admission(client: TestClient) -> None:
    body = await (await client.get("/health")).json()
    assert body["database"] == {"ok": True, "backend": "sqlite"}
    assert body["max_concurrent"] == 4 and body["queue_length"] == 0 and body["max_queue"] == 100
