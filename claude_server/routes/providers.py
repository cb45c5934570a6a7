"""Provider management (admin keys when keys exist) and configuration reload."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from claude_server.api_models.operations import Provider, ProviderList, ReloadResult
from claude_server.appkeys import PROVIDERS, RELOADER, STORE
from claude_server.auth import principal
from claude_server.errors import BadRequest, Forbidden, NotFound
from claude_server.openapi import doc
from claude_server.reload import ReloadRefused
from claude_server.store import now_iso

routes = web.RouteTableDef()


def _admin(request: web.Request) -> None:
    if not principal(request).admin:
        raise Forbidden("Providers and reloads are for admin keys", code="admin_only")


@routes.get("/api/providers")
@doc(
    "List providers and their health",
    tags=("providers",),
    auth="admin",
    responses={200: ProviderList},
)
async def list_providers(request: web.Request) -> web.Response:
    _admin(request)
    providers = request.app.get(PROVIDERS)
    if providers is None:
        return web.json_response({"configured": False, "providers": []})
    midnight = now_iso(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0))
    figures = await request.app[STORE].provider_figures(midnight)
    listed = []
    for entry in providers.public():
        mine = figures.get(entry["id"], {})
        listed.append(
            {
                **entry,
                "bound_sessions": int(mine.get("sessions", 0)),
                "turns_today": int(mine.get("turns_today", 0)),
                "cost_today_usd": float(mine.get("cost_today_usd", 0.0)),
            }
        )
    settings = providers.settings
    return web.json_response(
        {
            "configured": True,
            "strategy": settings.strategy,
            "failover": settings.failover,
            "failure_threshold": settings.failure_threshold,
            "recovery_timeout_s": settings.recovery_timeout_s,
            "providers": listed,
        }
    )


@routes.post(r"/api/providers/{provider_id}/{action:enable|disable|reset}")
@doc(
    "Enable, disable or reset a provider",
    tags=("providers",),
    auth="admin",
    description="`enable` and `disable` take it in or out of rotation until a reload; `reset` clears its failures.",
    responses={200: Provider},
    errors={404: "No such provider (provider_not_found)"},
)
async def change_provider(request: web.Request) -> web.Response:
    _admin(request)
    providers = request.app.get(PROVIDERS)
    provider_id, action = request.match_info["provider_id"], request.match_info["action"]
    if providers is None or not getattr(providers, action)(provider_id):
        raise NotFound(f"No provider {provider_id[:64]!r}", code="provider_not_found")
    entry = next(p for p in providers.public() if p["id"] == provider_id)
    return web.json_response(entry)


@routes.post("/api/admin/reload")
@doc(
    "Reload the providers and settings files",
    tags=("providers",),
    auth="admin",
    description="As SIGHUP does. A file with an error is refused whole, and nothing changes.",
    responses={200: ReloadResult},
    errors={400: "A file has an error (reload_refused)"},
)
async def reload(request: web.Request) -> web.Response:
    _admin(request)
    try:
        changes = request.app[RELOADER].reload()
    except ReloadRefused as exc:
        raise BadRequest(f"The configuration was not reloaded: {exc}", code="reload_refused") from None
    return web.json_response(changes)
