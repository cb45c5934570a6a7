"""The workspace files API, and every way out of the workspace we know of."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import shutil
import socket
import stat
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from claude_server.app import create_app
from claude_server.config import Settings
from claude_server.workspace_files import FilePool
from tests.conftest import FAKE_CLI, RunningServer, start_server, stop_server
from tests.fake_anthropic import FakeAnthropic
from tests.helpers import eventually, run_turn, session_of


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


# ---- what a turn can plant: FIFOs, sockets, hard links, long names -------------------------


@contextlib.contextmanager
def fifo_in(ws: Path, name: str = "fifo") -> Iterator[Path]:
    """A FIFO in the workspace; afterwards any reader still blocked on it is let go (opening
    the write end, then closing it, gives it an end of file), so a failing test ends."""
    path = ws / name
    os.mkfifo(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def unix_socket_in(ws: Path, name: str = "sock") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    folder = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.bind(f"/proc/self/fd/{folder}/{name}")  # the full path is over AF_UNIX's 108 bytes
    finally:
        os.close(folder)
    return sock


async def test_a_fifo_download_is_refused_at_once_and_holds_up_nothing(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    (ws / "plain.txt").write_text("plain")
    base = f"/api/sessions/{sid}/files"
    with fifo_in(ws):

        async def fifo() -> tuple[int, dict[str, Any]]:
            r = await client.get(f"{base}/fifo")
            return r.status, await r.json()

        # More at once than the files API has threads, and than the default pool had to spare.
        answers = await asyncio.wait_for(asyncio.gather(*(fifo() for _ in range(8))), 5)
        for status, body in answers:
            assert status == 403 and body["error"]["code"] == "not_a_regular_file"
            assert "fifo is a FIFO" in body["error"]["message"]
        health, plain = await asyncio.wait_for(
            asyncio.gather(client.get("/health"), client.get(f"{base}/plain.txt")), 5
        )
        assert health.status == 200
        assert plain.status == 200 and await plain.read() == b"plain"


async def test_sockets_are_not_downloaded(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    with unix_socket_in(ws):
        r = await asyncio.wait_for(client.get(f"/api/sessions/{sid}/files/sock"), 5)
        assert r.status == 403 and (await r.json())["error"]["code"] == "not_a_regular_file"


async def test_an_upload_replaces_files_and_links_but_not_a_fifo_or_a_socket(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    base = f"/api/sessions/{sid}/files"
    with fifo_in(ws), unix_socket_in(ws):
        for name in ("fifo", "sock"):
            r = await asyncio.wait_for(client.put(f"{base}/{name}", data=b"data"), 5)
            assert r.status == 403 and (await r.json())["error"]["code"] == "not_a_regular_file"
            assert name in (await r.json())["error"]["message"]
        assert stat.S_ISFIFO((ws / "fifo").lstat().st_mode) and stat.S_ISSOCK((ws / "sock").lstat().st_mode)
    assert [p.name for p in ws.iterdir() if p.name.startswith(".upload-")] == []
    # Replacing a symlink replaces the link, never what it points to (as documented).
    (ws / "target.txt").write_text("target")
    (ws / "link.txt").symlink_to("target.txt")
    r = await client.put(f"{base}/link.txt", data=b"new")
    assert r.status == 200
    assert not (ws / "link.txt").is_symlink() and (ws / "link.txt").read_bytes() == b"new"
    assert (ws / "target.txt").read_text() == "target"


async def test_a_hard_linked_file_is_not_served(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    outside = ws.parent.parent / "secret.txt"
    outside.write_text("secret")
    os.link(outside, ws / "innocent.txt")
    r = await client.get(f"/api/sessions/{sid}/files/innocent.txt")
    body = await r.read()
    assert r.status == 403 and b"secret" not in body
    error = json.loads(body)["error"]
    assert error["code"] == "hard_link" and "2 links" in error["message"]
    # Replacing or deleting the name leaves the other one alone.
    assert (await client.put(f"/api/sessions/{sid}/files/innocent.txt", data=b"mine")).status == 200
    assert outside.read_text() == "secret"
    os.link(outside, ws / "again.txt")
    assert (await client.delete(f"/api/sessions/{sid}/files/again.txt")).status == 204
    assert outside.read_text() == "secret"


async def test_the_archive_skips_fifos_sockets_and_hard_links_and_keeps_symlinks(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    outside = ws.parent.parent / "secret.txt"
    outside.write_text("secret")
    (ws / "dir").mkdir()
    (ws / "dir" / "a.txt").write_text("alpha")
    os.link(outside, ws / "dir" / "hard.txt")
    (ws / "both-1.txt").write_text("twice")
    os.link(ws / "both-1.txt", ws / "both-2.txt")
    (ws / "up").symlink_to("..")
    with fifo_in(ws / "dir"), unix_socket_in(ws):
        r = await asyncio.wait_for(client.get(f"/api/sessions/{sid}/archive"), 5)
        data = await asyncio.wait_for(r.read(), 5)
    assert r.status == 200 and b"secret" not in gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name.removeprefix(f"{ws.name}/"): m for m in tar.getmembers()}
        assert tar.extractfile(f"{ws.name}/dir/a.txt").read() == b"alpha"  # type: ignore[union-attr]
    assert members["dir"].isdir() and members["up"].issym() and members["up"].linkname == ".."
    for left_out in ("dir/fifo", "sock", "dir/hard.txt", "both-1.txt", "both-2.txt"):
        assert left_out not in members
    assert all(m.isfile() or m.isdir() or m.issym() for m in members.values())


LONG = "n" * 300


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", LONG),
        ("PUT", LONG),
        ("DELETE", LONG),
        ("PUT", f"dir/{LONG}/file"),
        ("GET", "/".join(["d" * 200] * 25)),  # every name fine, the whole over PATH_MAX
        ("PUT", "/".join(["d" * 200] * 25)),
    ],
)
async def test_names_and_paths_too_long_are_400(client: TestClient, method: str, path: str) -> None:
    sid, _ = await session_with_workspace(client)
    r = await client.request(method, f"/api/sessions/{sid}/files/{path}", data=b"x")
    error = (await r.json())["error"]
    assert r.status == 400 and error["code"] == "invalid_path"
    assert "bytes long" in error["message"]


@pytest.mark.parametrize("path", [LONG, f"{LONG}/sub", "/".join(["d" * 200] * 25)])
async def test_listing_a_path_too_long_is_400(client: TestClient, path: str) -> None:
    sid, _ = await session_with_workspace(client)
    r = await client.get(f"/api/sessions/{sid}/files", params={"path": path})
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_path"


async def test_a_path_through_a_file_is_a_4xx_for_every_operation(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    (ws / "f").write_text("x")
    base = f"/api/sessions/{sid}/files"
    for method in ("GET", "PUT", "DELETE"):
        r = await client.request(method, f"{base}/f/child", data=b"x")
        assert r.status == 409 and (await r.json())["error"]["code"] == "not_a_directory", method
    r = await client.get(base, params={"path": "f/child"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "not_a_directory"


async def test_any_file_name_downloads(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    name = 'quote" return\r é.txt'
    (ws / name).write_text("odd")
    r = await client.get(f"/api/sessions/{sid}/files/{quote(name)}")
    assert r.status == 200 and await r.read() == b"odd"
    assert r.headers["Content-Disposition"].endswith("filename*=UTF-8''" + quote(name, safe=""))


async def test_a_workspace_replaced_by_a_symlink_is_refused(client: TestClient) -> None:
    sid, ws = await session_with_workspace(client)
    outside = ws.parent.parent / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    shutil.rmtree(ws)
    ws.symlink_to(outside)
    for method, path in (("GET", "/files"), ("GET", "/files/secret.txt"), ("GET", "/archive")):
        r = await client.request(method, f"/api/sessions/{sid}{path}")
        assert r.status == 403 and b"secret" not in await r.read(), path


# ---- a download the client leaves ----------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeAnthropic) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("files"), fake_api, FAKE_CLI, {"CLAUDE_SERVER_LOG_LEVEL": "INFO"})
    yield server
    stop_server(server)


def real_workspace(server: RunningServer) -> tuple[str, Path]:
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{server.url}/api/claude",
            data=json.dumps({"prompt": "files", "stream": False}).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=30,
    ) as resp:
        sid = json.load(resp)["session_id"]
    with urllib.request.urlopen(f"{server.url}/api/sessions/{sid}", timeout=10) as resp:
        return sid, Path(json.load(resp)["workspace_path"])


def leave_after_a_few_bytes(server: RunningServer, target: str, *, half_close: bool) -> None:
    """Start a download and leave: by closing the socket (the server sees a reset at once), or
    by a FIN first, after which the server's transport is closing while it still has data to
    send, so that its next write fails instead of being cancelled."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        if half_close:
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.2)


def test_a_download_the_client_leaves_is_no_error(real_server: RunningServer) -> None:
    sid, ws = real_workspace(real_server)
    (ws / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    offset = len(real_server.log_text())
    for target in (f"/api/sessions/{sid}/files/big.bin", f"/api/sessions/{sid}/archive"):
        for half_close in (False, True, False, True):
            leave_after_a_few_bytes(real_server, target, half_close=half_close)
    host, port = real_server.url.removeprefix("http://").split(":")
    for _ in range(2):  # an upload left half-way
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            head = f"PUT /api/sessions/{sid}/files/half.bin HTTP/1.1\r\nHost: localhost\r\n"
            head += "Content-Length: 10000000\r\n\r\n"
            sock.sendall(head.encode() + b"x" * 1_000_000)
    with urllib.request.urlopen(f"{real_server.url}/health", timeout=10) as resp:
        assert resp.status == 200
    time.sleep(1)  # the handlers notice the resets
    log = real_server.log_text()[offset:]
    assert "Traceback" not in log and " ERROR " not in log, log
    assert [p.name for p in ws.iterdir() if p.name.startswith(".upload-") or p.name == "half.bin"] == []


# ---- the pool: a descriptor is never closed under a call -----------------------------------


class SlowSource:
    """A source whose first read waits to be let go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.closed_while_reading = False
        self.reading = False
        self.closed = threading.Event()

    def __next__(self) -> bytes:
        self.reading = True
        self.go.wait(10)
        self.reading = False
        return b"chunk"

    def close(self) -> None:
        self.closed_while_reading = self.reading
        self.closed.set()


async def test_a_stream_left_mid_read_closes_its_source_after_the_read() -> None:
    pool = FilePool(workers=1)
    try:
        source = SlowSource()
        body = pool.stream(await pool.open(lambda: source))
        reading = asyncio.ensure_future(body.__anext__())
        await eventually(lambda: source.reading)
        reading.cancel()  # the client left: the handler is cancelled while a thread reads
        await body.aclose()
        assert not source.closed.is_set()
        source.go.set()
        assert await asyncio.to_thread(source.closed.wait, 5)
        assert not source.closed_while_reading
    finally:
        pool.close()
