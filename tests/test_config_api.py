"""The configuration API: the file store on its own (no HTTP), then the routes with the fake
CLI: CRUD of every kind, names, frontmatter, sizes, ETags and If-Match, admin-only access,
and what a request's agent and MCP servers turn into on the CLI's command line."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from claude_server.app import create_app
from claude_server.claude.command import TurnOptions, build_argv
from claude_server.config import Settings
from claude_server.config_content import (
    AGENTS,
    CLAUDE_MD,
    MAX_FILE_BYTES,
    MCP_SERVERS,
    RULES,
    SKILLS,
    Preconditions,
    check_mcp_server,
    etag_of,
    parse_frontmatter,
    skill_file_path,
)
from claude_server.config_files import ConfigFiles, TurnChoice
from claude_server.errors import ApiError
from tests.helpers import JSON, data_events, parse_sse, post, session_of

OPERATOR = "op-secret-config"
MARKDOWN = {"Content-Type": "text/markdown"}


def agent_md(name: str, body: str = "You review code.", description: str = "Reviews code") -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}\n"


def config_dir(settings: Settings) -> Path:
    return settings.claude_config_dir


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create_key(settings: Settings, name: str, *extra: str) -> str:
    """A key made as an operator makes one: `python -m claude_server keys create`."""
    env = {**settings.environ, "CLAUDE_SERVER_DB": settings.db_path}
    argv = [sys.executable, "-m", "claude_server", "keys", "create", "--name", name, *extra]
    done = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["secret"])


# ---- the store, without HTTP -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nname: a\ndescription: b\n---\nbody", {"name": "a", "description": "b"}),
        ("---\nname: \"a\"\ndescription: 'its'\n---\n", {"name": "a", "description": "its"}),
        (
            "---\nname: a # why\ndescription: |\n  line one\n  line two\n---\n",
            {"name": "a", "description": "line one line two"},
        ),
        ("---\n# a comment\nname: a\ntools:\n  - Read\n  - Bash\n---\n", {"name": "a", "tools": "- Read - Bash"}),
        ("\ufeff---\r\nname: a\r\n---\r\nbody", {"name": "a"}),
        ("---\n---\nbody", {}),
        ("no frontmatter", None),
        ("---\nname: a\n", None),  # never closed
    ],
)
def test_frontmatter_is_read_as_claude_code_needs_it(text: str, expected: dict[str, str] | None) -> None:
    assert parse_frontmatter(text) == expected


def test_a_frontmatter_line_that_is_not_key_value_is_named() -> None:
    with pytest.raises(ValueError, match="'just words'"):
        parse_frontmatter("---\nname: a\njust words\n---\n")


@pytest.mark.parametrize(
    "server",
    [
        {"command": "npx", "args": ["-y", "some-server"], "env": {"TOKEN": "x"}},
        {"type": "stdio", "command": "python3"},
        {"type": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer x"}},
        {"type": "sse", "url": "https://mcp.example/sse"},
        {"command": "x", "an_option_of_a_newer_cli": True},
    ],
)
def test_mcp_servers_are_stored_as_the_cli_reads_them(server: dict[str, Any]) -> None:
    stored = json.loads(check_mcp_server("tools", json.dumps(server)))
    assert stored == {"mcpServers": {"tools": server}}


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"mcpServers": {"x": {"command": "y"}}}', "the name comes from the path"),
        ('{"type": "sdk", "name": "x"}', "type must be one of"),
        ('{"type": "http"}', "needs a non-empty string url"),
        ('{"url": "https://x"}', "needs a non-empty string command"),
        ('{"command": ""}', "needs a non-empty string command"),
        ('{"command": 1}', "needs a non-empty string command"),
        ('{"command": "x", "args": "-y"}', "args must be a list of strings"),
        ('{"command": "x", "env": {"A": 1}}', "env must be an object of strings"),
        ('{"type": "http", "url": "https://x", "headers": []}', "headers must be an object of strings"),
    ],
)
def test_mcp_servers_the_cli_would_drop_are_refused(server: str, reason: str) -> None:
    with pytest.raises(ApiError, match=reason) as info:
        check_mcp_server("x", server)
    assert info.value.status == 400


def test_store_crud_and_etags(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path / "cfg")
    entry, created = store.put(AGENTS, "rev", agent_md("rev"))
    assert created and entry.etag == etag_of(agent_md("rev"))
    assert (tmp_path / "cfg" / "agents" / "rev.md").read_text() == agent_md("rev")
    again, created = store.put(AGENTS, "rev", agent_md("rev", "Other body."))
    assert not created and again.etag != entry.etag
    assert store.get(AGENTS, "rev").content == agent_md("rev", "Other body.")
    store.delete(AGENTS, "rev")
    with pytest.raises(ApiError) as info:
        store.get(AGENTS, "rev")
    assert info.value.status == 404
    assert store.get(CLAUDE_MD).content == "" and store.get(CLAUDE_MD).updated_at is None


def test_store_preconditions(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path)
    with pytest.raises(ApiError) as info:  # If-Match needs something to match
        store.put(RULES, "r", "x", Preconditions(if_match="*"))
    assert info.value.status == 412
    entry, _ = store.put(RULES, "r", "x", Preconditions(if_none_match="*"))
    with pytest.raises(ApiError):
        store.put(RULES, "r", "y", Preconditions(if_none_match="*"))
    with pytest.raises(ApiError):
        store.put(RULES, "r", "y", Preconditions(if_match=f"W/{entry.etag}"))  # weak never matches
    store.put(RULES, "r", "y", Preconditions(if_match=f'"other", {entry.etag}'))
    with pytest.raises(ApiError) as info:
        store.delete(RULES, "r", Preconditions(if_match=entry.etag))
    assert info.value.extra["etag"] == etag_of("y")
    # A single file that is not set is "" for its preconditions too, as GET shows it.
    store.put(CLAUDE_MD, "", "hello", Preconditions(if_match=etag_of("")))


def race(store: ConfigFiles, etag: str, writers: int, tag: str) -> list[str]:
    """``writers`` threads, released at once, each replacing rule r by its own content if the
    rule still has ``etag``; returns the contents that were written."""
    start = threading.Barrier(writers)
    won: list[str] = []

    def write(i: int) -> None:
        content = f"{tag}-{i:02};" * 40_000
        start.wait()
        with contextlib.suppress(ApiError):
            store.put(RULES, "r", content, Preconditions(if_match=etag))
            won.append(content)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_one_of_concurrent_conditional_writers_wins(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path)
    etag = store.put(RULES, "r", "x" * 200_000)[0].etag
    for n in range(3):  # each round's contents differ from the last: an equal content keeps its ETag
        [winner] = race(store, etag, 16, tag=str(n))
        current = store.get(RULES, "r")
        assert current.content == winner
        etag = current.etag


def test_a_writer_waits_for_another_process_holding_the_directory(tmp_path: Path) -> None:
    """The lock is a flock on the directory, so another server sharing it is kept out too."""
    store = ConfigFiles(tmp_path)
    other = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(other, fcntl.LOCK_EX)
    writer = threading.Thread(target=store.put, args=(RULES, "r", "x"))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not (tmp_path / "rules" / "r.md").exists()
    os.close(other)
    writer.join(5)
    assert (tmp_path / "rules" / "r.md").read_text() == "x"


def test_writes_are_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path)
    versions = [("a" * 200_000) + "\n", ("b" * 150_000) + "\n"]
    store.put(RULES, "big", versions[0])
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add((tmp_path / "rules" / "big.md").read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(100):
        store.put(RULES, "big", versions[i % 2])
    done.set()
    reader.join()
    assert seen <= set(versions)
    assert sorted(p.name for p in (tmp_path / "rules").iterdir()) == ["big.md"]  # no temporary files left


def test_listing_pages_by_name_and_skips_what_the_api_cannot_name(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path)
    for name in ("c", "a", "b"):
        store.put(RULES, name, name)
    (tmp_path / "rules" / "Hand-Made.md").write_text("x")
    (tmp_path / "rules" / "notes.txt").write_text("x")
    assert [e.name for e in store.entries(RULES)] == ["a", "b", "c"]
    assert [e.name for e in store.entries(RULES, after="a", limit=1)] == ["b"]
    store.put(SKILLS, "s", agent_md("s"))
    (tmp_path / "skills" / "empty").mkdir()  # a folder without SKILL.md is no skill
    assert [e.name for e in store.entries(SKILLS)] == ["s"]


@pytest.mark.parametrize(
    "rel", ["", "../x", "a/../../x", ".hidden", "a/.git/config", "/abs", "a//b", "SKILL.md", "a\\b"]
)
def test_skill_file_paths_stay_inside_the_skill(rel: str) -> None:
    with pytest.raises(ApiError) as info:
        skill_file_path(rel)
    assert info.value.status == 400


def test_choose_checks_agents_and_mcp_servers(tmp_path: Path) -> None:
    store = ConfigFiles(tmp_path)
    store.put(AGENTS, "rev", agent_md("rev"))
    store.put(MCP_SERVERS, "tools", '{"command": "x"}')
    assert store.choose("Explore").agent == "Explore"
    choice = store.choose("rev", ["tools", "tools"])
    assert choice.mcp_config == (str(tmp_path / "mcp-servers" / "tools.json"),)
    for agent, servers, code in (("nope", [], "unknown_agent"), (None, ["nope"], "unknown_mcp_server")):
        with pytest.raises(ApiError) as info:
            store.choose(agent, servers)
        assert info.value.code == code
    with pytest.raises(ApiError, match="Explore, Plan, claude, general-purpose, rev, statusline-setup"):
        store.choose("../agents/rev")


def test_argv_of_an_agent_and_mcp_servers() -> None:
    options = TurnOptions(prompt="p", agent="-x", mcp_config=("/c/mcp-servers/a.json", "/c/mcp-servers/b.json"))
    assert build_argv("claude", options)[7:] == [
        "--agent=-x",
        "--mcp-config=/c/mcp-servers/a.json",
        "--mcp-config=/c/mcp-servers/b.json",
    ]
    assert TurnChoice("rev", ("/a.json",)).apply(options, agent=False).agent is None


# ---- the routes ------------------------------------------------------------------------------


async def put(client: TestClient, path: str, content: Any, headers: dict[str, str] | None = None) -> Any:
    return await client.put(path, data=json.dumps({"content": content}), headers={**JSON, **(headers or {})})


KINDS = [
    ("agents", "agents", lambda n: agent_md(n), "agents/{}.md"),
    ("skills", "skills", lambda n: agent_md(n, "Do the thing."), "skills/{}/SKILL.md"),
    ("rules", "rules", lambda n: f"Always {n}.\n", "rules/{}.md"),
    ("mcp-servers", "mcp_servers", lambda n: f'{{"command": "{n}-server"}}', "mcp-servers/{}.json"),
]


@pytest.mark.parametrize(("kind", "list_key", "make", "where"), KINDS)
async def test_crud_of_each_kind(client: TestClient, settings: Settings, kind: str, list_key: str, make, where) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/config/{kind}/one"
    assert (await client.get(url)).status == 404
    r = await put(client, url, make("one"))
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["name"] == "one" and created["updated_at"]
    assert r.headers["ETag"] == created["etag"]
    assert (config_dir(settings) / where.format("one")).is_file()

    r = await client.get(url)
    body = await r.json()
    assert r.status == 200 and r.headers["ETag"] == created["etag"]
    if kind == "mcp-servers":
        assert json.loads(body["content"]) == {"command": "one-server"}
    else:
        assert body["content"] == make("one")

    r = await put(client, url, make("one").replace("one", "one", 1) + ("" if kind == "mcp-servers" else "More.\n"))
    if kind != "mcp-servers":
        assert r.status == 200 and (await r.json())["etag"] != created["etag"]
    await put(client, f"/api/config/{kind}/two", make("two"))
    r = await client.get(f"/api/config/{kind}")
    listed = await r.json()
    assert [e["name"] for e in listed[list_key]] == ["one", "two"] and listed["next_cursor"] is None

    assert (await client.delete(url)).status == 204
    assert (await client.get(url)).status == 404
    r = await client.delete(url)
    assert r.status == 404 and (await r.json())["error"]["code"] == "config_not_found"


async def test_claude_md_unset_is_empty_then_set(client: TestClient, settings: Settings) -> None:
    r = await client.get("/api/config/claude-md")
    assert r.status == 200
    assert await r.json() == {"name": "CLAUDE.md", "content": "", "updated_at": None, "etag": etag_of("")}
    r = await client.put("/api/config/claude-md", data="# Rules\nBe brief.\n", headers=MARKDOWN)
    assert r.status == 201
    assert (config_dir(settings) / "CLAUDE.md").read_text() == "# Rules\nBe brief.\n"
    r = await client.put("/api/config/claude-md", data="Be briefer.\n", headers={"Content-Type": "text/plain"})
    assert r.status == 200 and (await r.json())["content"] == "Be briefer.\n"


async def test_settings_must_be_a_json_object(client: TestClient, settings: Settings) -> None:
    assert (await (await client.get("/api/config/settings")).json())["content"] == ""
    r = await put(client, "/api/config/settings", {"env": {"A": "b"}})
    assert r.status == 201
    assert json.loads((config_dir(settings) / "settings.json").read_text()) == {"env": {"A": "b"}}
    r = await put(client, "/api/config/settings", '{"model": "opus"}')
    assert r.status == 200 and (await r.json())["content"] == '{"model": "opus"}'
    for bad in ("[1, 2]", "{not json", ""):
        r = await put(client, "/api/config/settings", bad)
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_content"


async def test_content_as_an_object_only_for_json_files(client: TestClient) -> None:
    r = await put(client, "/api/config/rules/r", {"a": 1})
    assert r.status == 400 and (await r.json())["error"]["field"] == "content"
    r = await put(client, "/api/config/mcp-servers/m", {"type": "http", "url": "https://x/mcp"})
    assert r.status == 201


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fx",  # ../x, encoded so that the client does not resolve it away
        "..%2F..%2Fsettings",
        "%2E%2E",
        "A",
        "Rev",
        "x%2Fy",
        "x/y",
        "a" * 65,
        "",
        "-x",
        "_x",
        "x.md",
        "x%00",
        "x%20y",
        "caf%C3%A9",
    ],
)
async def test_invalid_names_are_400(client: TestClient, settings: Settings, name: str) -> None:
    for kind in ("agents", "skills", "rules", "mcp-servers"):
        url = URL(f"/api/config/{kind}/{name}", encoded=True)
        for method in ("GET", "PUT", "DELETE"):
            r = await client.request(method, url, data=json.dumps({"content": "x"}), headers=JSON)
            body = await r.json()
            assert r.status == 400, (kind, method, name, body)
            assert body["error"]["code"] == "invalid_name" and body["error"]["field"] == "name"
    assert not (config_dir(settings).exists() and any(config_dir(settings).rglob("*")))


async def test_the_longest_name_is_fine(client: TestClient) -> None:
    assert (await put(client, "/api/config/rules/" + "a" * 64, "x")).status == 201


@pytest.mark.parametrize("path", ["agents/../x", "agents/../../x", "agents/./../x", "skills/../../../etc/passwd"])
async def test_raw_dot_segments_never_reach_a_file(client: TestClient, settings: Settings, path: str) -> None:
    """Sent as they are (a client would resolve them away): the server resolves them into a
    path that no route has, or hands the handler a name it refuses."""
    r = await client.put(URL(f"/api/config/{path}", encoded=True), data=json.dumps({"content": "x"}), headers=JSON)
    assert r.status in (400, 404), await r.text()
    assert (await r.json())["error"]["code"] in ("invalid_name", "not_found")
    assert not config_dir(settings).exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("You review code.", "must start with a frontmatter block"),
        ("---\ndescription: d\n---\nbody", "needs a non-empty name"),
        ("---\nname: rev\n---\nbody", "needs a non-empty description"),
        ("---\nname: rev\ndescription:\n---\nbody", "needs a non-empty description"),
        ("---\nname: other\ndescription: d\n---\nbody", "frontmatter name is 'other'"),
        ("---\nname: rev\ndescription: d\nnot a pair\n---\n", "is not 'key: value'"),
    ],
)
@pytest.mark.parametrize("kind", ["agents", "skills"])
async def test_agents_and_skills_need_claude_codes_frontmatter(
    client: TestClient, kind: str, content: str, reason: str
) -> None:
    r = await put(client, f"/api/config/{kind}/rev", content)
    body = await r.json()
    assert r.status == 400 and body["error"]["code"] == "invalid_frontmatter"
    assert reason in body["error"]["message"]
    assert (await client.get(f"/api/config/{kind}/rev")).status == 404


async def test_size_limit(client: TestClient) -> None:
    r = await put(client, "/api/config/rules/big", "x" * (MAX_FILE_BYTES + 1))
    assert r.status == 413 and (await r.json())["error"]["code"] == "config_too_large"
    r = await client.put("/api/config/claude-md", data="é" * (MAX_FILE_BYTES // 2 + 1), headers=MARKDOWN)
    assert r.status == 413
    assert (await put(client, "/api/config/rules/big", "x" * MAX_FILE_BYTES)).status == 201


async def test_bodies_that_are_not_content(client: TestClient) -> None:
    r = await client.put("/api/config/rules/r", data=b"\xff\xfe", headers=MARKDOWN)
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_content"
    r = await client.put("/api/config/rules/r", data=b"x", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 415
    r = await client.put("/api/config/rules/r", data=json.dumps({"text": "x"}), headers=JSON)
    assert r.status == 400 and "content" in (await r.json())["error"]["message"]


async def test_etags_and_conditional_requests(client: TestClient) -> None:
    url = "/api/config/rules/r"
    r = await put(client, url, "one", {"If-Match": etag_of("one")})
    assert r.status == 412, "If-Match on a file that does not exist"
    r = await put(client, url, "one", {"If-None-Match": "*"})
    assert r.status == 201
    first = r.headers["ETag"]
    assert (await put(client, url, "two", {"If-None-Match": "*"})).status == 412
    r = await put(client, url, "two", {"If-Match": first})
    assert r.status == 200
    second = r.headers["ETag"]
    assert second != first
    r = await put(client, url, "three", {"If-Match": first})
    body = await r.json()
    assert r.status == 412 and body["error"]["code"] == "precondition_failed" and body["error"]["etag"] == second
    assert (await put(client, url, "two", {})).headers["ETag"] == second, "same content, same ETag"
    r = await client.get(url, headers={"If-None-Match": second})
    assert r.status == 304 and r.headers["ETag"] == second
    assert (await client.delete(url, headers={"If-Match": first})).status == 412
    assert (await client.delete(url, headers={"If-Match": second})).status == 204


async def test_concurrent_puts_with_the_same_if_match_one_wins(client: TestClient) -> None:
    url = "/api/config/agents/rev"
    etag = (await put(client, url, agent_md("rev"))).headers["ETag"]
    writers = [put(client, url, agent_md("rev", f"Version {i}." * 10_000), {"If-Match": etag}) for i in range(8)]
    responses = await asyncio.gather(*writers)
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [412] * 7
    winner = next(r for r in responses if r.status == 200)
    assert (await client.get(url)).headers["ETag"] == winner.headers["ETag"]


async def test_lists_are_paginated(client: TestClient) -> None:
    for i in range(5):
        await put(client, f"/api/config/rules/r{i}", f"rule {i}")
    names, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = await (await client.get("/api/config/rules", params=query)).json()
        names += [e["name"] for e in body["rules"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert names == [f"r{i}" for i in range(5)] and pages == 3
    for query in ({"limit": "0"}, {"limit": "x"}, {"cursor": "nonsense"}):
        r = await client.get("/api/config/rules", params=query)
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_parameter"


async def test_list_shows_descriptions_without_content(client: TestClient) -> None:
    await put(client, "/api/config/agents/rev", agent_md("rev", description='"Reviews: code"'))
    [item] = (await (await client.get("/api/config/agents")).json())["agents"]
    assert item["description"] == "Reviews: code" and "content" not in item and item["size"] > 0


async def test_skill_files(client: TestClient, settings: Settings) -> None:
    base = "/api/config/skills/pdf"
    assert (await client.put(f"{base}/files/scripts/run.py", data=b"print(1)\n")).status == 404
    await put(client, base, agent_md("pdf", "Use scripts/run.py."))
    r = await client.put(f"{base}/files/scripts/run.py", data=b"print(1)\n")
    assert r.status == 201
    assert (await client.put(f"{base}/files/scripts/run.py", data=b"print(2)\n")).status == 200
    await client.put(f"{base}/files/reference.md", data=b"# ref\n")
    assert (config_dir(settings) / "skills/pdf/scripts/run.py").read_bytes() == b"print(2)\n"
    assert (await (await client.get(base)).json())["files"] == ["reference.md", "scripts/run.py"]
    r = await client.get(f"{base}/files/scripts/run.py")
    assert r.status == 200 and await r.read() == b"print(2)\n"
    for rel in ("..%2F..%2Fsettings.json", ".env", "SKILL.md", "a%2F..%2F..%2Fx"):
        r = await client.put(URL(f"{base}/files/{rel}", encoded=True), data=b"x")
        assert r.status == 400, rel
    r = await client.put(f"{base}/files/big.bin", data=b"x" * (MAX_FILE_BYTES + 1))
    assert r.status == 413 and (await r.json())["error"]["code"] == "config_too_large"
    assert (await client.delete(f"{base}/files/scripts/run.py")).status == 204
    assert (await client.get(f"{base}/files/scripts/run.py")).status == 404
    assert (await client.delete(base)).status == 204
    assert not (config_dir(settings) / "skills" / "pdf").exists()
    assert list((config_dir(settings) / "skills").iterdir()) == []


# ---- admin only -----------------------------------------------------------------------------


async def test_only_admins_may_use_the_config_api(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(settings, api_keys=(OPERATOR,))
    client = await aiohttp_client(create_app(settings))
    ordinary = await create_key(settings, "ordinary")
    admin = await create_key(settings, "boss", "--admin")
    paths = ("/api/config/agents", "/api/config/agents/rev", "/api/config/claude-md", "/api/config/settings")
    for path in paths:
        assert (await client.get(path)).status == 401
        r = await client.get(path, headers=bearer(ordinary))
        assert r.status == 403 and (await r.json())["error"]["code"] == "admin_only"
    r = await put(client, "/api/config/agents/rev", agent_md("rev"), bearer(ordinary))
    assert r.status == 403
    assert (await client.delete("/api/config/agents/rev", headers=bearer(ordinary))).status == 403
    assert (await put(client, "/api/config/agents/rev", agent_md("rev"), bearer(OPERATOR))).status == 201
    assert (await client.get("/api/config/agents/rev", headers=bearer(admin))).status == 200
    assert (await client.get("/api/config/claude-md", headers=bearer(OPERATOR))).status == 200
    # Any key may use what an admin configured.
    r = await post(client, {"prompt": "hi", "agent": "rev", "stream": False}, {**JSON, **bearer(ordinary)})
    assert r.status == 200, await r.text()


# ---- what requests use ----------------------------------------------------------------------


async def init_of(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await post(client, body, headers)
    assert r.status == 200, await r.text()
    events = parse_sse(await r.text())
    return next(e for e in data_events(events) if e.get("subtype") == "init")


async def test_a_request_names_an_agent_and_mcp_servers(client: TestClient, settings: Settings) -> None:
    await put(client, "/api/config/agents/rev", agent_md("rev"))
    await put(client, "/api/config/mcp-servers/files", '{"command": "files-server"}')
    await put(client, "/api/config/mcp-servers/web", {"type": "http", "url": "https://x/mcp"})
    init = await init_of(
        client,
        {"prompt": "hi", "agent": "rev", "mcp_servers": ["web", "files"], "allowedTools": ["mcp__web__fetch"]},
    )
    folder = config_dir(settings) / "mcp-servers"
    assert "--agent=rev" in init["fake_argv"]
    assert [a for a in init["fake_argv"] if a.startswith("--mcp-config=")] == [
        f"--mcp-config={folder / 'web.json'}",
        f"--mcp-config={folder / 'files.json'}",
    ]
    assert [s["name"] for s in init["mcp_servers"]] == ["web", "files"]
    assert "--allowedTools=mcp__web__fetch" in init["fake_argv"]
    assert "--agent=Plan" in (await init_of(client, {"prompt": "hi", "agent": "Plan"}))["fake_argv"]
    plain = await init_of(client, {"prompt": "hi"})
    assert not any(a.startswith(("--agent", "--mcp-config")) for a in plain["fake_argv"])


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"agent": "nope"}, "unknown_agent", "agent"),
        ({"agent": "../agents/rev"}, "unknown_agent", "agent"),
        ({"agent": "explore"}, "unknown_agent", "agent"),  # built-ins are matched exactly
        ({"agent": ""}, "invalid_field", "agent"),
        ({"mcp_servers": ["nope"]}, "unknown_mcp_server", "mcp_servers"),
        ({"mcp_servers": ["../mcp-servers/x"]}, "unknown_mcp_server", "mcp_servers"),
        ({"mcp_servers": "files"}, "invalid_field", "mcp_servers"),
        ({"agent": "Plan", "session_id": "abc"}, "invalid_field", "agent"),
    ],
)
async def test_unknown_agents_and_mcp_servers_are_400_before_any_stream(
    client: TestClient, body: dict[str, Any], code: str, field: str
) -> None:
    r = await post(client, {"prompt": "hi", **body})
    error = (await r.json())["error"]
    assert r.status == 400 and error["code"] == code and error["field"] == field, error


async def test_compatible_requests_choose_by_header(client: TestClient) -> None:
    await put(client, "/api/config/agents/rev", agent_md("rev"))
    await put(client, "/api/config/mcp-servers/files", '{"command": "files-server"}')
    body = {"model": "claude-code", "messages": [{"role": "user", "content": "hi"}]}
    headers = {**JSON, "X-Claude-Agent": "rev", "X-Claude-Mcp-Servers": "files"}
    r = await client.post("/v1/chat/completions", data=json.dumps(body), headers=headers)
    assert r.status == 200, await r.text()
    turn = await (await client.get(f"/api/turns/{r.headers['X-Turn-Id']}")).json()
    assert turn["options"]["agent"] == "rev" and turn["options"]["mcp_config"][0].endswith("files.json")
    # The next message resumes the session: the agent is left out (the CLI would ignore it).
    follow = {
        **body,
        "messages": [*body["messages"], {"role": "assistant", "content": "x"}, {"role": "user", "content": "again"}],
    }
    r = await client.post(
        "/v1/chat/completions",
        data=json.dumps(follow),
        headers={**headers, "X-Claude-Session-Id": r.headers["X-Claude-Session-Id"]},
    )
    assert r.status == 200, await r.text()
    turn = await (await client.get(f"/api/turns/{r.headers['X-Turn-Id']}")).json()
    assert "agent" not in turn["options"] and turn["options"]["mcp_config"]
    r = await client.post("/v1/chat/completions", data=json.dumps(body), headers={**JSON, "X-Claude-Agent": "nope"})
    error = (await r.json())["error"]
    assert r.status == 400 and "No agent 'nope'" in error["message"]
    r = await client.post(
        "/v1/messages",
        data=json.dumps({**body, "max_tokens": 10}),
        headers={**JSON, "X-Claude-Mcp-Servers": "files,nope"},
    )
    assert r.status == 400 and (await r.json())["type"] == "error"


# ---- the managed configuration directory ----------------------------------------------------


async def test_a_managed_directory_is_the_clis_and_holds_its_transcripts(
    aiohttp_client, settings: Settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    managed = tmp_path / "managed"
    settings = replace(settings, config_dir=str(managed))
    assert settings.claude_config_dir == managed and settings.environ["CLAUDE_CONFIG_DIR"] == str(managed)
    client = await aiohttp_client(create_app(settings))
    await put(client, "/api/config/agents/rev", agent_md("rev"))
    assert (managed / "agents" / "rev.md").is_file()
    r = await post(client, {"prompt": "hi", "agent": "rev"})
    sid = session_of(parse_sse(await r.text()))
    # The fake CLI, like the real one, keeps transcripts under $CLAUDE_CONFIG_DIR/projects.
    [transcript] = managed.glob(f"projects/*/{sid}.jsonl")
    assert not (Path(settings.environ["HOME"]) / ".claude" / "projects").exists()
    assert (await client.delete(f"/api/sessions/{sid}")).status == 204
    assert not transcript.exists()


def test_a_relative_managed_directory_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(config_dir="cfg", environ={"HOME": "/nowhere", "CLAUDE_CONFIG_DIR": "/elsewhere"})
    assert settings.environ["CLAUDE_CONFIG_DIR"] == str(tmp_path / "cfg")
    assert Settings(environ={"HOME": "/h"}).claude_config_dir == Path("/h/.claude")
    assert Settings(environ={"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}).claude_config_dir == Path("/c")
