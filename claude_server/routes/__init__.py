"""HTTP only: parse and validate the request, call the broker or the store, render."""

from __future__ import annotations

from aiohttp import web

from claude_server.routes import (
    compat_anthropic,
    compat_openai,
    config_files,
    files,
    health,
    keys,
    native,
    openapi_doc,
    prompts,
    providers,
    replicas,
    sessions,
    tasks,
    turns,
    webapp,
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
        keys,
        replicas,
        files,
        config_files,
        compat_openai,
        compat_anthropic,
        openapi_doc,
        webapp,
    ):
        routes.extend(app.router.add_routes(module.routes))
    return routes
