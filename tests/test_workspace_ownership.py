"""A named workspace belongs to the key that names it (with the fake CLI): the same name
used by another key is another directory, and naming it reveals nothing of the first."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from tests.helpers import JSON, parse_sse, session_of
from tests.test_security import OPERATOR, bearer, create_key

NAME = "shared-project"
SECRET = b"only for key A"


async def new_session(client: TestClient, key: str, body: dict[str, Any]) -> tuple[str, Path]:
    """A new session of ``key``; its id and the directory its CLI ran in."""
    resp = await client.post("/api/claude", data=json.dumps(body), headers={**JSON, **bearer(key)})
    assert resp.status == 200, await resp.text()
    events = parse_sse(await resp.text())
    assert events[-1].json()["type"] == "result", events[-1]
    return session_of(events), Path(events[0].json()["cwd"])


async def detail(client: TestClient, key: str, session_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/sessions/{session_id}", headers=bearer(key))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def listing(client: TestClient, key: str, session_id: str) -> set[str]:
    resp = await client.get(f"/api/sessions/{session_id}/files", headers=bearer(key))
    assert resp.status == 200, await resp.text()
    return {entry["name"] for entry in (await resp.json())["entries"]}


async def test_a_named_workspace_is_the_keys_own(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(settings, api_keys=(OPERATOR,))
    client: TestClient = await aiohttp_client(create_app(settings))
    key_a, key_b = await create_key(settings, "alice"), await create_key(settings, "bob")

    a1, a1_cwd = await new_session(client, key_a, {"prompt": "A's first", "workspace": NAME})
    put = await client.put(f"/api/sessions/{a1}/files/secret.txt", data=SECRET, headers=bearer(key_a))
    assert put.status == 201, await put.text()
    a_path = (await detail(client, key_a, a1))["workspace_path"]
    assert Path(a_path) == a1_cwd
    assert (a1_cwd / "secret.txt").read_bytes() == SECRET

    # B names the same workspace: a directory of its own, where A's file is not.
    b1, b1_cwd = await new_session(client, key_b, {"prompt": "B's first", "workspace": NAME})
    b_detail = await detail(client, key_b, b1)
    assert b_detail["workspace"] == NAME, b_detail
    assert b_detail["workspace_path"] != a_path, b_detail
    assert Path(b_detail["workspace_path"]) == b1_cwd
    assert not Path(a_path).is_relative_to(b1_cwd) and not b1_cwd.is_relative_to(a_path)
    assert "secret.txt" not in await listing(client, key_b, b1)
    got = await client.get(f"/api/sessions/{b1}/files/secret.txt", headers=bearer(key_b))
    assert got.status == 404, await got.text()
    # Nor through A's session, which B may not see at all.
    for url in (f"/api/sessions/{a1}/files", f"/api/sessions/{a1}/files/secret.txt"):
        assert (await client.get(url, headers=bearer(key_b))).status == 404, url

    # A's next session of that name is back in A's directory; B's next one in B's.
    a2, a2_cwd = await new_session(client, key_a, {"prompt": "A's second", "workspace": NAME})
    assert (await detail(client, key_a, a2))["workspace_path"] == a_path
    assert a2_cwd == a1_cwd
    assert "secret.txt" in await listing(client, key_a, a2)
    b2, _ = await new_session(client, key_b, {"prompt": "B's second", "workspace": NAME})
    assert (await detail(client, key_b, b2))["workspace_path"] == b_detail["workspace_path"]
