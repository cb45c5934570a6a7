"""The web app at /, the API docs at /docs, and their assets under /assets/ (no key needed:
the page asks for one; see middleware.PUBLIC_PATHS)."""

from __future__ import annotations

from aiohttp import web

from claude_server.errors import NotFound
from claude_server.openapi import Empty, Param, Raw, doc
from claude_server.web.pages import PAGE_HEADERS
from claude_server.web.serving import asset_reply, site

routes = web.RouteTableDef()


def _page(name: str) -> web.Response:
    resp = web.Response(body=site().html[name], content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)
    resp.enable_compression()  # gzip when the browser takes it (7.5 KB of HTML become 2.3)
    return resp


HTML = Raw(("text/html",), "The page", schema={"type": "string"})


@routes.get("/")
@doc("The web app", tags=("web app",), auth="none", responses={200: HTML})
async def index(_request: web.Request) -> web.Response:
    return _page("index")


@routes.get("/docs")
@doc("Interactive API docs (Swagger UI over /openapi.json)", tags=("web app",), auth="none", responses={200: HTML})
async def docs(_request: web.Request) -> web.Response:
    return _page("docs")


@routes.get("/assets/{tail:.+}")
@doc(
    "A file of the web app",
    tags=("web app",),
    auth="none",
    headers=(Param("If-None-Match", "The ETag of a copy you hold"),),
    responses={200: Raw(("application/octet-stream",), "The file"), 304: Empty("Unchanged")},
    response_headers={"ETag": "The file's hash", "Cache-Control": "public, max-age=31536000, immutable"},
    errors={404: "No such file (asset_not_found)"},
)
async def asset(request: web.Request) -> web.Response:
    """Named by its content's hash, so it never changes: a browser keeps it for a year."""
    tail = request.match_info["tail"]
    found = site().assets.find(tail)
    if found is None:
        raise NotFound(f"No asset {tail} (the page that named it may be older than the server)", code="asset_not_found")
    reply = asset_reply(found, request.headers.get("Accept-Encoding", ""), request.headers.get("If-None-Match", ""))
    return web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)
