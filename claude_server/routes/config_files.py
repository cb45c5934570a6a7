"""The configuration API: agents, skills (and their files), rules, MCP servers, CLAUDE.md and
settings.json in the Claude configuration directory (see ``claude_server.config_files``
and ``claude_server.config_content``).

Only admin keys may use it (every request, when the server has no keys). Requests of any key
name what they use: ``agent`` and ``mcp_servers`` in POST /api/claude, or the headers below
on the OpenAI/Anthropic-compatible routes.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from claude_server.api_models.files import CONFIG_LISTS, ConfigEntry, SkillFileSaved
from claude_server.api_models.queries import PageQuery
from claude_server.appkeys import CONFIG_FILES
from claude_server.auth import principal
from claude_server.config_content import MAX_FILE_BYTES, NAMED_KINDS, SINGLE_KINDS, SKILLS, Entry, Kind, Preconditions
from claude_server.config_files import ConfigFiles
from claude_server.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType
from claude_server.openapi import ByPath, Empty, Json, Param, Raw, doc
from claude_server.routes.common import (
    LIST_LIMIT,
    LIST_LIMIT_MAX,
    cursor_param,
    int_param,
    read_json_object,
    validation_error,
)
from claude_server.store import encode_cursor

routes = web.RouteTableDef()

TEXT_TYPES = ("text/markdown", "text/plain")

NAMED = "{kind:agents|skills|rules|mcp-servers}"
IF_MATCH = Param("If-Match", "Write only if the file's ETag is this one (`*`: only if it exists)")
IF_NONE_MATCH = Param("If-None-Match", "`*`: create only, never overwrite")
WRITE_ERRORS = {
    400: "A bad name (invalid_name), frontmatter (invalid_frontmatter) or content (invalid_content)",
    403: "Not an admin key (admin_only), or a file the API will not touch (outside_config_dir)",
    412: "If-Match or If-None-Match failed (precondition_failed; the error carries the current etag)",
    413: "Larger than 256 KiB (config_too_large)",
    415: "Neither JSON nor text/markdown or text/plain",
}
SINGLE = "{kind:claude-md|settings}"


def config_files(request: web.Request) -> ConfigFiles:
    """The store, for an admin (or anyone on a server without keys); 403 otherwise."""
    if not principal(request).admin:
        raise Forbidden("Only admin keys may read or change the server's Claude configuration", code="admin_only")
    return request.app[CONFIG_FILES]


def preconditions(request: web.Request) -> Preconditions:
    return Preconditions(request.headers.get("If-Match"), request.headers.get("If-None-Match"))


class ContentBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    content: str | dict[str, Any]


async def read_content(request: web.Request, kind: Kind) -> str:
    """The file's text: a raw text/markdown or text/plain body, or JSON ``{"content": ...}``
    (an object instead of a string for the JSON files)."""
    # The exact limit applies to the content; JSON escapes may make the body up to 6 times larger.
    if request.content_length is not None and request.content_length > 6 * MAX_FILE_BYTES:
        raise PayloadTooLarge(f"The body is {request.content_length} bytes; too large", code="config_too_large")
    if request.content_type in TEXT_TYPES:
        try:
            return (await request.read()).decode()
        except UnicodeDecodeError:
            raise BadRequest("The body is not UTF-8 text", code="invalid_content", field="content") from None
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            'Send {"content": "..."} as application/json, or the file itself as text/markdown or text/plain '
            f"(got {request.content_type or 'none'!r})"
        )
    try:
        body = ContentBody.model_validate(await read_json_object(request))
    except ValidationError as exc:
        raise validation_error(exc) from None
    if isinstance(body.content, str):
        return body.content
    if not kind.json_content:
        raise BadRequest("content must be a string: the file's text", code="invalid_field", field="content")
    return json.dumps(body.content, indent=2, ensure_ascii=False) + "\n"


def entry_response(request: web.Request, entry: Entry, status: int = 200, **extra: Any) -> web.Response:
    headers = {"ETag": entry.etag}
    if request.method == "GET" and entry.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.json_response({**entry.public(), **extra}, status=status, headers=headers)


def _kind(request: web.Request) -> Kind:
    key = request.match_info["kind"]
    return NAMED_KINDS.get(key) or SINGLE_KINDS[key]


# ---- a skill's other files (registered first: the routes below would take their paths) -------


@routes.get("/api/config/skills/{name}/files/{path:.+}")
@doc(
    "Get a skill's file",
    tags=("configuration",),
    auth="admin",
    responses={200: Raw(("application/octet-stream",), "The file, with its guessed Content-Type")},
    errors={400: "A bad name or path", 403: "outside_config_dir", 404: "No such skill or file"},
)
async def get_skill_file(request: web.Request) -> web.Response:
    store = config_files(request)
    name, rel = request.match_info["name"], request.match_info["path"]
    data = await asyncio.to_thread(store.read_skill_file, name, rel)
    return web.Response(body=data, content_type=mimetypes.guess_type(rel)[0] or "application/octet-stream")


@routes.put("/api/config/skills/{name}/files/{path:.+}")
@doc(
    "Upload a skill's file",
    tags=("configuration",),
    auth="admin",
    request=Raw(("application/octet-stream",), "The file's bytes"),
    responses={201: Json(SkillFileSaved, "Created"), 200: Json(SkillFileSaved, "Replaced")},
    errors={
        400: "A bad name or path",
        403: "outside_config_dir",
        404: "No such skill",
        413: "Larger than 256 KiB (config_too_large)",
    },
)
async def put_skill_file(request: web.Request) -> web.Response:
    """The raw body becomes the file: 201 created, 200 replaced."""
    store = config_files(request)
    name, rel = request.match_info["name"], request.match_info["path"]
    if request.content_length is not None and request.content_length > MAX_FILE_BYTES:
        raise PayloadTooLarge(
            f"The file is {request.content_length} bytes; at most {MAX_FILE_BYTES}", code="config_too_large"
        )
    data = await request.read()
    created = await asyncio.to_thread(store.put_skill_file, name, rel, data)
    return web.json_response({"skill": name, "path": rel, "size": len(data)}, status=201 if created else 200)


@routes.delete("/api/config/skills/{name}/files/{path:.+}")
@doc(
    "Delete a skill's file",
    tags=("configuration",),
    auth="admin",
    responses={204: Empty("Deleted")},
    errors={400: "A bad name or path", 403: "outside_config_dir", 404: "No such skill or file"},
)
async def delete_skill_file(request: web.Request) -> web.Response:
    store = config_files(request)
    await asyncio.to_thread(store.delete_skill_file, request.match_info["name"], request.match_info["path"])
    return web.Response(status=204)


# ---- named files and the single ones ---------------------------------------------------------


@routes.get(f"/api/config/{NAMED}")
@doc(
    "List entries",
    tags=("configuration",),
    auth="admin",
    query=PageQuery,
    responses={200: ByPath("kind", CONFIG_LISTS, "The entries, under the kind's key")},
    errors={400: "A bad parameter (invalid_parameter)"},
)
async def list_entries(request: web.Request) -> web.Response:
    """Sorted by name; ``?limit=`` and ``?cursor=`` as GET /api/sessions."""
    store, kind = config_files(request), _kind(request)
    limit = int_param(request, "limit", LIST_LIMIT, 1, LIST_LIMIT_MAX)
    cursor = cursor_param(request, 1)
    after = cursor[0] if cursor is not None else None
    entries = await asyncio.to_thread(store.entries, kind, after=after, limit=limit + 1)
    next_cursor = encode_cursor(entries[limit - 1].name) if len(entries) > limit else None
    return web.json_response({kind.list_key: [e.summary() for e in entries[:limit]], "next_cursor": next_cursor})


# {name:.*} rather than {name}: a name with a '/' (encoded or not) or an empty one gets a 400
# that says why, not a 404 for a route that does not exist.
@routes.get(f"/api/config/{NAMED}/{{name:.*}}")
@routes.get(f"/api/config/{SINGLE}")
@doc(
    "Get an entry",
    tags=("configuration",),
    auth="admin",
    description=(
        "The file's text, when it changed and its ETag (a skill also lists its other files). CLAUDE.md or "
        "settings.json that is not set: empty content, updated_at null."
    ),
    headers=(Param("If-None-Match", "An ETag you hold: 304 when unchanged"),),
    responses={200: ConfigEntry, 304: Empty("Unchanged")},
    errors={400: "A bad name (invalid_name)", 403: "outside_config_dir", 404: "No such entry (config_not_found)"},
    response_headers={"ETag": "A hash of the content"},
)
async def get_entry(request: web.Request) -> web.Response:
    store, kind = config_files(request), _kind(request)
    entry = await asyncio.to_thread(store.get, kind, request.match_info.get("name", ""))
    if kind is SKILLS:
        return entry_response(request, entry, files=await asyncio.to_thread(store.skill_files, entry.name))
    return entry_response(request, entry)


@routes.put(f"/api/config/{NAMED}/{{name:.*}}")
@routes.put(f"/api/config/{SINGLE}")
@doc(
    "Create or replace an entry",
    tags=("configuration",),
    auth="admin",
    headers=(IF_MATCH, IF_NONE_MATCH),
    request=(ContentBody, Raw(TEXT_TYPES, "The file itself", schema={"type": "string"})),
    request_example={"content": "---\nname: reviewer\ndescription: Reviews a change\n---\nYou are careful."},
    responses={201: Json(ConfigEntry, "Created"), 200: Json(ConfigEntry, "Replaced")},
    errors=WRITE_ERRORS,
    response_headers={"ETag": "A hash of the content"},
)
async def put_entry(request: web.Request) -> web.Response:
    """Create or replace: 201 created, 200 replaced; 412 when If-Match / If-None-Match fail."""
    store, kind = config_files(request), _kind(request)
    content = await read_content(request, kind)
    name = request.match_info.get("name", "")
    entry, created = await asyncio.to_thread(store.put, kind, name, content, preconditions(request))
    return entry_response(request, entry, status=201 if created else 200)


@routes.delete(f"/api/config/{NAMED}/{{name:.*}}")
@doc(
    "Delete an entry",
    tags=("configuration",),
    auth="admin",
    description="A skill goes with all its files.",
    headers=(IF_MATCH,),
    responses={204: Empty("Deleted")},
    errors={
        400: "A bad name (invalid_name)",
        403: "outside_config_dir",
        404: "No such entry (config_not_found)",
        412: "If-Match failed (precondition_failed)",
    },
)
async def delete_entry(request: web.Request) -> web.Response:
    store, kind = config_files(request), _kind(request)
    await asyncio.to_thread(store.delete, kind, request.match_info["name"], preconditions(request))
    return web.Response(status=204)
