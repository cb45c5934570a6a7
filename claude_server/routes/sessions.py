"""Session routes: list, get, patch, delete, history, interrupt."""

from __future__ import annotations

import json
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from claude_server.api_models.queries import AllQuery, MessagesQuery, SessionsQuery
from claude_server.api_models.sessions import SessionDetail, SessionList, SessionMessages
from claude_server.api_models.turns import LiveTurn
from claude_server.appkeys import BROKER, SESSIONS, STORE
from claude_server.auth import principal, wants_all
from claude_server.broker import Broker
from claude_server.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from claude_server.openapi import Empty, doc
from claude_server.routes.common import (
    LIST_LIMIT,
    LIST_LIMIT_MAX,
    cursor_param,
    int_param,
    read_json_object,
    session_or_404,
    validation_error,
)
from claude_server.store import SessionRow, TurnRow, encode_cursor

routes = web.RouteTableDef()

MESSAGES_LIMIT = 20
MESSAGES_LIMIT_MAX = 100
QUERY_MAX_CHARS = 1000
TITLE_MAX_CHARS = 500
METADATA_MAX_BYTES = 64 * 1024
# A page of /messages stops adding turns past this much event data (a turn is never split).
MESSAGES_MAX_BYTES = 16 * 1024 * 1024


def session_detail(broker: Broker, row: SessionRow) -> dict[str, Any]:
    running = broker.running_on(row.session_id)
    return {**row.detail(), "running_turn": running.public() if running else None}


@routes.get("/api/sessions")
@doc(
    "List sessions",
    tags=("sessions",),
    description="The key's sessions, newest first by last use.",
    query=SessionsQuery,
    responses={200: SessionList},
    errors={400: "A bad parameter (invalid_parameter)", 403: "all=true with a key that is not an admin's"},
)
async def list_sessions(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", LIST_LIMIT, 1, LIST_LIMIT_MAX)
    query = request.query.get("q") or None
    if query is not None and len(query) > QUERY_MAX_CHARS:
        raise BadRequest(f"q is longer than {QUERY_MAX_CHARS} characters", code="invalid_parameter", field="q")
    cursor = cursor_param(request, 3)
    after = None
    if cursor is not None:
        last_used_at, session_id, cursor_query = cursor
        # The cursor keeps the filter it was made with.
        if query is not None and query != cursor_query:
            raise BadRequest("q differs from the cursor's filter", code="invalid_parameter", field="q")
        query, after = cursor_query, (last_used_at, session_id)
    who = principal(request)
    rows = await request.app[STORE].list_sessions(
        limit=limit + 1,
        after=after,
        query=query,
        conversation_id=request.query.get("conversation_id"),
        owner=who.key_id,
        all_owners=who.open or wants_all(request),
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].last_used_at, rows[-1].session_id, query)
    return web.json_response({"sessions": [r.summary() for r in rows], "next_cursor": next_cursor})


@routes.get("/api/sessions/{session_id}")
@doc(
    "Get a session",
    tags=("sessions",),
    query=AllQuery,
    responses={200: SessionDetail},
    errors={404: "No such session, or one of another key (session_not_found)"},
)
async def get_session(request: web.Request) -> web.Response:
    row = await session_or_404(request)
    return web.json_response(session_detail(request.app[BROKER], row))


class SessionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Annotated[str, Field(max_length=TITLE_MAX_CHARS)] | None = None
    metadata: dict[str, Any] | None = None


@routes.patch("/api/sessions/{session_id}")
@doc(
    "Rename a session or set its metadata",
    tags=("sessions",),
    description=(
        "Either or both: `metadata` (at most 64 KiB as JSON) is replaced as a whole; a null or empty `title` goes "
        "back to the default (the first prompt, shortened)."
    ),
    query=AllQuery,
    request=SessionPatch,
    request_example={"title": "Refactor the parser"},
    responses={200: SessionDetail},
    errors={404: "No such session (session_not_found)", 413: "metadata is too large (metadata_too_large)"},
)
async def patch_session(request: web.Request) -> web.Response:
    store = request.app[STORE]
    row = await session_or_404(request)
    body = await read_json_object(request)
    try:
        patch = SessionPatch.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    changes: dict[str, Any] = {}
    if "title" in body:
        # An empty or null title goes back to the default (the first prompt, shortened).
        changes["title"] = (patch.title or "").strip() or None
    if "metadata" in body:
        if patch.metadata is None:
            raise BadRequest("metadata must be a JSON object", code="invalid_field", field="metadata")
        size = len(json.dumps(patch.metadata).encode())
        if size > METADATA_MAX_BYTES:
            raise PayloadTooLarge(
                f"metadata is {size} bytes as JSON; at most {METADATA_MAX_BYTES}",
                code="metadata_too_large",
                field="metadata",
            )
        changes["metadata"] = patch.metadata
    await store.update_session(row.session_id, changes)
    updated = await session_or_404(request, row.session_id)
    return web.json_response(session_detail(request.app[BROKER], updated))


@routes.delete("/api/sessions/{session_id}")
@doc(
    "Delete a session",
    tags=("sessions",),
    description=(
        "Stops its running turn, removes its rows, its workspace (unless another session still uses it) and its "
        "transcripts; frees its conversation_id."
    ),
    query=AllQuery,
    responses={204: Empty("Deleted")},
    errors={404: "No such session (session_not_found)"},
)
async def delete_session(request: web.Request) -> web.Response:
    row = await session_or_404(request)
    if not await request.app[SESSIONS].delete(row):
        # Another request deleted it meanwhile.
        raise NotFound(f"No session {row.session_id} (it may have been deleted)", code="session_not_found")
    return web.Response(status=204)


@routes.get("/api/sessions/{session_id}/messages")
@doc(
    "A session's history",
    tags=("sessions",),
    query=MessagesQuery,
    responses={200: SessionMessages},
    errors={400: "A bad parameter (invalid_parameter)", 404: "No such session (session_not_found)"},
)
async def session_messages(request: web.Request) -> web.Response:
    """The conversation as recorded: per turn, the prompt and every event, oldest first."""
    store, broker = request.app[STORE], request.app[BROKER]
    row = await session_or_404(request)
    limit = int_param(request, "limit", MESSAGES_LIMIT, 1, MESSAGES_LIMIT_MAX)
    cursor = cursor_param(request, 2)
    after = (cursor[0], cursor[1]) if cursor is not None else None
    turns = await store.session_turns(row.session_id, limit=limit + 1, after=after)
    items: list[dict[str, Any]] = []
    size = 0
    for t in turns[:limit]:
        if items and size >= MESSAGES_MAX_BYTES:
            break  # the rest on the next page: one answer holds a bounded amount of events
        events = await turn_events(broker, t)
        size += sum(len(e) for e in events)
        items.append({**turn_summary(t), "prompt": t.prompt, "events": [json.loads(e) for e in events]})
    next_cursor = None
    if len(items) < len(turns):
        last = turns[len(items) - 1]
        next_cursor = encode_cursor(last.started_at, last.turn_id)
    return web.json_response({"session_id": row.session_id, "turns": items, "next_cursor": next_cursor})


def turn_summary(t: TurnRow) -> dict[str, Any]:
    return {
        "turn_id": t.turn_id,
        "status": t.status,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "cost_usd": t.cost_usd,
        "error": t.error,
    }


async def turn_events(broker: Broker, t: TurnRow) -> list[bytes]:
    async with broker.follow(t, 0) as sub:
        return [e.data for e in await sub.available()]


@routes.post("/api/sessions/{session_id}/interrupt")
@doc(
    "Interrupt the running turn",
    tags=("sessions",),
    description="Ends the session's running (or queued) turn through the CLI's own interrupt; the CLI stays warm.",
    query=AllQuery,
    responses={200: LiveTurn},
    errors={404: "No such session (session_not_found)", 409: "No turn is running on it (not_running)"},
)
async def interrupt_session(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    row = await session_or_404(request)
    turn = broker.running_on(row.session_id)
    if turn is None:
        raise Conflict(f"No turn is running on session {row.session_id}", code="not_running")
    await broker.cancel(turn)
    return web.json_response(turn.public())
