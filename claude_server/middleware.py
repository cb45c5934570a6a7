"""HTTP middlewares. ``error_middleware`` renders every error in the shape documented in
``claude_server.errors``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from claude_server.errors import ApiError

log = logging.getLogger(__name__)


def error_response(err: ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status)


# aiohttp raises these itself (routing, body size); they get our shape and a stable code.
_HTTP_CODES = {
    404: ("not_found", "No such endpoint"),
    405: ("method_not_allowed", "Method not allowed on this endpoint"),
    413: ("body_too_large", "Request body too large"),
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, default = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        message = default
        if exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 404:
            message = f"No endpoint {request.method} {request.path}"
        elif exc.status == 413:
            message = exc.text or default
        resp = error_response(ApiError(message, code=code, status=exc.status))
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError("Internal server error", code="internal", status=500))
