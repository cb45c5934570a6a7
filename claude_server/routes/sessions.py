"""Session routes."""

from __future__ import annotations

from aiohttp import web

from claude_server.appkeys import BROKER, STORE
from claude_server.errors import NotFound

routes = web.RouteTableDef()


@routes.get("/api/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    sid = request.match_info["session_id"]
    row = await request.app[STORE].get_session(sid)
    if row is None:
        raise NotFound(f"No session {sid} (it may have been deleted)", code="session_not_found")
    running = request.app[BROKER].running_on(sid)
    return web.json_response({**row.public(), "running_turn": running.public() if running else None})
