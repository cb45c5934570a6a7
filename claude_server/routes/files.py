"""Workspace files over HTTP: list, download, upload, delete, and a tar.gz of the workspace.

Which paths may be reached is ``workspaces.Workspace``; what is served, written or refused,
``workspace_files`` and ``workspace_archive``. All of it runs in the app's ``FilePool``.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from aiohttp import web

from claude_server import streaming
from claude_server.api_models.files import Listing, Saved
from claude_server.api_models.queries import AllQuery, FilesQuery
from claude_server.appkeys import FILE_POOL, SETTINGS
from claude_server.openapi import Empty, Json, Raw, doc
from claude_server.routes.common import session_or_404
from claude_server.workspace_archive import Archive
from claude_server.workspace_files import CHUNK_BYTES, Download, Upload, delete, list_dir
from claude_server.workspaces import Workspace

routes = web.RouteTableDef()


async def workspace_of(request: web.Request) -> Workspace:
    return Workspace((await session_or_404(request)).workspace_path)


def attachment(name: str) -> str:
    """A Content-Disposition for ``name``, whatever it holds (quotes, newlines, non-ASCII):
    an ASCII fallback and the exact name percent-encoded (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@routes.get("/api/sessions/{session_id}/files")
@doc(
    "List a folder of the workspace",
    tags=("files",),
    description="Symlinks are listed, never followed.",
    query=FilesQuery,
    responses={200: Listing},
    errors={
        400: "Not a relative path inside the workspace (invalid_path), or not a directory",
        403: "It resolves outside the workspace (outside_workspace)",
        404: "No such session or folder",
    },
)
async def list_files(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    listing = await request.app[FILE_POOL].run(list_dir, ws, request.query.get("path", ""))
    return web.json_response(listing)


@routes.get("/api/sessions/{session_id}/files/{path:.+}")
@doc(
    "Download a file",
    tags=("files",),
    query=AllQuery,
    responses={200: Raw(("application/octet-stream",), "The file, with its guessed Content-Type")},
    errors={
        400: "Not a relative path inside the workspace (invalid_path)",
        403: "Outside the workspace, not a regular file, or a file with several hard links",
        404: "No such session or file",
    },
    response_headers={"Content-Disposition": "attachment, with the file's name"},
)
async def download_file(request: web.Request) -> web.StreamResponse:
    ws = await workspace_of(request)
    pool = request.app[FILE_POOL]
    download = await pool.open(Download.open, ws, request.match_info["path"])
    name = download.resource.name
    headers = {
        "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
        "Content-Length": str(download.resource.size),
        "Content-Disposition": attachment(name),
    }
    return await streaming.respond(request, pool.stream(download), headers)


@routes.put("/api/sessions/{session_id}/files/{path:.+}")
@doc(
    "Upload a file",
    tags=("files",),
    query=AllQuery,
    request=Raw(("application/octet-stream",), "The file's bytes"),
    responses={201: Json(Saved, "Created"), 200: Json(Saved, "Replaced")},
    errors={
        400: "Not a relative path inside the workspace (invalid_path)",
        403: "Outside the workspace, or over something that is not a regular file",
        404: "No such session",
        409: "A part of the path is a file (not_a_directory)",
        413: "Larger than CLAUDE_SERVER_MAX_UPLOAD_SIZE",
    },
)
async def upload_file(request: web.Request) -> web.Response:
    """The raw body becomes the file (parent folders created); 201 created, 200 replaced."""
    ws = await workspace_of(request)
    limit = request.app[SETTINGS].max_upload_bytes
    pool = request.app[FILE_POOL]
    with await pool.open(Upload.begin, ws, request.match_info["path"], limit, request.content_length) as upload:
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            await upload.call(Upload.write, chunk)
        saved = await upload.call(Upload.commit)
    return web.json_response({"path": saved.path, "size": saved.size}, status=201 if saved.created else 200)


@routes.delete("/api/sessions/{session_id}/files/{path:.+}")
@doc(
    "Delete a file or a folder",
    tags=("files",),
    query=AllQuery,
    responses={204: Empty("Deleted")},
    errors={
        400: "Not a relative path inside the workspace (invalid_path)",
        403: "Outside the workspace (outside_workspace)",
        404: "No such session or file",
    },
)
async def delete_file(request: web.Request) -> web.Response:
    ws = await workspace_of(request)
    await request.app[FILE_POOL].run(delete, ws, request.match_info["path"])
    return web.Response(status=204)


@routes.get("/api/sessions/{session_id}/archive")
@doc(
    "Download the workspace as a .tar.gz",
    tags=("files",),
    query=AllQuery,
    responses={200: Raw(("application/gzip",), "The workspace, streamed")},
    errors={404: "No such session"},
)
async def archive(request: web.Request) -> web.StreamResponse:
    """The workspace as a streamed tar.gz (what goes in: ``workspace_archive``)."""
    ws = await workspace_of(request)
    pool = request.app[FILE_POOL]
    tar = await pool.open(Archive, ws)
    headers = {"Content-Type": "application/gzip", "Content-Disposition": attachment(f"{tar.resource.name}.tar.gz")}
    return await streaming.respond(request, pool.stream(tar), headers)
