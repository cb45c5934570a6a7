"""The configuration API never leaves the configuration directory, whatever is planted in it.

A turn's Bash tool runs as the server's user and may create anything in the directory: a
skill folder that is a symlink to somewhere else, an agent file that is a symlink or a hard
link to a file outside, a kind's folder that is a symlink, a FIFO where a file should be.
Every read, write, list and delete refuses those (403 ``outside_config_dir``) or, in a
listing, leaves them out, and nothing outside is read, written or deleted. The directory
itself may be a symlink: the operator chose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from claude_server.config_content import AGENTS, MCP_SERVERS, RULES, SKILLS
from claude_server.config_files import ConfigFiles
from claude_server.config_fs import OutsideConfigDir
from claude_server.errors import ApiError
from tests.helpers import JSON, post

# A request that used to block on a FIFO would never answer: a few seconds is plenty.
ANSWER_TIMEOUT_S = 5.0


def skill_md(name: str, body: str = "Do the thing.") -> str:
    return f"---\nname: {name}\ndescription: planted\n---\n{body}\n"


# What each kind's file may look like, so that a planted one would pass the API's checks.
FILES = {
    "agents": ("agents/{}.md", skill_md),
    "rules": ("rules/{}.md", lambda n: f"Always {n}.\n"),
    "mcp-servers": ("mcp-servers/{}.json", lambda n: json.dumps({"mcpServers": {n: {"command": "evil"}}})),
    "claude-md": ("CLAUDE.md", lambda n: "Planted instructions.\n"),
    "settings": ("settings.json", lambda n: '{"env": {"PLANTED": "1"}}'),
}
SINGLE = ("claude-md", "settings")


def url_of(kind: str, name: str = "x") -> str:
    return f"/api/config/{kind}" if kind in SINGLE else f"/api/config/{kind}/{name}"


def content_of(kind: str, name: str = "x") -> str:
    """What a client would PUT."""
    if kind == "mcp-servers":
        return '{"command": "mine"}'
    return skill_md(name) if kind == "skills" else FILES[kind][1](name)


@pytest.fixture
def cfg(settings: Settings) -> Path:
    root = settings.claude_config_dir
    root.mkdir(parents=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the configuration directory, with what an attacker would point at."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "SKILL.md").write_text(skill_md("evil"))
    (out / "secret.txt").write_text("TOP SECRET\n")
    return out


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its content, to show that nothing there changed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


async def answer(request: Awaitable[Any]) -> tuple[int, dict[str, Any]]:
    r = await asyncio.wait_for(request, ANSWER_TIMEOUT_S)
    body = await r.json() if r.content_type == "application/json" else {}
    return r.status, body


async def expect_refused(request: Awaitable[Any]) -> str:
    status, body = await answer(request)
    assert status == 403 and body["error"]["code"] == "outside_config_dir", (status, body)
    return str(body["error"]["message"])


async def put(client: TestClient, url: str, content: str) -> Any:
    return await client.put(url, data=json.dumps({"content": content}), headers=JSON)


@pytest.fixture
def fifos(client: TestClient) -> Iterator[list[Path]]:
    """FIFOs a test planted. Afterwards each is opened for writing once, which releases a
    reader stuck in open() (code that does not open with O_NONBLOCK), so the test server can
    close; it is torn down before ``client``."""
    planted: list[Path] = []
    yield planted
    for fifo in planted:
        with contextlib.suppress(OSError):  # ENXIO: nobody is reading, as it should be
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


# ---- symlinks -------------------------------------------------------------------------------


async def test_a_symlinked_skill_folder_is_refused(client: TestClient, cfg: Path, outside: Path) -> None:
    (cfg / "skills").mkdir()
    (cfg / "skills" / "evil").symlink_to(outside)
    before = tree(outside)
    message = await expect_refused(client.get("/api/config/skills/evil"))
    assert "skills/evil" in message and "symbolic link" in message
    await expect_refused(client.get("/api/config/skills/evil/files/secret.txt"))
    await expect_refused(client.put("/api/config/skills/evil/files/planted.txt", data=b"planted"))
    await expect_refused(client.delete("/api/config/skills/evil/files/secret.txt"))
    await expect_refused(put(client, "/api/config/skills/evil", skill_md("evil", "Replaced.")))
    await expect_refused(client.delete("/api/config/skills/evil"))
    status, listed = await answer(client.get("/api/config/skills"))
    assert status == 200 and listed["skills"] == []
    assert tree(outside) == before
    assert (cfg / "skills" / "evil").is_symlink(), "left for the operator to look at"


@pytest.mark.parametrize("kind", list(FILES))
async def test_a_symlinked_file_is_refused(client: TestClient, cfg: Path, outside: Path, kind: str) -> None:
    where = cfg / FILES[kind][0].format("x")
    where.parent.mkdir(parents=True, exist_ok=True)
    target = outside / "target"
    target.write_text(FILES[kind][1]("x"))
    where.symlink_to(target)
    before = tree(outside)
    await expect_refused(client.get(url_of(kind)))
    await expect_refused(put(client, url_of(kind), content_of(kind)))
    if kind not in SINGLE:
        await expect_refused(client.delete(url_of(kind)))
        status, listed = await answer(client.get(f"/api/config/{kind}"))
        assert status == 200 and listed[kind.replace("-", "_")] == []
    assert tree(outside) == before and where.is_symlink()


async def test_a_request_cannot_use_a_symlinked_agent_or_mcp_server(
    client: TestClient, cfg: Path, outside: Path
) -> None:
    """The CLI would follow the link: an agent or MCP server the API refuses is unknown."""
    (outside / "x.md").write_text(skill_md("x"))
    (outside / "x.json").write_text(FILES["mcp-servers"][1]("x"))
    for folder, name in (("agents", "x.md"), ("mcp-servers", "x.json")):
        (cfg / folder).mkdir()
        (cfg / folder / name).symlink_to(outside / name)
    for body, code in (({"agent": "x"}, "unknown_agent"), ({"mcp_servers": ["x"]}, "unknown_mcp_server")):
        r = await post(client, {"prompt": "hi", "stream": False, **body})
        assert r.status == 400 and (await r.json())["error"]["code"] == code


@pytest.mark.parametrize("kind", ["agents", "skills", "rules", "mcp-servers"])
async def test_a_symlinked_kind_folder_is_refused(client: TestClient, cfg: Path, tmp_path: Path, kind: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    pattern = FILES[kind][0] if kind != "skills" else "skills/{}/SKILL.md"
    planted = elsewhere / pattern.format("x").split("/", 1)[1]
    planted.parent.mkdir(parents=True)
    planted.write_text(skill_md("x") if kind == "skills" else FILES[kind][1]("x"))
    (cfg / kind).symlink_to(elsewhere)
    before = tree(elsewhere)
    await expect_refused(client.get(f"/api/config/{kind}"))
    await expect_refused(client.get(url_of(kind)))
    await expect_refused(put(client, url_of(kind, "y"), content_of(kind, "y")))
    await expect_refused(client.delete(url_of(kind)))
    if kind == "skills":
        await expect_refused(client.put("/api/config/skills/x/files/planted.txt", data=b"planted"))
    assert tree(elsewhere) == before
    r = await post(client, {"prompt": "hi", "stream": False, "agent": "nope"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "unknown_agent", "the list of agents still works"


async def test_symlinks_inside_a_skill_folder_are_refused_and_not_listed(
    client: TestClient, cfg: Path, outside: Path
) -> None:
    base = "/api/config/skills/s"
    assert (await put(client, base, skill_md("s"))).status == 201
    assert (await client.put(f"{base}/files/real.txt", data=b"mine")).status == 201
    folder = cfg / "skills" / "s"
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "sub").symlink_to(outside)
    (folder / "dangling").symlink_to(outside / "nothing-here")
    before = tree(outside)
    status, skill = await answer(client.get(base))
    assert status == 200 and skill["files"] == ["real.txt"]
    for rel in ("link.txt", "sub/secret.txt", "dangling"):
        await expect_refused(client.get(f"{base}/files/{rel}"))
        await expect_refused(client.put(f"{base}/files/{rel}", data=b"planted"))
        await expect_refused(client.delete(f"{base}/files/{rel}"))
    await expect_refused(client.put(f"{base}/files/sub/planted.txt", data=b"planted"))
    await expect_refused(client.delete(f"{base}/files/sub"))
    assert tree(outside) == before
    # Deleting the whole skill removes the links themselves, never what they point to.
    assert (await client.delete(base)).status == 204
    assert tree(outside) == before and list((cfg / "skills").iterdir()) == []


# ---- what is not a regular file -------------------------------------------------------------


async def test_a_fifo_is_refused_at_once(client: TestClient, cfg: Path, fifos: list[Path]) -> None:
    for rel in ("agents/x.md", "CLAUDE.md", "skills/s/pipe"):
        (cfg / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith("skills/"):
            (cfg / "skills" / "s" / "SKILL.md").write_text(skill_md("s"))
        os.mkfifo(cfg / rel)
        fifos.append(cfg / rel)
    message = await expect_refused(client.get("/api/config/agents/x"))
    assert "agents/x.md" in message and "not a regular file" in message
    await expect_refused(put(client, "/api/config/agents/x", skill_md("x")))
    await expect_refused(client.get("/api/config/claude-md"))
    await expect_refused(client.get("/api/config/skills/s/files/pipe"))
    status, listed = await answer(client.get("/api/config/agents"))
    assert status == 200 and listed["agents"] == []
    status, skill = await answer(client.get("/api/config/skills/s"))
    assert status == 200 and skill["files"] == []
    r = await asyncio.wait_for(post(client, {"prompt": "hi", "stream": False, "agent": "x"}), ANSWER_TIMEOUT_S)
    assert r.status == 400


async def test_a_hard_link_to_a_file_outside_is_not_read(client: TestClient, cfg: Path, outside: Path) -> None:
    """A regular file with more than one link may be a file outside under another name."""
    (outside / "x.md").write_text(skill_md("x", "TOP SECRET"))
    (cfg / "agents").mkdir()
    os.link(outside / "x.md", cfg / "agents" / "x.md")
    assert (await put(client, "/api/config/skills/s", skill_md("s"))).status == 201
    os.link(outside / "secret.txt", cfg / "skills" / "s" / "secret.txt")
    before = tree(outside)
    message = await expect_refused(client.get("/api/config/agents/x"))
    assert "2 links" in message
    await expect_refused(client.get("/api/config/skills/s/files/secret.txt"))
    status, listed = await answer(client.get("/api/config/agents"))
    assert status == 200 and listed["agents"] == []
    status, skill = await answer(client.get("/api/config/skills/s"))
    assert status == 200 and skill["files"] == []
    assert tree(outside) == before


# ---- the directory itself may be a symlink --------------------------------------------------


@pytest.mark.parametrize("managed", [False, True])
async def test_the_configuration_directory_may_be_a_symlink(
    aiohttp_client, settings: Settings, tmp_path: Path, managed: bool
) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "real-config"
    real.mkdir()
    if managed:
        link = tmp_path / "config-link"
        link.symlink_to(real)
        settings = replace(settings, config_dir=str(link))
    else:
        link = Path(settings.environ["HOME"]) / ".claude"
        link.symlink_to(real)
    client = await aiohttp_client(create_app(settings))
    assert (await put(client, "/api/config/agents/rev", skill_md("rev"))).status == 201
    assert (await put(client, "/api/config/mcp-servers/tools", '{"command": "x"}')).status == 201
    assert (
        await client.put("/api/config/claude-md", data="Hi.\n", headers={"Content-Type": "text/plain"})
    ).status == 201
    assert (real / "agents" / "rev.md").is_file() and (real / "CLAUDE.md").read_text() == "Hi.\n"
    assert [a["name"] for a in (await (await client.get("/api/config/agents")).json())["agents"]] == ["rev"]
    r = await post(client, {"prompt": "hi", "stream": False, "agent": "rev", "mcp_servers": ["tools"]})
    assert r.status == 200, await r.text()


def test_the_root_is_resolved_once(tmp_path: Path) -> None:
    """Repointing the root's symlink later does not move the store."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "link"
    link.symlink_to(first)
    store = ConfigFiles(link)
    link.unlink()
    link.symlink_to(second)
    store.put(AGENTS, "rev", skill_md("rev"))
    assert (first / "agents" / "rev.md").is_file() and not (second / "agents").exists()


def test_the_store_refuses_without_http(tmp_path: Path, outside: Path) -> None:
    store = ConfigFiles(tmp_path)
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "evil").symlink_to(outside)
    (tmp_path / "mcp-servers").symlink_to(outside)
    with pytest.raises(OutsideConfigDir):
        store.get(SKILLS, "evil")
    with pytest.raises(OutsideConfigDir):
        store.put_skill_file("evil", "planted.txt", b"x")
    with pytest.raises(OutsideConfigDir):
        store.entries(MCP_SERVERS)
    assert store.entries(SKILLS) == []
    assert tree(outside) == {"SKILL.md": skill_md("evil").encode(), "secret.txt": b"TOP SECRET\n"}


def test_a_folder_where_a_file_should_be_is_absent_and_not_replaced(tmp_path: Path) -> None:
    """Not planted by anyone in particular, and nothing outside to reach: as before, absent
    for a reader; a writer gets a 409 instead of an internal error."""
    store = ConfigFiles(tmp_path)
    (tmp_path / "rules" / "d.md").mkdir(parents=True)
    with pytest.raises(ApiError) as info:
        store.get(RULES, "d")
    assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        store.put(RULES, "d", "x")
    assert info.value.status == 409 and info.value.code == "is_a_directory"
    assert store.entries(RULES) == [] and sorted(os.listdir(tmp_path / "rules")) == ["d.md"]
