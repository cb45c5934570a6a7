"""Control messages for a turn that runs on another replica reach that replica.

A cancel, an interrupt, a permission or question answer (and the lists of those waiting),
or a session's delete may arrive at any replica; the turn's CLI runs on one. When the turn
(``/api/turns/{id}/...``) or the session's claim (``/api/sessions/{id}...``; between turns,
the server whose CLI for the session is still warm, so a delete ends that CLI) belongs to
another live server, this middleware sends the request on to that server's advertise URL,
unchanged: same method, path, query and body, and the caller's own ``Authorization`` or
``x-api-key``, so that the owner applies its rules (who may see the turn, who may answer) as
if it had been asked. A request forwarded once carries ``X-Claude-Server-Forwarded`` and is
never forwarded again. An owner that does not answer within ``FORWARD_TIMEOUT_S`` is a 502
``replica_unreachable``; a turn whose server is gone (its lease expired, not yet marked) a
503 ``replica_gone``, until a replica marks it interrupted. It runs after the key check: a
request without a valid key is refused where it arrived.
"""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from claude_server.appkeys import BROKER
from claude_server.errors import ApiError, ServiceUnavailable

FORWARDED = "X-Claude-Server-Forwarded"
# Longer than a cancel takes on its replica (an interrupt within milliseconds, the signal
# fallback after turn_stop.INTERRUPT_GRACE_S).
FORWARD_TIMEOUT_S = 10.0
PASSED_HEADERS = ("Authorization", "x-api-key", "Content-Type", "Accept")

TURN_CONTROL = re.compile(r"^/api/turns/([^/]+)/(?:cancel|permissions(?:/[^/]+)?|questions(?:/[^/]+)?)$")
SESSION_CONTROL = re.compile(r"^/api/sessions/([^/]+)(?:/interrupt)?$")


def target(request: web.Request) -> tuple[str, str] | None:
    """("turn" or "session", its id) of a control request, else None."""
    if request.headers.get(FORWARDED):
        return None
    path = request.path
    if (found := TURN_CONTROL.match(path)) is not None:
        return "turn", found.group(1)
    if request.method in ("POST", "DELETE") and (found := SESSION_CONTROL.match(path)) is not None:
        if request.method == "DELETE" and path.endswith("/interrupt"):
            return None
        if request.method == "POST" and not path.endswith("/interrupt"):
            return None
        return "session", found.group(1)
    return None


@web.middleware
async def forwarding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    found = target(request)
    if found is None or BROKER not in request.app:
        return await handler(request)
    replicas = request.app[BROKER].replicas
    kind, ident = found
    owner = await (replicas.owner_of_turn(ident) if kind == "turn" else replicas.owner_of_session(ident))
    if owner is None:
        return await handler(request)
    server_id, url = owner
    if url is None:
        raise ServiceUnavailable(
            f"The replica running this {kind} ({server_id}) stopped answering; its turn is marked interrupted "
            "once its lease expires",
            code="replica_gone",
            headers={"Retry-After": str(max(1, round(replicas.lease_s)))},
        )
    return await forward(request, url, server_id)


async def forward(request: web.Request, base_url: str, server_id: str) -> web.Response:
    headers = {name: request.headers[name] for name in PASSED_HEADERS if name in request.headers}
    headers[FORWARDED] = "1"
    body = await request.read()
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(request.method, base_url + request.path_qs, data=body, headers=headers) as resp,
        ):
            answer = await resp.read()
            passed = {"Content-Type": resp.headers.get("Content-Type", "application/json")}
            if "Retry-After" in resp.headers:
                passed["Retry-After"] = resp.headers["Retry-After"]
            return web.Response(status=resp.status, body=answer, headers=passed)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(
            f"The replica running this turn ({server_id}, {base_url}) did not answer: {exc or 'timed out'}",
            code="replica_unreachable",
            status=502,
        ) from None
