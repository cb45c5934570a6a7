"""Reloading the settings file (and the providers file) while the server runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server import config
from claude_server.app import create_app
from claude_server.config import Settings
from tests.helpers import JSON, post


def settings_with(settings: Settings, path: Path, text: str, **env: str) -> Settings:
    path.write_text(text)
    environ = {
        **settings.environ,
        "CLAUDE_SERVER_CONFIG_FILE": str(path),
        "CLAUDE_SERVER_DB": settings.db_path,
        "CLAUDE_SERVER_WORKSPACE_ROOT": settings.workspace_root,
        "CLAUDE_SERVER_CLAUDE_BIN": settings.claude_bin,
        **env,
    }
    return config.load(None, environ)


async def reload(client: TestClient) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/admin/reload")
    return resp.status, dict(await resp.json())


async def test_a_reload_applies_what_may_change_and_lists_what_needs_a_restart(
    aiohttp_client,  # type: ignore[no-untyped-def]
    settings: Settings,
    tmp_path: Path,
) -> None:
    touched = ("", "aiohttp.access", "aiosqlite")  # the loggers a reload's log level sets
    levels = {name: logging.getLogger(name).level for name in touched}
    path = tmp_path / "settings.toml"
    live = settings_with(settings, path, "max_concurrent = 1\nmax_queue = 5\n", CLAUDE_SERVER_QUEUE_TIMEOUT="7")
    client = await aiohttp_client(create_app(live))
    health = await (await client.get("/health")).json()
    assert (health["max_concurrent"], health["max_queue"]) == (1, 5)
    path.write_text(
        "max_concurrent = 3\nmax_queue = 9\nrate_limit_per_min = 1\nport = 4000\n"
        'webhook_secret = "new-secret"\nqueue_timeout = 99\nlog_level = "debug"\n'
    )
    status, answer = await reload(client)
    assert status == 200, answer
    changed = answer["settings"]["changed"]
    assert changed["max_concurrent"] == {"from": 1, "to": 3} and changed["max_queue"] == {"from": 5, "to": 9}
    assert changed["webhook_secret"] == {"from": "(secret)", "to": "(secret)"}
    assert "new-secret" not in json.dumps(answer)
    assert answer["settings"]["needs_restart"] == ["port"]
    # A variable wins over the file, now as at the start.
    assert "queue_timeout_s" not in changed and live.queue_timeout_s == 7
    health = await (await client.get("/health")).json()
    assert (health["max_concurrent"], health["max_queue"]) == (3, 9)
    # The new rate limit holds for the next turns.
    first = await post(client, {"prompt": "one", "stream": False})
    assert first.status == 200
    second = await post(client, {"prompt": "two", "stream": False})
    assert second.status == 429 and (await second.json())["error"]["code"] == "rate_limited"
    assert logging.getLogger().level == logging.DEBUG
    for name, level in levels.items():  # as the test run had them
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("text", "says"),
    [("max_concurrent = 0\n", "max_concurrent"), ("colour = 1\n", "colour"), ("this is not = [ toml", "TOML")],
)
async def test_a_broken_settings_file_is_refused_whole(
    aiohttp_client,  # type: ignore[no-untyped-def]
    settings: Settings,
    tmp_path: Path,
    text: str,
    says: str,
) -> None:
    path = tmp_path / "settings.toml"
    client = await aiohttp_client(create_app(settings_with(settings, path, "max_concurrent = 2\n")))
    path.write_text("max_queue = 50\n" + text)
    status, answer = await reload(client)
    assert status == 400 and answer["error"]["code"] == "reload_refused" and says in answer["error"]["message"]
    health = await (await client.get("/health")).json()
    assert (health["max_concurrent"], health["max_queue"]) == (2, 100)  # nothing of it applied


async def test_without_files_a_reload_changes_nothing_and_is_for_admins(
    aiohttp_client,  # type: ignore[no-untyped-def]
    settings: Settings,
) -> None:
    client = await aiohttp_client(create_app(settings))
    status, answer = await reload(client)
    assert status == 200 and answer == {"providers": None, "settings": {"changed": {}, "needs_restart": []}}
    resp = await client.get("/api/providers")
    assert resp.status == 200 and (await resp.json()) == {"configured": False, "providers": []}


async def test_the_providers_routes_need_an_admin_key(aiohttp_client, settings: Settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from tests.test_security import OPERATOR, bearer, create_key

    keyed = replace(settings, api_keys=(OPERATOR,))
    client = await aiohttp_client(create_app(keyed))
    user = await create_key(keyed, "user")
    for method, path in (("get", "/api/providers"), ("post", "/api/providers/a/reset"), ("post", "/api/admin/reload")):
        resp = await getattr(client, method)(path, headers={**JSON, **bearer(user)})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "admin_only", path
    resp = await client.post("/api/admin/reload", headers=bearer(OPERATOR))
    assert resp.status == 200
