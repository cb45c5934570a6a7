"""Workspace files: list, download, upload, delete, and a tar.gz of the whole workspace.

No path may reach outside the session's workspace, for any operation. A path is refused
(400) when it is absolute, has a ``..`` part or a NUL byte; the route's path is decoded
once by the router and then checked, so an encoded separator is no way around it. What a
path finally resolves to (symlinks followed) must lie inside the workspace, else 403; files
are opened without following a final symlink and checked again through the open file, so a
symlink swapped in between the check and the open does not escape either.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import mimetypes
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from claude_server.appkeys import SETTINGS
from claude_server.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from claude_server.routes.common import session_or_404

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

CHUNK_BYTES = 256 * 1024
ARCHIVE_QUEUE_CHUNKS = 16


class OutsideWorkspace(Forbidden):
    code = "outside_workspace"


class Workspace:
    """A session's workspace and the checks on every path into it."""

    def __init__(self, path: str) -> None:
        self.root = Path(os.path.realpath(path))

    def contains(self, real: str) -> bool:
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def resolve(self, rel: str, *, allow_root: bool = True) -> Path:
        """The path for ``rel`` (relative, POSIX), checked lexically and through symlinks."""
        if "\x00" in rel:
            raise BadRequest("path must not contain NUL bytes", code="invalid_path", field="path")
        if "\\" in rel:
            raise BadRequest("path must use '/' as its separator", code="invalid_path", field="path")
        pure = PurePosixPath(rel)
        if pure.is_absolute():
            raise BadRequest("path must be relative to the workspace", code="invalid_path", field="path")
        if ".." in pure.parts:
            raise BadRequest("path must not contain '..'", code="invalid_path", field="path")
        parts = [p for p in pure.parts if p not in ("", ".")]
        if not parts and not allow_root:
            raise BadRequest("path must name a file in the workspace", code="invalid_path", field="path")
        target = self.root.joinpath(*parts)
        if not self.contains(os.path.realpath(target)):
            raise OutsideWorkspace(f"{rel} leads outside the workspace")
        return target

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """os.open without following a final symlink, checked again through the descriptor."""
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        if not self.contains(os.readlink(f"/proc/self/fd/{fd}")):
            os.close(fd)
            raise OutsideWorkspace(f"{path.name} leads outside the workspace")
        return fd

    def real_parent(self, path: Path) -> Path:
        """The folder ``path`` is (to be) in, symlinks resolved, refused if outside."""
        parent = Path(os.path.realpath(path.parent))
        if not self.contains(str(parent)):
            raise OutsideWorkspace(f"{self.relative(path)} leads outside the workspace")
        return parent

    def relative(self, path: Path) -> str:
        """``path`` as the API names it: relative to the workspace, "" for the workspace itself."""
        rel = path.relative_to(self.root).as_posix()
        return "" if rel == "." else rel


async def workspace_of(request: web.Request) -> Workspace:
    row = await session_or_404(request)
    ws = Workspace(row.workspace_path)
    if not ws.root.is_dir():
        raise NotFound(f"The workspace of session {row.session_id} does not exist", code="workspace_missing")
    return ws


def entry(path: Path) -> dict[str, Any]:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    return {
        "name": path.name,
        "type": kind,
        "size": st.st_size,
        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
    }


def list_dir(ws: Workspace, directory: Path) -> list[dict[str, Any]]:
    if not directory.exists():
        raise NotFound(f"No directory {ws.relative(directory)!r} in the workspace", code="file_not_found")
    if not directory.is_dir():
        raise BadRequest(f"{ws.relative(directory)} is not a directory", code="not_a_directory", field="path")
    out = []
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        with contextlib.suppress(FileNotFoundError):  # gone since the listing
            out.append(entry(child))
    return out


@routes.get("/api/sessions/{session_id}/files")
async def list_files(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    rel = request.query.get("path", "")
    directory = ws.resolve(rel)
    entries = await asyncio.to_thread(list_dir, ws, directory)
    return web.json_response({"path": ws.relative(directory), "entries": entries})


@routes.get("/api/sessions/{session_id}/files/{path:.+}")
async def download_file(request: web.Request) -> web.StreamResponse:
    ws = await workspace_of(request)
    path = ws.resolve(request.match_info["path"], allow_root=False)
    if path.is_dir():
        raise BadRequest(f"{ws.relative(path)} is a directory: list it with GET .../files?path=", code="is_a_directory")
    try:
        fd = await asyncio.to_thread(ws.open, path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"No file {ws.relative(path)} in the workspace", code="file_not_found") from None
    except OSError as exc:  # ELOOP: the final component is a symlink we will not follow
        raise OutsideWorkspace(f"{ws.relative(path)} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        resp = web.StreamResponse(
            headers={
                "Content-Type": ctype,
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{path.name}"',
            }
        )
        await resp.prepare(request)
        while chunk := await asyncio.to_thread(fh.read, CHUNK_BYTES):
            await resp.write(chunk)
        await resp.write_eof()
    return resp


@routes.put("/api/sessions/{session_id}/files/{path:.+}")
async def upload_file(request: web.Request) -> web.Response:
    """The raw body becomes the file (parent folders created); 201 created, 200 replaced."""
    ws = await workspace_of(request)
    path = ws.resolve(request.match_info["path"], allow_root=False)
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The file is {request.content_length} bytes; at most {limit}", code="file_too_large")
    if path.is_dir() and not path.is_symlink():
        raise Conflict(f"{ws.relative(path)} is a directory", code="is_a_directory")
    parent = ws.real_parent(path)
    try:
        await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Conflict(f"A parent of {ws.relative(path)} is a file", code="not_a_directory") from None
    existed = path.exists() or path.is_symlink()
    fd, tmp = await asyncio.to_thread(tempfile.mkstemp, dir=parent, prefix=".upload-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The file is larger than {limit} bytes", code="file_too_large")
                await asyncio.to_thread(fh.write, chunk)
        # Replacing a symlink replaces the link itself, never what it points to.
        await asyncio.to_thread(os.replace, tmp, parent / path.name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return web.json_response({"path": ws.relative(parent / path.name), "size": size}, status=200 if existed else 201)


@routes.delete("/api/sessions/{session_id}/files/{path:.+}")
async def delete_file(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    path = ws.resolve(request.match_info["path"], allow_root=False)
    if not path.exists() and not path.is_symlink():
        raise NotFound(f"No file {ws.relative(path)} in the workspace", code="file_not_found")
    if path.is_dir() and not path.is_symlink():
        await asyncio.to_thread(shutil.rmtree, path)  # never follows symlinks inside
    else:
        await asyncio.to_thread(path.unlink)
    return web.Response(status=204)


class _QueueWriter(io.RawIOBase):
    """A file object for tarfile (in a worker thread) that hands chunks to the event loop,
    blocking while the client has not taken the earlier ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self.loop = loop
        self.queue = queue
        self.slots = threading.Semaphore(ARCHIVE_QUEUE_CHUNKS)
        self.aborted = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        while not self.slots.acquire(timeout=0.5):
            if self.aborted.is_set():
                raise OSError("the client went away")
        if self.aborted.is_set():
            raise OSError("the client went away")
        self.loop.call_soon_threadsafe(self.queue.put_nowait, bytes(data))
        return len(data)


@routes.get("/api/sessions/{session_id}/archive")
async def archive(request: web.Request) -> web.StreamResponse:
    """The workspace as a streamed tar.gz (symlinks stored as links, never followed)."""
    ws = await workspace_of(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    writer = _QueueWriter(loop, queue)
    name = ws.root.name

    def produce() -> None:
        try:
            with tarfile.open(fileobj=writer, mode="w|gz") as tar:
                tar.add(ws.root, arcname=name)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    resp = web.StreamResponse(
        headers={"Content-Type": "application/gzip", "Content-Disposition": f'attachment; filename="{name}.tar.gz"'}
    )
    await resp.prepare(request)
    producer = loop.run_in_executor(None, produce)
    try:
        while (chunk := await queue.get()) is not None:
            writer.slots.release()
            await resp.write(chunk)
        await producer
        await resp.write_eof()
    except ConnectionResetError:
        pass
    except OSError as exc:  # the workspace changed under tarfile; the archive ends short
        log.warning("archive of %s failed: %s", ws.root, exc)
    finally:
        writer.aborted.set()
    return resp
