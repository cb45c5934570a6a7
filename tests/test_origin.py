"""Browsers: the Host check against DNS rebinding, and the Origin check that keeps other web
pages off an open server (claude_server/origin.py). Requests as browsers send them."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.cli import check_exposure
from claude_server.config import ConfigError, Settings
from claude_server.origin import OriginPolicy, host_name
from tests.conftest import FAKE_CLI, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import JSON, parse_sse, texts

EVIL = "https://evil.example"
FRONTEND = "http://chat.example"
OPERATOR = "op-secret-1"
# What the attacking page sent: the CLI ran `id > pwned.txt` without asking.
ATTACK = {"prompt": "run: id > pwned.txt", "dangerously-skip-permissions": True}


def preflight(origin: str, headers: str = "content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers}


def turns_recorded(settings: Settings) -> int:
    with sqlite3.connect(settings.db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])


async def app_client(aiohttp_client: Any, settings: Settings, **changes: Any) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(replace(settings, **changes)))
    return client


def own_origin(client: TestClient) -> str:
    return f"http://{client.server.host}:{client.server.port}"


# ---- Host: DNS rebinding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:3000", "localhost"),
        ("LocalHost.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:3000", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("evil.example:x", ""),
        ("[::1", ""),
        ("[::1]x", ""),
        ("a:1:2", ""),
    ],
)
def test_host_names_are_read_without_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_host_rules(settings: Settings) -> None:
    loopback = OriginPolicy.of(settings)
    for name in ("localhost", "127.0.0.1", "127.8.9.10", "::1", "192.0.2.7", "fe80::1%eth0"):
        assert loopback.allows_host(name), name
    for name in ("evil.example", "localhost.evil.example", "vm", ""):
        assert not loopback.allows_host(name), name
    assert not loopback.allows_host("host.docker.internal")
    everywhere = OriginPolicy.of(replace(settings, host="0.0.0.0"), own_names={"vm", "vm.lan"})
    for name in ("vm", "vm.lan", "host.docker.internal"):
        assert everywhere.allows_host(name), name
    assert not everywhere.allows_host("0.0.0.0.evil.example")
    named = OriginPolicy.of(replace(settings, host="claude.lan"), own_names=())
    assert named.allows_host("claude.lan")
    listed = OriginPolicy.of(replace(settings, allowed_hosts=("Claude.Example.com", ".corp.example")))
    for name in ("claude.example.com", "corp.example", "a.corp.example", "a.b.corp.example"):
        assert listed.allows_host(name), name
    for name in ("example.com", "evilcorp.example", "corp.example.evil"):
        assert not listed.allows_host(name), name
    assert OriginPolicy.of(replace(settings, allowed_hosts=("*",))).allows_host("anything.example")


@pytest.mark.parametrize("entry", ["claude.example.com:3000", "https://claude.example.com", "a/b", "*.example.com"])
def test_an_allowed_host_that_is_no_name_stops_the_start(settings: Settings, entry: str) -> None:
    with pytest.raises(ConfigError, match="CLAUDE_SERVER_ALLOWED_HOSTS"):
        create_app(replace(settings, allowed_hosts=(entry,)))


async def test_a_rebound_name_is_refused_even_from_loopback(client: TestClient, settings: Settings) -> None:
    resp = await client.post("/api/claude", json=ATTACK, headers={"Host": "evil.example:3000"})
    assert resp.status == 421
    error = (await resp.json())["error"]
    assert error["code"] == "host_not_allowed"
    assert "CLAUDE_SERVER_ALLOWED_HOSTS" in error["message"] and "evil.example:3000" in error["message"]
    assert resp.headers["X-Request-Id"]
    assert (await client.get("/health", headers={"Host": "evil.example"})).status == 421
    assert turns_recorded(settings) == 0


async def test_a_rebound_name_gets_the_error_shape_of_the_compatible_apis(client: TestClient) -> None:
    body = {"model": "claude-code", "messages": [{"role": "user", "content": "hi"}]}
    openai = await client.post("/v1/chat/completions", json=body, headers={"Host": "evil.example"})
    assert openai.status == 421
    error = (await openai.json())["error"]
    assert error["code"] == "host_not_allowed" and error["type"] == "invalid_request_error"
    anthropic = await client.post("/v1/messages", json={**body, "max_tokens": 10}, headers={"Host": "evil.example"})
    assert anthropic.status == 421
    assert (await anthropic.json())["type"] == "error"


@pytest.mark.parametrize(
    "host", ["localhost:3000", "localhost", "127.0.0.1", "127.0.0.1:3000", "[::1]:3000", "127.1.2.3"]
)
async def test_loopback_hosts_pass(client: TestClient, host: str) -> None:
    resp = await client.get("/health", headers={"Host": host})
    assert resp.status == 200, await resp.text()


async def test_configured_hosts_pass(aiohttp_client: Any, settings: Settings) -> None:
    client = await app_client(aiohttp_client, settings, allowed_hosts=("claude.example.com", ".corp.example"))
    for host in ("claude.example.com", "claude.example.com:443", "ai.corp.example:3000"):
        assert (await client.get("/health", headers={"Host": host})).status == 200, host
    assert (await client.get("/health", headers={"Host": "evil.example"})).status == 421
    anything = await app_client(aiohttp_client, settings, allowed_hosts=("*",))
    assert (await anything.get("/health", headers={"Host": "evil.example"})).status == 200


async def test_the_machines_own_name_passes_when_listening_everywhere(aiohttp_client: Any, settings: Settings) -> None:
    client = await app_client(aiohttp_client, settings, host="0.0.0.0")
    resp = await client.get("/health", headers={"Host": f"{socket.gethostname()}:3000"})
    assert resp.status == 200


def test_a_real_server_refuses_a_rebound_name(tmp_path: Path, fake_api: FakeAnthropic) -> None:
    server = start_server(tmp_path, fake_api, FAKE_CLI)
    host, port = server.url.removeprefix("http://").split(":")

    def request(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            # http.client sends the Host given here instead of its own.
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    try:
        attack = json.dumps(ATTACK).encode()
        status, body = request("POST", "/api/claude", {"Host": f"evil.example:{port}", **JSON}, attack)
        assert status == 421 and json.loads(body)["error"]["code"] == "host_not_allowed"
        status, body = request("POST", "/api/claude", {"Host": f"localhost:{port}", "Origin": EVIL, **JSON}, attack)
        assert status == 403 and json.loads(body)["error"]["code"] == "cross_origin_refused"
        status, body = request("GET", "/api/sessions", {"Host": f"localhost:{port}"})
        assert status == 200 and json.loads(body)["sessions"] == []
        assert not list(server.workspace_root.glob("*/pwned.txt"))
    finally:
        stop_server(server)


# ---- Origin: pages of other origins ---------------------------------------------------------


@pytest.mark.parametrize("keys", [(), (OPERATOR,)], ids=["open", "keyed"])
async def test_a_preflight_from_another_origin_gets_no_grant(
    aiohttp_client: Any, settings: Settings, keys: tuple[str, ...]
) -> None:
    for origins in ((), (FRONTEND,)):
        client = await app_client(aiohttp_client, settings, api_keys=keys, cors_origins=origins)
        resp = await client.options("/api/claude", headers=preflight(EVIL))
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        error = (await resp.json())["error"]
        assert error["code"] == "cross_origin_refused" and "CLAUDE_SERVER_CORS_ORIGINS" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL, "Content-Type": "text/plain"},  # a simple request: no preflight
        {"Origin": EVIL, **JSON},  # the preflight `*` used to grant
        {"Origin": "http://localhost:5173", **JSON},  # another port of localhost is another origin
        {"Origin": "null", **JSON},  # a sandboxed frame, a file:// page
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", **JSON},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", **JSON},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Content-Type": "text/plain"},  # a form
    ],
)
async def test_an_open_server_refuses_pages_of_other_origins(
    client: TestClient, settings: Settings, headers: dict[str, str]
) -> None:
    resp = await client.post("/api/claude", data=json.dumps(ATTACK), headers=headers)
    assert resp.status == 403, await resp.text()
    assert "Access-Control-Allow-Origin" not in resp.headers
    error = (await resp.json())["error"]
    assert error["code"] == "cross_origin_refused"
    assert "CLAUDE_SERVER_CORS_ORIGINS" in error["message"] and "API key" in error["message"]
    assert resp.headers["X-Request-Id"]
    assert turns_recorded(settings) == 0


async def test_an_open_server_refuses_other_origins_on_the_compatible_apis_in_their_shape(client: TestClient) -> None:
    request = {"model": "claude-code", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/messages", json=request, headers={"Origin": EVIL})
    assert resp.status == 403
    body = await resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "CLAUDE_SERVER_CORS_ORIGINS" in body["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the SDKs, Open WebUI's pipe
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "none"},
    ],
)
async def test_clients_without_a_foreign_origin_pass(client: TestClient, headers: dict[str, str]) -> None:
    resp = await client.post("/api/claude", json={"prompt": "hi"}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert texts(parse_sse(await resp.text())) == ["fake answer 1: hi"]


async def test_the_servers_own_pages_pass(client: TestClient) -> None:
    same = {"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    resp = await client.post("/api/claude", json={"prompt": "hi"}, headers=same)
    assert resp.status == 200, await resp.text()
    await resp.read()
    # A link from another site opens a page of the server: the user sees it, not the linking page.
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert (await client.get("/health", headers=link)).status == 200
    # The server's origin under another name (the same port, localhost vs 127.0.0.1) is another origin.
    other = own_origin(client).replace("127.0.0.1", "localhost")
    assert (await client.post("/api/claude", json={"prompt": "hi"}, headers={"Origin": other})).status == 403


async def test_a_listed_origin_gets_its_grant_and_can_post(aiohttp_client: Any, settings: Settings) -> None:
    client = await app_client(aiohttp_client, settings, cors_origins=(FRONTEND,))
    pre = await client.options("/api/claude", headers=preflight(FRONTEND))
    assert pre.status == 200
    assert pre.headers["Access-Control-Allow-Origin"] == FRONTEND
    headers = {"Origin": FRONTEND, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", **JSON}
    resp = await client.post("/api/claude", data=json.dumps({"prompt": "hi"}), headers=headers)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert texts(parse_sse(await resp.text())) == ["fake answer 1: hi"]
    assert turns_recorded(settings) == 1
    refused = await client.post("/api/claude", json=ATTACK, headers={"Origin": EVIL})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers


async def test_no_origin_gets_cors_headers_by_default(client: TestClient) -> None:
    resp = await client.get("/health", headers={"Origin": own_origin(client)})
    assert resp.status == 200
    assert not [name for name in resp.headers if name.lower().startswith("access-control-")]


async def test_with_keys_a_listed_origin_works_with_its_key(aiohttp_client: Any, settings: Settings) -> None:
    client = await app_client(aiohttp_client, settings, api_keys=(OPERATOR,), cors_origins=(FRONTEND,))
    pre = await client.options("/api/claude", headers=preflight(FRONTEND, "authorization, content-type"))
    assert pre.status == 200 and pre.headers["Access-Control-Allow-Origin"] == FRONTEND
    headers = {"Origin": FRONTEND, "Authorization": f"Bearer {OPERATOR}", **JSON}
    resp = await client.post("/api/claude", data=json.dumps({"prompt": "hi"}), headers=headers)
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == FRONTEND
    await resp.read()
    without = await client.post("/api/claude", json={"prompt": "hi"}, headers={"Origin": FRONTEND})
    assert without.status == 401
    # Another origin is no business of the Origin check once keys exist: the key decides, and
    # a page could only send one after a preflight, which it does not pass.
    evil = await client.post("/api/claude", json={"prompt": "hi"}, headers={"Origin": EVIL})
    assert evil.status == 401 and "Access-Control-Allow-Origin" not in evil.headers


async def test_any_origin_counts_only_once_a_key_exists(aiohttp_client: Any, settings: Settings) -> None:
    open_server = await app_client(aiohttp_client, settings, cors_origins=("*",))
    assert (await open_server.options("/api/claude", headers=preflight(EVIL))).status == 403
    assert (await open_server.post("/api/claude", json=ATTACK, headers={"Origin": EVIL})).status == 403
    assert turns_recorded(settings) == 0
    keyed = await app_client(aiohttp_client, settings, cors_origins=("*",), api_keys=(OPERATOR,))
    pre = await keyed.options("/api/claude", headers=preflight(EVIL, "authorization"))
    assert pre.status == 200 and pre.headers["Access-Control-Allow-Origin"] == EVIL


def test_any_origin_without_a_key_refuses_to_start(settings: Settings) -> None:
    refusal = check_exposure(replace(settings, cors_origins=("*",)))
    assert refusal and "CLAUDE_SERVER_CORS_ORIGINS=*" in refusal
    assert check_exposure(replace(settings, cors_origins=("*",), insecure_no_auth=True))
    assert check_exposure(replace(settings, cors_origins=("*",), api_keys=(OPERATOR,))) is None
    assert check_exposure(replace(settings, cors_origins=(FRONTEND,))) is None


def test_by_default_no_origin_is_listed() -> None:
    assert Settings().cors_origins == () and Settings().allowed_hosts == ()
