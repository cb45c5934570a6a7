"""Server-Sent Events: the one encoder, and ``respond``, which sends an event stream through
``streaming.respond`` (the one place any stream is written and ended).

The native stream: each CLI line is ``id: <turn_id>:<seq>`` + ``data: <the line, byte for
byte>``. Server-side events carry an ``event:`` name and a JSON body ``{"type": "<same
name>", ...}``: ``error`` (part of the turn's log, so it has an id) and ``queued`` (the
turn's place in the admission queue; not part of the log, so no id). A ``: ping`` comment
goes out after PING_INTERVAL_S of silence so that proxies and browsers keep the connection.
The compatible APIs' streams are written through the same ``respond``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from claude_server import streaming
from claude_server.subscription import Subscription
from claude_server.turn import Event

PING_INTERVAL_S = 15.0
PING = b": ping\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# How much the server may write ahead of a slow reader before it waits (the default is
# 64 KiB, which makes a flood wait on the client every few lines).
WRITE_BUFFER_BYTES = 4 * 1024 * 1024


def event(data: dict[str, Any] | bytes, name: str | None = None, event_id: str | None = None) -> bytes:
    """One SSE event. ``data`` is a JSON object (serialised here) or one JSON line as it is:
    a JSON line holds no raw newline, so one ``data:`` field carries it whole."""
    body = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    head = b""
    if name:
        head += b"event: " + name.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + body + b"\n\n"


def log_events(turn_id: str, events: list[Event]) -> bytes:
    """A batch of a turn's log as SSE, built with one copy of each line (lines can be
    megabytes, batches hold thousands of lines)."""
    prefix = f"id: {turn_id}:".encode()
    parts: list[bytes] = []
    for ev in events:
        if ev.name:
            parts.append(b"event: " + ev.name.encode() + b"\n")
        parts += (prefix, b"%d\ndata: " % ev.seq, ev.data, b"\n\n")
    return b"".join(parts)


def queued(position: int) -> bytes:
    return event({"type": "queued", "position": position}, "queued")


async def turn_stream(sub: Subscription) -> AsyncGenerator[bytes, None]:
    """A turn's events from the subscription's position to the end, with ``queued`` events
    while it waits for a slot and pings during silences."""
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    position: int | None = None
    while True:
        if sub.queue_position != position:
            position = sub.queue_position
            if position is not None:
                yield queued(position)
                last_write = loop.time()
        batch = await sub.next_batch(max(0.0, last_write + PING_INTERVAL_S - loop.time()))
        if batch is None:
            return
        if batch:
            yield log_events(sub.turn_id, batch)
            last_write = loop.time()
        elif loop.time() - last_write >= PING_INTERVAL_S:
            yield PING
            last_write = loop.time()


async def respond(
    request: web.Request, body: AsyncGenerator[bytes, None], headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """Send ``body`` as an event stream and end it. A client that goes away ends the
    stream quietly (the body's generator is closed, so whatever it follows is let go)."""
    return await streaming.respond(
        request, body, {**SSE_HEADERS, **(headers or {})}, write_buffer_bytes=WRITE_BUFFER_BYTES
    )
