"""API keys over HTTP (/api/keys): admin keys only, the secret shown once, revocation at once."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from tests.test_openapi import Published, fetch

OPERATOR = "op-secret-for-key-tests"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def keyed(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,))))


async def make(client: TestClient, body: dict[str, object], secret: str = OPERATOR) -> dict[str, object]:
    resp = await client.post("/api/keys", json=body, headers=bearer(secret))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_an_admin_creates_lists_and_revokes_keys(keyed: TestClient) -> None:
    made = await make(keyed, {"name": "alice", "daily_budget_usd": 2.5})
    secret = str(made["secret"])
    assert secret.startswith("csk_")
    assert made["admin"] is False and made["daily_budget_usd"] == 2.5 and made["revoked_at"] is None
    assert (await keyed.get("/api/sessions", headers=bearer(secret))).status == 200
    listed = await (await keyed.get("/api/keys", headers=bearer(OPERATOR))).json()
    assert [k["name"] for k in listed["keys"]] == ["alice"]
    assert "secret" not in listed["keys"][0] and "secret_hash" not in listed["keys"][0]
    revoked = await keyed.post(f"/api/keys/{made['key_id']}/revoke", headers=bearer(OPERATOR))
    assert revoked.status == 200
    assert (await revoked.json())["revoked_at"] is not None
    assert (await keyed.get("/api/sessions", headers=bearer(secret))).status == 401
    # By name too, and again: nothing changes.
    again = await keyed.post("/api/keys/alice/revoke", headers=bearer(OPERATOR))
    assert (await again.json())["revoked_at"] == (await revoked.json())["revoked_at"]


async def test_an_ordinary_key_may_not_manage_keys(keyed: TestClient) -> None:
    user = str((await make(keyed, {"name": "user"}))["secret"])
    admin = str((await make(keyed, {"name": "boss", "admin": True}))["secret"])
    for method, path, body in (
        ("GET", "/api/keys", None),
        ("POST", "/api/keys", {"name": "x"}),
        ("POST", "/api/keys/boss/revoke", None),
    ):
        resp = await keyed.request(method, path, json=body, headers=bearer(user))
        assert resp.status == 403, path
        assert (await resp.json())["error"]["code"] == "admin_only"
    # A created admin key may.
    assert (await keyed.get("/api/keys", headers=bearer(admin))).status == 200
    assert (await keyed.get("/api/keys")).status == 401


async def test_a_key_created_on_an_open_server_closes_it(client: TestClient) -> None:
    assert (await client.get("/api/sessions")).status == 200
    resp = await client.post("/api/keys", json={"name": "first", "admin": True})
    assert resp.status == 201
    secret = (await resp.json())["secret"]
    assert (await client.get("/api/sessions")).status == 401
    assert (await client.get("/api/sessions", headers=bearer(secret))).status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "has\nnewline"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "ok", "admin": "yes"}, "admin"),
        ({"name": "ok", "daily_budget_usd": -1}, "daily_budget_usd"),
        ({"name": "ok", "secret": "mine"}, "secret"),
    ],
)
async def test_bad_key_bodies_are_400s_naming_the_field(keyed: TestClient, body: dict[str, object], field: str) -> None:
    resp = await keyed.post("/api/keys", json=body, headers=bearer(OPERATOR))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_field" and error["field"] == field


async def test_a_duplicate_name_is_409_and_an_unknown_key_404(keyed: TestClient) -> None:
    await make(keyed, {"name": "dup"})
    resp = await keyed.post("/api/keys", json={"name": "dup"}, headers=bearer(OPERATOR))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "key_exists"
    resp = await keyed.post("/api/keys/nobody/revoke", headers=bearer(OPERATOR))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "key_not_found"
    resp = await keyed.post("/api/keys", data="name=x", headers={**bearer(OPERATOR), "Content-Type": "text/plain"})
    assert resp.status == 415


async def test_the_answers_match_the_openapi_document(keyed: TestClient) -> None:
    published = Published(await fetch(keyed))
    made = await keyed.post("/api/keys", json={"name": "doc", "admin": True}, headers=bearer(OPERATOR))
    published.check("POST", "/api/keys", 201, await made.json())
    published.check("GET", "/api/keys", 200, await (await keyed.get("/api/keys", headers=bearer(OPERATOR))).json())
    revoked = await keyed.post("/api/keys/doc/revoke", headers=bearer(OPERATOR))
    published.check("POST", "/api/keys/{key}/revoke", 200, await revoked.json())
    refused = await keyed.post("/api/keys", json={"name": "doc"}, headers=bearer(OPERATOR))
    published.check("POST", "/api/keys", 409, await refused.json())
