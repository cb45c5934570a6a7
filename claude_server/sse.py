"""Server-Sent Events: the wire format of the native stream.

Each CLI line is ``id: <turn_id>:<seq>`` + ``data: <the line, byte for byte>``. Server-side
events (``error``) carry an ``event:`` name and a JSON body ``{"type": "<same name>", ...}``.
A ``: ping`` comment goes out after PING_INTERVAL_S of silence so that proxies and browsers
keep the connection.
"""

from __future__ import annotations

from aiohttp import web

from claude_server.turns import Event, Subscription

PING_INTERVAL_S = 15.0
PING = b": ping\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def encode(turn_id: str, event: Event) -> bytes:
    # A JSON line holds no raw newline, so one data: field carries it whole.
    head = f"event: {event.name}\n" if event.name else ""
    return f"{head}id: {turn_id}:{event.seq}\ndata: ".encode() + event.data + b"\n\n"


async def open_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    await resp.prepare(request)
    return resp


async def follow(resp: web.StreamResponse, sub: Subscription) -> None:
    """Write the turn's events from the subscription's position to its end.

    Returns normally when the turn is over; ``ConnectionResetError`` when the client left."""
    turn_id = sub.turn.id
    while (batch := await sub.next_batch(PING_INTERVAL_S)) is not None:
        if not batch:
            await resp.write(PING)
            continue
        await resp.write(b"".join(encode(turn_id, event) for event in batch))
