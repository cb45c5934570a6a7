"""HTTP middlewares, outermost first (after ``connections.connection_middleware``, which
holds connections and request bodies to their limits): ``request_id_middleware`` (X-Request-Id),
``error_middleware`` (renders every error in the shape documented in ``claude_server.errors``,
so it also renders the refusals of ``origin.origin_middleware``, which comes next, and the 401s
of the last one), ``auth_middleware`` (who is asking). ``app.create_app`` writes the order down.
Headers every response gets are added in ``on_response_prepare``."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http import HttpProcessingError

from claude_server.appkeys import AUTHENTICATOR, SETTINGS
from claude_server.auth import PRINCIPAL, presented_secret
from claude_server.compat.errors import api_for, error_body
from claude_server.errors import ApiError, BadRequest
from claude_server.logs import REQUEST_ID

log = logging.getLogger(__name__)


def error_response(err: ApiError, request: web.Request | None = None) -> web.Response:
    """The error in the native shape; on the OpenAI/Anthropic-compatible routes in the shape of
    the API the request speaks, so that its SDK raises the matching exception."""
    api = api_for(request.path, request.headers) if request is not None else None
    body = err.body() if api is None else error_body(api, err)
    return web.json_response(body, status=err.status, headers=err.headers)


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
        return error_response(err, request)
    except web.RequestPayloadError as exc:
        # A body aiohttp could not decode while a handler read it (Content-Encoding: gzip on
        # bytes that are no gzip, say); the parser's error is its cause. The rest of the body
        # cannot be told from a next request: the connection closes.
        refusal = BadRequest(f"The request body could not be read: {payload_problem(exc)}", code="invalid_body")
        resp = error_response(refusal, request)
        resp.force_close()
        return resp
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
        resp = error_response(ApiError(message, code=code, status=exc.status), request)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError("Internal server error", code="internal", status=500), request)


def payload_problem(exc: web.RequestPayloadError) -> str:
    """What was wrong with a body, in the words of the parser's error behind ``exc``."""
    cause = exc.__cause__
    text = cause.message if isinstance(cause, HttpProcessingError) and cause.message else str(exc)
    return " ".join(str(text).split())


# X-Request-Id: the client's own when it is a sane token, else a new one.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_KEY = web.RequestKey("REQUEST_ID", str)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HTML_CSP = "default-src 'none'; frame-ancestors 'none'"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = rid
    # Not reset afterwards: the access log line, written after the handler, reads it too.
    REQUEST_ID.set(rid)
    return await handler(request)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response gets, streams and errors included."""
    rid = request.get(REQUEST_ID_KEY)
    if rid:
        response.headers["X-Request-Id"] = rid
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", HTML_CSP)


# What loads without a key: the web app's page (it asks for the key), the API docs, the
# document they render, and their static files. Nothing under them reaches the API.
PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json"})  # /openapi.json: it holds no data
PUBLIC_PREFIX = "/assets/"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the request's principal, or answer 401. CORS preflights carry no credentials,
    the web app's pages and assets (``is_public``) need none, and /health stays open unless
    CLAUDE_SERVER_HEALTH_AUTH is set."""
    settings = request.app[SETTINGS]
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if preflight or is_public(request.path) or (request.path == "/health" and not settings.health_auth):
        return await handler(request)
    request[PRINCIPAL] = await request.app[AUTHENTICATOR].authenticate(presented_secret(request))
    return await handler(request)
