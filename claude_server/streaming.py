"""The one place a streamed body is written to a client and ended: event streams, file
downloads and archives alike.

A client that goes away makes a write raise ``ConnectionResetError`` (aiohttp raises its
subclass ``ClientConnectionResetError``) or, with handler cancellation on, cancels the
handler. Neither is an error of the server: the stream stops quietly (a debug line, no
traceback), and the body is closed either way, so that whatever it holds (a turn it follows,
an open file, a walk of the workspace) is let go.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Protocol

from aiohttp import web

log = logging.getLogger(__name__)


class Body(Protocol):
    """A stream's chunks, and ``aclose`` to let go of what produces them (an async generator
    is one)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def aclose(self) -> Awaitable[None]: ...


async def respond(
    request: web.Request,
    body: Body,
    headers: Mapping[str, str],
    *,
    write_buffer_bytes: int | None = None,
) -> web.StreamResponse:
    """Send ``body``'s chunks with ``headers`` and end the response; ``write_buffer_bytes``
    raises how much may wait in the transport for a slow reader before a write waits."""
    resp = web.StreamResponse(headers=headers)
    try:
        await resp.prepare(request)
        if write_buffer_bytes is not None and request.transport is not None:
            request.transport.set_write_buffer_limits(high=write_buffer_bytes)
        async for chunk in body:
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("%s %s: the client went away", request.method, request.path)
    finally:
        # A body that fails to close must not turn a finished answer into an error.
        with contextlib.suppress(Exception):
            await body.aclose()
    return resp
