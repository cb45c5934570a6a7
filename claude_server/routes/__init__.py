"""HTTP only: parse and validate the request, call the broker or the store, render."""

from __future__ import annotations

from aiohttp import web

from claude_server.routes import (
    compat_anthropic,
    compat_openai,
    config_files,
    docs,
    files,
    health,
    native,
    prompts,
    providers,
    sessions,
    tasks,
    turns,
)


def setup_routes(app: web.Application) -> list[web.AbstractRoute]:
    """Add every route; returns them so that CORS can be set up on each."""
    routes: list[web.AbstractRoute] = []
    for module in (
        health,
        native,
        sessions,
        turns,
        prompts,
        tasks,
        providers,
        files,
        config_files,
        compat_openai,
        compat_anthropic,
        docs,
    ):
        routes.extend(app.router.add_routes(module.routes))
    return routes
