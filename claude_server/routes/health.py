"""GET /health (open unless CLAUDE_SERVER_HEALTH_AUTH), GET /metrics, GET /api/stats."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from claude_server import __version__
from claude_server.api_models.operations import Health, Stats
from claude_server.api_models.queries import StatsQuery
from claude_server.appkeys import AUTHENTICATOR, BROKER, METRICS, STORE, TASKS
from claude_server.auth import principal
from claude_server.errors import BadRequest, Forbidden
from claude_server.openapi import Raw, doc
from claude_server.stats import GROUPS
from claude_server.stats import report as stats_report

routes = web.RouteTableDef()

# /health looks at the CLI's credentials again at most this often (`claude auth status`
# takes 0.2-1 s).
CREDENTIALS_MAX_AGE_S = 60.0
# ... and at the database at most this often: a monitor polling /health many times a second
# must not queue behind the database's work (under load the round trip was half of p99).
DATABASE_MAX_AGE_S = 1.0


@routes.get("/health")
@doc(
    "Health",
    tags=("operations",),
    auth="optional",
    description=(
        "`ok`, or `degraded` with the reasons when turns cannot run (no CLI, no credentials) or nothing can be "
        "recorded (no database). No key needed unless CLAUDE_SERVER_HEALTH_AUTH is set."
    ),
    responses={200: Health},
)
async def health(request: web.Request) -> web.Response:
    """``ok``, or ``degraded`` with the reasons when turns cannot run (no CLI, no
    credentials) or nothing can be recorded (no database)."""
    broker = request.app[BROKER]
    cli = broker.cli
    db_ok = await request.app[STORE].ping(DATABASE_MAX_AGE_S)
    credentials = await broker.check_credentials(CREDENTIALS_MAX_AGE_S) if cli.found else None
    problems = []
    if not cli.found:
        problems.append(f"Claude Code CLI is not available: {cli.error}")
    if credentials is not None and not credentials.found:
        problems.append(credentials.source)
    if not db_ok:
        problems.append("the database does not answer")
    warnings = [cli.version_warning] if cli.version_warning else []
    return web.json_response(
        {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "warnings": warnings,
            "version": __version__,
            "cli": cli.public(),
            "credentials": credentials.public() if credentials is not None else None,
            "database": {"ok": db_ok, "backend": request.app[STORE].db.dialect.name},
            "replica": broker.replicas.identity(),
            "running_turns": broker.gate.running,
            "max_concurrent": broker.gate.admission.slots,
            "queue_length": broker.gate.queued,
            "max_queue": broker.gate.admission.max_queue,
            "warm": broker.supply.pool.public(),
            "tasks": request.app[TASKS].stats(),
        }
    )


@routes.get("/metrics")
@doc(
    "Prometheus metrics",
    tags=("operations",),
    auth="admin",
    responses={200: Raw((CONTENT_TYPE_LATEST.split(";")[0],), "The Prometheus text format", schema={"type": "string"})},
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; an admin key when keys are configured."""
    if not principal(request).admin:
        raise Forbidden("Metrics are for admin keys", code="admin_only")
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Instants are microseconds since 0001-01-01T00:00:00Z: a date-time with a time zone may lie
# outside datetime's range once moved to UTC (0001-01-01T00:00+05:00), and the end of the day
# 9999-12-31 does (date + 1 day raised OverflowError).
_US = timedelta(microseconds=1)
# The last millisecond a turn's stamp can hold (now_iso: UTC, milliseconds, year 9999 at most).
LAST_STAMP_US = (datetime.max - datetime.min) // _US // 1000 * 1000


def _instant(request: web.Request, name: str) -> int | None:
    """An ISO 8601 date or date-time parameter (a date is its midnight in UTC, and ``to`` as
    a date means the end of that day), in microseconds since 0001-01-01T00:00:00Z."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        days = day.toordinal() - 1 + (1 if name == "to" else 0)
        return days * 86_400_000_000
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 date or date-time (2026-11-22 or 2026-11-22T10:00:00Z)",
            code="invalid_parameter",
            field=name,
        ) from None
    offset = when.utcoffset() or timedelta(0)
    return (when.replace(tzinfo=None) - datetime.min - offset) // _US


def _stamp(us: int) -> str:
    """The instant as turns are stamped (rounded up to the millisecond: bounds compare with
    stamps), clamped to the stamps there can be."""
    ms = min(max(-(-us // 1000), 0), LAST_STAMP_US // 1000)
    return (datetime.min + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


@routes.get("/api/stats")
@doc(
    "Usage stats",
    tags=("operations",),
    query=StatsQuery,
    responses={200: Stats},
    errors={400: "A bad parameter (invalid_parameter)", 403: "group_by=key with a key that is not an admin's"},
)
async def stats(request: web.Request) -> web.Response:
    """Turns, outcomes, cost, tokens and mean duration per day, model or key (admins), from
    the results the CLI reported. An ordinary key sees its own turns; admins see all."""
    who = principal(request)
    group_by = request.query.get("group_by", "day")
    if group_by not in GROUPS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPS)}", code="invalid_parameter", field="group_by")
    if group_by == "key" and not who.admin:
        raise Forbidden("group_by=key is for admin keys", code="admin_only")
    start, end = _instant(request, "from"), _instant(request, "to")
    if start is not None and end is not None and start >= end:
        raise BadRequest("from must be before to", code="invalid_parameter", field="from")
    # `to` past the last possible stamp is no bound at all.
    since = _stamp(start) if start is not None else None
    until = _stamp(end) if end is not None and end <= LAST_STAMP_US else None
    body = await stats_report(
        request.app[STORE],
        since=since,
        until=until,
        group_by=group_by,
        owner=who.key_id,
        all_owners=who.admin,
        operator_names=request.app[AUTHENTICATOR].operator_names(),
    )
    return web.json_response(body)
