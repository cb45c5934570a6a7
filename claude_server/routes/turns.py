"""Turn routes: status, the event stream (replay + live tail), cancel."""

from __future__ import annotations

from aiohttp import web

from claude_server import sse
from claude_server.appkeys import BROKER, STORE
from claude_server.auth import principal, wants_all
from claude_server.errors import BadRequest, Conflict, NotFound
from claude_server.store import TurnRow
from claude_server.turns import Event

routes = web.RouteTableDef()

REPLAY_PAGE = 1000


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
        seq = int(raw)
    except ValueError:
        raise BadRequest(
            f"{source} must be <turn_id>:<seq> or a sequence number", code="invalid_parameter", field=source
        ) from None
    if seq < 0:
        raise BadRequest(f"{source} must not be negative", code="invalid_parameter", field=source)
    return seq


@routes.get("/api/turns/{turn_id}")
async def get_turn(request: web.Request) -> web.Response:
    row = await turn_row_or_404(request)
    body = row.public()
    live = request.app[BROKER].get(row.turn_id)
    if live is not None:
        body.update(
            status=live.status, session_id=live.session_id, last_seq=live.last_seq, followers=live.public()["followers"]
        )
    return web.json_response(body)


@routes.get("/api/turns/{turn_id}/events")
async def turn_events(request: web.Request) -> web.StreamResponse:
    """Replay the turn's events after the client's last one, then follow it live until it ends."""
    row = await turn_row_or_404(request)
    after = resume_point(request, row.turn_id)
    headers = {"X-Turn-Id": row.turn_id}
    if row.session_id:
        headers["X-Session-Id"] = row.session_id
    live = request.app[BROKER].get(row.turn_id)
    if live is not None:
        async with live.subscribe(after) as sub:
            resp = await sse.open_stream(request, headers)
            try:
                await sse.follow(resp, sub)
                await resp.write_eof()
            except ConnectionResetError:
                pass
            return resp
    # Finished: its whole log is in the database (a turn is released only once flushed).
    store = request.app[STORE]
    resp = await sse.open_stream(request, headers)
    try:
        while batch := await store.events(row.turn_id, after=after, limit=REPLAY_PAGE):
            await resp.write(sse.encode_many(row.turn_id, [Event(e.seq, e.data, "", e.name) for e in batch]))
            after = batch[-1].seq
        await resp.write_eof()
    except ConnectionResetError:
        pass
    return resp


@routes.post("/api/turns/{turn_id}/cancel")
async def cancel_turn(request: web.Request) -> web.Response:
    row = await turn_row_or_404(request)
    broker = request.app[BROKER]
    live = broker.get(row.turn_id)
    if live is None:
        raise Conflict(f"Turn {row.turn_id} is not running (it is {row.status})", code="not_running")
    await broker.cancel(live)
    return web.json_response(live.public())
