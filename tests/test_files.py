"""The workspace files API, and every way out of the workspace we know of."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from tests.helpers import run_turn, session_of


async def session_with_workspace(client: TestClient) -> tuple[str, Path]:
    _, events = await run_turn(client, {"prompt": "files"})
    sid = session_of(events)
    body = await (await client.get(f"/api/sessions/{sid}")).json()
    return sid, Path(body["workspace_path"])


async def raw_request(client: TestClient, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send the request line exactly as written: a client library would normalise the path."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def test_upload_list_download_delete(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    base = f"/api/sessions/{sid}/files"
    r = await client.put(f"{base}/src/app.py", data=b"print('hi')\n")
    assert r.status == 201 and await r.json() == {"path": "src/app.py", "size": 12}
    assert (ws / "src" / "app.py").read_bytes() == b"print('hi')\n"
    r = await client.put(f"{base}/src/app.py", data=b"print('bye')\n")
    assert r.status == 200
    listing = await (await client.get(base)).json()
    assert listing["path"] == ""
    assert {e["name"]: e["type"] for e in listing["entries"]}["src"] == "directory"
    sub = await (await client.get(base, params={"path": "src"})).json()
    assert sub["entries"][0]["name"] == "app.py" and sub["entries"][0]["size"] == 13
    assert sub["entries"][0]["type"] == "file" and sub["entries"][0]["mtime"].endswith("Z")
    r = await client.get(f"{base}/src/app.py")
    assert r.status == 200 and await r.read() == b"print('bye')\n"
    assert r.headers["Content-Length"] == "13"
    assert (await client.delete(f"{base}/src/app.py")).status == 204
    assert not (ws / "src" / "app.py").exists()
    assert (await client.get(f"{base}/src/app.py")).status == 404
    assert (await client.delete(f"{base}/src/app.py")).status == 404
    assert (await client.delete(f"{base}/src")).status == 204
    assert not (ws / "src").exists()


async def test_binary_and_large_files_round_trip(client: TestClient) -> None:
    sid, _ = await session_with_workspace(client)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    assert (await client.put(f"/api/sessions/{sid}/files/data.bin", data=io.BytesIO(blob))).status == 201
    assert await (await client.get(f"/api/sessions/{sid}/files/data.bin")).read() == blob


async def test_upload_over_the_limit_is_413(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, max_upload_bytes=1000)))
    sid, ws = await session_with_workspace(client)
    r = await client.put(f"/api/sessions/{sid}/files/big", data=b"x" * 1001)
    assert r.status == 413 and (await r.json())["error"]["code"] == "file_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"y" * 400

    r = await client.put(f"/api/sessions/{sid}/files/big", data=chunks())  # chunked: no Content-Length
    assert r.status == 413
    assert not (ws / "big").exists()
    assert [p.name for p in ws.iterdir() if p.name.startswith(".upload-")] == []


async def test_archive_is_a_tar_gz_of_the_workspace(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    (ws / "dir").mkdir()
    (ws / "dir" / "a.txt").write_text("alpha")
    (ws / "outside-link").symlink_to("/etc/passwd")
    r = await client.get(f"/api/sessions/{sid}/archive")
    assert r.status == 200 and r.headers["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(await r.read()), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(f"{ws.name}/dir/a.txt").read() == b"alpha"  # type: ignore[union-attr]
        link = members[f"{ws.name}/outside-link"]
        assert link.issym() and link.linkname == "/etc/passwd"  # stored as a link, not followed


async def test_errors_on_directories_and_files(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    (ws / "d").mkdir()
    (ws / "f").write_text("x")
    base = f"/api/sessions/{sid}/files"
    r = await client.get(f"{base}/d")
    assert r.status == 400 and (await r.json())["error"]["code"] == "is_a_directory"
    r = await client.put(f"{base}/d", data=b"x")
    assert r.status == 409
    r = await client.put(f"{base}/f/child", data=b"x")
    assert r.status == 409 and (await r.json())["error"]["code"] == "not_a_directory"
    r = await client.get(base, params={"path": "f"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "not_a_directory"
    r = await client.get(base, params={"path": "missing"})
    assert r.status == 404
    assert (await client.get("/api/sessions/nope/files")).status == 404
    assert (await client.put("/api/sessions/nope/files/x", data=b"x")).status == 404


TRAVERSALS = [
    "../../../etc/passwd",
    "a/../../etc/passwd",
    "..",
    "/etc/passwd",
    "a\\..\\..\\etc",
    "x\x00y",
]


@pytest.mark.parametrize("bad", TRAVERSALS)
async def test_traversal_in_list_path_is_refused(client: TestClient, bad: str) -> None:
    sid, _ = await session_with_workspace(client)
    r = await client.get(f"/api/sessions/{sid}/files", params={"path": bad})
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_path"


ENCODED = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2E%2E/%2E%2E/etc/passwd",
    "sub/..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "a%00b",
    "..%5C..%5Cetc",
]


@pytest.mark.parametrize("target", ENCODED)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_encoded_traversal_is_refused(client: TestClient, method: str, target: str) -> None:
    sid, ws = await session_with_workspace(client)
    status, _ = await raw_request(client, method, f"/api/sessions/{sid}/files/{target}", b"data")
    assert status == 400
    assert not (ws.parent.parent / "etc").exists()


async def test_plain_dot_dot_in_the_url_never_escapes(client: TestClient) -> None:
    sid, _ = await session_with_workspace(client)
    status, _ = await raw_request(client, "GET", f"/api/sessions/{sid}/files/../../../../etc/passwd")
    assert status in (400, 404)
    status, _ = await raw_request(client, "GET", f"/api/sessions/{sid}/files/a/../../../../../etc/passwd")
    assert status in (400, 404)


async def test_double_encoding_is_decoded_once(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    # "%252e%252e" is the name "%2e%2e" once decoded: a file of that name, not a way up
    status, _ = await raw_request(client, "PUT", f"/api/sessions/{sid}/files/%252e%252e", b"ok")
    assert status == 201
    assert (ws / "%2e%2e").read_bytes() == b"ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "etc-link/passwd"),
        ("GET", "passwd-link"),
        ("PUT", "etc-link/planted"),
        ("PUT", "passwd-link"),
        ("DELETE", "etc-link/passwd"),
        ("DELETE", "passwd-link"),
        ("DELETE", "etc-link"),
    ],
)
async def test_symlinks_out_of_the_workspace_are_refused(client: TestClient, method: str, path: str) -> None:
    sid, ws = await session_with_workspace(client)
    outside = ws.parent.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "passwd").write_text("secret")
    (ws / "etc-link").symlink_to(outside)
    (ws / "passwd-link").symlink_to(outside / "passwd")
    r = await client.request(method, f"/api/sessions/{sid}/files/{path}", data=b"evil")
    assert r.status == 403 and (await r.json())["error"]["code"] == "outside_workspace"
    assert (outside / "passwd").read_text() == "secret"
    assert not (outside / "planted").exists()


async def test_listing_shows_symlinks_without_following_them(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    (ws / "etc-link").symlink_to("/etc")
    (ws / "inner").mkdir()
    (ws / "inner-link").symlink_to(ws / "inner")
    listing = await (await client.get(f"/api/sessions/{sid}/files")).json()
    kinds = {e["name"]: e["type"] for e in listing["entries"]}
    assert kinds["etc-link"] == "symlink" and kinds["inner-link"] == "symlink"
    r = await client.get(f"/api/sessions/{sid}/files", params={"path": "etc-link"})
    assert r.status == 403
    r = await client.get(f"/api/sessions/{sid}/files", params={"path": "inner-link"})
    assert r.status == 200  # a link that stays inside is fine
