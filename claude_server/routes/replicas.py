"""GET /api/admin/replicas: the live replicas on this database and their turns (admin keys)."""

from __future__ import annotations

from aiohttp import web

from claude_server.api_models.replicas import ReplicaList
from claude_server.appkeys import BROKER
from claude_server.auth import principal
from claude_server.errors import Forbidden
from claude_server.openapi import doc

routes = web.RouteTableDef()


@routes.get("/api/admin/replicas")
@doc(
    "List the replicas",
    tags=("operations",),
    auth="admin",
    responses={200: ReplicaList},
    errors={403: "Not an admin key (admin_only)"},
)
async def list_replicas(request: web.Request) -> web.Response:
    """The servers sharing this database whose heartbeat is within the lease, each with its
    unfinished turns."""
    if not principal(request).admin:
        raise Forbidden("Replicas are listed for admin keys", code="admin_only")
    replicas = request.app[BROKER].replicas
    return web.json_response({"lease_seconds": replicas.lease_s, "data": await replicas.public()})
