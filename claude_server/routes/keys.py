"""API keys over HTTP, for admin keys (and anyone while the server runs without keys): the
same keys as ``claude-server keys``. A created key's secret is in the answer once; only its
SHA-256 is kept."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from claude_server.api_models.keys import ApiKey, ApiKeyList, CreatedApiKey
from claude_server.appkeys import STORE
from claude_server.auth import principal
from claude_server.errors import Conflict, Forbidden, NotFound
from claude_server.openapi import doc
from claude_server.routes.common import read_json_object, validation_error
from claude_server.store import KeyExists

routes = web.RouteTableDef()

# A name is shown in logs, lists and stats: printable, one line, not too long.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,127}$"


class NewKey(BaseModel):
    """A new key: its name (unique), whether it is an admin, its own daily budget."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=KEY_NAME_PATTERN)]
    admin: bool = False
    daily_budget_usd: Annotated[float, Field(ge=0)] | None = None


def _admin(request: web.Request) -> None:
    if not principal(request).admin:
        raise Forbidden("API keys are managed by admin keys", code="admin_only")


@routes.get("/api/keys")
@doc("List the API keys", tags=("keys",), auth="admin", responses={200: ApiKeyList})
async def list_keys(request: web.Request) -> web.Response:
    """The keys of the database (never their secrets), revoked ones included; operator keys
    (CLAUDE_SERVER_API_KEYS) live in the environment and are not listed."""
    _admin(request)
    rows = await request.app[STORE].list_keys()
    return web.json_response({"keys": [r.public() for r in rows]})


@routes.post("/api/keys")
@doc(
    "Create an API key",
    tags=("keys",),
    auth="admin",
    request=NewKey,
    request_example={"name": "alice", "admin": False, "daily_budget_usd": 5},
    responses={201: CreatedApiKey},
    errors={409: "A key of that name exists (key_exists)"},
)
async def create_key(request: web.Request) -> web.Response:
    """The secret is in this answer once; only its SHA-256 is kept. On a server without keys,
    the first key closes it: every request needs a key from then on."""
    _admin(request)
    try:
        new = NewKey.model_validate(await read_json_object(request))
    except ValidationError as exc:
        raise validation_error(exc) from None
    try:
        row, secret = await request.app[STORE].create_key(
            new.name, admin=new.admin, daily_budget_usd=new.daily_budget_usd
        )
    except KeyExists as exc:
        raise Conflict(str(exc).capitalize(), code="key_exists") from None
    return web.json_response({**row.public(), "secret": secret}, status=201)


@routes.post("/api/keys/{key}/revoke")
@doc(
    "Revoke an API key",
    tags=("keys",),
    auth="admin",
    responses={200: ApiKey},
    errors={404: "No key of that id or name (key_not_found)"},
)
async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key by its id or name; its next request is refused. Revoking again is a no-op."""
    _admin(request)
    key = request.match_info["key"]
    row = await request.app[STORE].revoke_key(key)
    if row is None:
        raise NotFound(f"No key named or with id {key!r}", code="key_not_found")
    return web.json_response(row.public())
