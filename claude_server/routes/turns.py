"""Turn routes: status, the event stream (replay + live tail), cancel."""

from __future__ import annotations

from aiohttp import web

from claude_server import sse
from claude_server.api_models.queries import AllQuery, EventsQuery
from claude_server.api_models.turns import LiveTurn, TurnDetail
from claude_server.appkeys import BROKER, STORE
from claude_server.auth import principal, wants_all
from claude_server.errors import BadRequest, Conflict, NotFound
from claude_server.openapi import Empty, Param, doc
from claude_server.openapi.streams import TURN_STREAM
from claude_server.store import TurnRow
from claude_server.store.events import MAX_SEQ

routes = web.RouteTableDef()

# Longer than any seq a turn can reach (int() of a longer string of digits is also slow).
MAX_SEQ_DIGITS = 30


async def turn_row_or_404(request: web.Request) -> TurnRow:
    """The turn named in the path, if the request's key may see it; 404 otherwise."""
    turn_id = request.match_info["turn_id"]
    row = await request.app[STORE].get_turn(turn_id)
    if row is None or not principal(request).can_see(row.owner, wants_all(request)):
        raise NotFound(f"No turn {turn_id}", code="turn_not_found")
    return row


def resume_point(request: web.Request, turn_id: str) -> int:
    """The seq to replay after: ``Last-Event-ID`` (``<turn_id>:<seq>`` or a bare seq) wins
    over ``?after=<seq>``; 0 replays everything."""
    header = request.headers.get("Last-Event-ID")
    raw, source = (header, "Last-Event-ID") if header is not None else (request.query.get("after"), "after")
    if raw is None or raw.strip() == "":
        return 0
    raw = raw.strip()
    if ":" in raw:
        owner, _, raw = raw.rpartition(":")
        if owner != turn_id:
            raise BadRequest(
                f"{source} {owner}:{raw} belongs to another turn than {turn_id}",
                code="invalid_parameter",
                field=source,
            )
    try:
        seq = int(raw) if len(raw) <= MAX_SEQ_DIGITS else -1
    except ValueError:
        raise BadRequest(
            f"{source} must be <turn_id>:<seq> or a sequence number", code="invalid_parameter", field=source
        ) from None
    if seq < 0:
        raise BadRequest(
            f"{source} must be a sequence number: 0 or more, at most {MAX_SEQ_DIGITS} digits",
            code="invalid_parameter",
            field=source,
        )
    # A seq past any turn's end (SQLite integers stop at 2**63 - 1) replays nothing.
    return min(seq, MAX_SEQ)


@routes.get("/api/turns/{turn_id}")
@doc(
    "Get a turn",
    tags=("turns",),
    query=AllQuery,
    responses={200: TurnDetail},
    errors={404: "No such turn, or one of another key (turn_not_found)"},
)
async def get_turn(request: web.Request) -> web.Response:
    row = await turn_row_or_404(request)
    body = row.public()
    live = request.app[BROKER].get(row.turn_id)
    if live is not None:
        body.update(
            status=str(live.status), session_id=live.session_id, last_seq=live.last_seq, followers=live.followers
        )
    return web.json_response(body)


@routes.get("/api/turns/{turn_id}/events")
@doc(
    "Follow or replay a turn's stream",
    tags=("turns",),
    query=EventsQuery,
    headers=(Param("Last-Event-ID", "The last id seen: `<turn_id>:<seq>` or a bare seq; wins over ?after="),),
    responses={200: TURN_STREAM, 204: Empty("The turn is over and every event was seen: stop reconnecting")},
    errors={400: "Last-Event-ID or after is not a seq, or names another turn", 404: "No such turn (turn_not_found)"},
    response_headers={"X-Turn-Id": "The turn's id", "X-Session-Id": "Its session, once known"},
)
async def turn_events(request: web.Request) -> web.StreamResponse:
    """Replay the turn's events after the client's last one, then follow it live until it
    ends. A finished turn whose every event the client has seen answers 204 No Content: the
    EventSource standard's way of telling a browser to stop reconnecting."""
    row = await turn_row_or_404(request)
    after = resume_point(request, row.turn_id)
    sub = request.app[BROKER].follow(row, after)
    async with sub:
        if sub.finished and after >= row.last_seq:
            return web.Response(status=204, headers={"X-Turn-Id": row.turn_id})
        headers = {"X-Turn-Id": row.turn_id}
        if row.session_id:
            headers["X-Session-Id"] = row.session_id
        return await sse.respond(request, sse.turn_stream(sub), headers)


@routes.post("/api/turns/{turn_id}/cancel")
@doc(
    "Cancel a turn",
    tags=("turns",),
    query=AllQuery,
    responses={200: LiveTurn},
    errors={404: "No such turn (turn_not_found)", 409: "It is not running (not_running)"},
)
async def cancel_turn(request: web.Request) -> web.Response:
    row = await turn_row_or_404(request)
    broker = request.app[BROKER]
    live = broker.get(row.turn_id)
    if live is None:
        raise Conflict(f"Turn {row.turn_id} is not running (it is {row.status})", code="not_running")
    await broker.cancel(live)
    return web.json_response(live.public())
