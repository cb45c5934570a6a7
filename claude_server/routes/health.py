"""GET /health: is the server up, is the CLI there, what is running. No auth."""

from __future__ import annotations

from aiohttp import web

from claude_server import __version__
from claude_server.appkeys import BROKER

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    cli = broker.cli
    return web.json_response(
        {
            # "degraded": up, but turns cannot run until the CLI is installed.
            "status": "ok" if cli.found else "degraded",
            "version": __version__,
            "cli": {"found": cli.found, "version": cli.version, "path": cli.path, "error": cli.error},
            "running_turns": len(broker.running()),
        }
    )
