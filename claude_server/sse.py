"""Server-Sent Events: the wire format of the native stream.

Each CLI line is ``id: <turn_id>:<seq>`` + ``data: <the line, byte for byte>``. Server-side
events carry an ``event:`` name and a JSON body ``{"type": "<same name>", ...}``: ``error``
(part of the turn's log, so it has an id) and ``queued`` (the turn's place in the admission
queue; not part of the log, so no id). A ``: ping`` comment goes out after PING_INTERVAL_S of
silence so that proxies and browsers keep the connection.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from claude_server.turns import Event, Subscription

PING_INTERVAL_S = 15.0
PING = b": ping\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def encode_many(turn_id: str, events: list[Event]) -> bytes:
    """SSE for a batch of events, built with one copy of each line (lines can be megabytes)."""
    # A JSON line holds no raw newline, so one data: field carries it whole.
    prefix = f"id: {turn_id}:".encode()
    parts: list[bytes] = []
    for event in events:
        if event.name:
            parts.append(b"event: " + event.name.encode() + b"\n")
        parts += (prefix, b"%d\ndata: " % event.seq, event.data, b"\n\n")
    return b"".join(parts)


def queued(position: int) -> bytes:
    return b"event: queued\ndata: " + json.dumps({"type": "queued", "position": position}).encode() + b"\n\n"


# How much the server may write ahead of a slow reader before it waits (the default is
# 64 KiB, which makes a flood wait on the client every few lines).
WRITE_BUFFER_BYTES = 4 * 1024 * 1024


async def open_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    await resp.prepare(request)
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
    return resp


async def follow(resp: web.StreamResponse, sub: Subscription) -> None:
    """Write the turn's events from the subscription's position to its end, with ``queued``
    events while it waits for a slot and pings during silences.

    Returns normally when the turn is over; ``ConnectionResetError`` when the client left."""
    turn = sub.turn
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    position: int | None = None
    while True:
        if turn.queue_position != position:
            position = turn.queue_position
            if position is not None:
                await resp.write(queued(position))
                last_write = loop.time()
        batch = await sub.next_batch(max(0.0, last_write + PING_INTERVAL_S - loop.time()))
        if batch is None:
            return
        if batch:
            await resp.write(encode_many(turn.id, batch))
            last_write = loop.time()
        elif loop.time() - last_write >= PING_INTERVAL_S:
            await resp.write(PING)
            last_write = loop.time()
