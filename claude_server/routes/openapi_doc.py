"""GET /openapi.json: the OpenAPI 3.1 document of every route, generated (``claude_server.openapi``).
No key needed: it describes the API and holds no data."""

from __future__ import annotations

from aiohttp import web

from claude_server.appkeys import OPENAPI
from claude_server.openapi import Empty, Param, Raw, doc

routes = web.RouteTableDef()

# Clients check back with the ETag (an upgrade changes the document), cheaply: a 304.
CACHE_CONTROL = "no-cache"


@routes.get("/openapi.json")
@doc(
    "This document",
    tags=("docs",),
    auth="none",
    description=(
        "The OpenAPI 3.1 document of every route, generated from the route table and its models; gzipped for "
        "clients that accept it."
    ),
    headers=(Param("If-None-Match", "The ETag of a copy you hold"),),
    responses={
        200: Raw(("application/json",), "The document", schema={"type": "object"}),
        304: Empty("Unchanged: the copy with that ETag is current"),
    },
    response_headers={"ETag": "The document's hash", "Cache-Control": "no-cache: check back with If-None-Match"},
)
async def openapi_document(request: web.Request) -> web.Response:
    served = await request.app[OPENAPI].get(request.app.router)
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    etag = served.gzip_etag if gzipped else served.etag
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = served.gzipped if gzipped else served.body
    return web.Response(body=body, content_type="application/json", headers=headers)
