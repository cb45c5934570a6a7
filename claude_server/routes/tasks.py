"""Background task routes: submit (one or a batch), list, get, cancel, forget, deliveries."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from claude_server.api_models.queries import AllQuery, TasksQuery
from claude_server.api_models.tasks import (
    BatchAccepted,
    BatchSummary,
    DeliveryList,
    Redelivery,
    Task,
    TaskAccepted,
    TaskDeleted,
    TaskDetail,
    TaskList,
)
from claude_server.appkeys import SETTINGS, STORE, TASKS
from claude_server.auth import principal, wants_all
from claude_server.errors import ApiError, BadRequest, Conflict, NotFound
from claude_server.openapi import doc
from claude_server.routes.common import LIST_LIMIT, LIST_LIMIT_MAX, int_param, read_json_object, session_or_404
from claude_server.routes.native import ClaudeRequest, parse_as, turn_options
from claude_server.store import TaskRow, decode_cursor, encode_cursor
from claude_server.tasks import STATUSES, TaskSpec
from claude_server.webhooks import WebhookRefused, check_url

routes = web.RouteTableDef()

METADATA_MAX_BYTES = 64 * 1024
TASK_ID_MAX_CHARS = 128


class TaskRequest(ClaudeRequest):
    """The body of POST /api/tasks: that of /api/claude, plus what a task has of its own.
    (``stream``, ``detach`` and ``if_busy`` mean nothing for a task: it never streams, nobody
    follows it, and it waits for its session.)"""

    priority: Annotated[int, Field(ge=1, le=10)] = 5
    webhook_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    webhook_secret: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    metadata: dict[str, Any] | None = None


class TaskBatch(BaseModel):
    """The body of POST /api/tasks/batch, for the document: ``submit_batch`` checks each entry
    itself, so that an error names the entry (``tasks[2].priority``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: Annotated[list[TaskRequest], Field(min_length=1, description="At most CLAUDE_SERVER_MAX_BATCH (10)")]


async def task_spec(request: web.Request, body: dict[str, Any]) -> TaskSpec:
    req = parse_as(body, TaskRequest)
    if req.session_id is not None:  # another key's session is not found now, not when it runs
        await session_or_404(request, req.session_id)
    if req.metadata is not None:
        size = len(json.dumps(req.metadata, ensure_ascii=False).encode())
        if size > METADATA_MAX_BYTES:
            raise BadRequest(
                f"metadata is {size} bytes of JSON; at most {METADATA_MAX_BYTES}",
                code="invalid_field",
                field="metadata",
            )
    if req.webhook_secret is not None and req.webhook_url is None:
        raise BadRequest("webhook_secret needs a webhook_url", code="invalid_field", field="webhook_secret")
    if req.webhook_url is not None:
        try:
            await check_url(req.webhook_url, request.app[SETTINGS].webhook_allow_private)
        except WebhookRefused as exc:
            raise BadRequest(f"webhook_url {exc}", code="invalid_webhook_url", field="webhook_url") from None
    return TaskSpec(
        options=turn_options(request, req),
        priority=req.priority,
        conversation_id=req.conversation_id,
        workspace=req.workspace,
        webhook_url=req.webhook_url,
        webhook_secret=req.webhook_secret,
        metadata=req.metadata,
    )


def _accepted(request: web.Request, row: TaskRow) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "status": row.status,
        "session_id": row.session_id,
        "turn_id": row.turn_id,
        "position": request.app[TASKS].position(row.task_id),
    }


@routes.post("/api/tasks")
@doc(
    "Submit a task",
    tags=("tasks",),
    description=(
        "A turn that nobody follows: the body of POST /api/claude plus a priority, a webhook and metadata. "
        "Answered at once, before any CLI runs; the task is stored first."
    ),
    request=TaskRequest,
    request_example={"prompt": "Run the tests and fix what fails", "priority": 8, "metadata": {"pr": 1234}},
    responses={202: TaskAccepted},
    errors={
        400: "A field is wrong, or webhook_url is not allowed (invalid_webhook_url)",
        404: "session_id names no session the key may see",
        429: "Rate limit, or too many queued tasks (task_queue_full)",
    },
    response_headers={"Location": "/api/tasks/<task_id>"},
)
async def submit(request: web.Request) -> web.Response:
    spec = await task_spec(request, await read_json_object(request))
    (row,) = await request.app[TASKS].submit(principal(request), [spec])
    return web.json_response(_accepted(request, row), status=202, headers={"Location": f"/api/tasks/{row.task_id}"})


@routes.post("/api/tasks/batch")
@doc(
    "Submit a batch of tasks",
    tags=("tasks",),
    description="Every entry is checked first; one bad entry refuses the whole batch (`field` names it).",
    request=TaskBatch,
    responses={202: BatchAccepted},
    errors={404: "An entry's session_id names no session the key may see", 429: "Rate limit, or too many queued tasks"},
)
async def submit_batch(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    entries, most = body.get("tasks"), request.app[SETTINGS].max_batch
    if set(body) - {"tasks"}:
        extra = sorted(set(body) - {"tasks"})[0]
        raise BadRequest(f'{extra}: unknown field (a batch is {{"tasks": [...]}})', code="invalid_field", field=extra)
    if not isinstance(entries, list) or not entries:
        raise BadRequest("tasks must be a non-empty list of task bodies", code="invalid_field", field="tasks")
    if len(entries) > most:
        raise BadRequest(
            f"tasks has {len(entries)} entries; at most {most} (CLAUDE_SERVER_MAX_BATCH)",
            code="invalid_field",
            field="tasks",
        )
    specs = []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise BadRequest("must be a JSON object", code="invalid_field", field="body")
            specs.append(await task_spec(request, entry))
        except ApiError as exc:  # the whole batch is refused, naming the entry and its field
            field = exc.extra.get("field")
            where = f"tasks[{index}]" + (f".{field}" if field and field != "body" else "")
            exc.extra["field"], exc.message = where, f"tasks[{index}]: {exc.message}"
            raise
    batch_id = f"batch-{uuid.uuid4()}"
    rows = await request.app[TASKS].submit(principal(request), specs, batch_id)
    return web.json_response(
        {"batch_id": batch_id, "task_ids": [r.task_id for r in rows], "tasks": [_accepted(request, r) for r in rows]},
        status=202,
    )


@routes.get("/api/tasks")
@doc(
    "List tasks",
    tags=("tasks",),
    description="The key's tasks, newest first.",
    query=TasksQuery,
    responses={200: TaskList},
    errors={400: "A bad parameter (invalid_parameter)", 403: "all=true with a key that is not an admin's"},
)
async def list_tasks(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", LIST_LIMIT, 1, LIST_LIMIT_MAX)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_parameter", field="status")
    priority = int_param(request, "priority", 0, 1, 10) if "priority" in request.query else None
    before = None
    if request.query.get("cursor"):
        values = decode_cursor(request.query["cursor"], 1)
        if values is None or not isinstance(values[0], int):
            raise BadRequest("cursor is not one this server gave out", code="invalid_parameter", field="cursor")
        before = values[0]
    filters = {k: request.query.get(k) or None for k in ("session_id", "since", "batch_id")}
    for name, value in filters.items():
        if value is not None and (len(value) > 256 or not value.isprintable()):
            raise BadRequest(f"{name} is not a valid value", code="invalid_parameter", field=name)
    who = principal(request)
    rows = await request.app[STORE].list_tasks(
        limit=limit + 1,
        owner=who.key_id,
        all_owners=who.open or wants_all(request),
        before_seq=before,
        status=status,
        priority=priority,
        **filters,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].seq)
    tasks = request.app[TASKS]
    return web.json_response({"tasks": [tasks.public(r) for r in rows], "next_cursor": next_cursor})


async def task_or_404(request: web.Request) -> TaskRow:
    """The task in the path, if the request's key may see it (another key's is "not found")."""
    task_id = request.match_info["task_id"]
    row = await request.app[STORE].get_task(task_id) if len(task_id) <= TASK_ID_MAX_CHARS else None
    if row is None or not principal(request).can_see(row.owner, wants_all(request)):
        raise NotFound(f"No task {task_id[:TASK_ID_MAX_CHARS]}", code="task_not_found")
    return row


@routes.get("/api/tasks/batches/{batch_id}")
@doc(
    "A batch's progress",
    tags=("tasks",),
    query=AllQuery,
    responses={200: BatchSummary},
    errors={404: "No such batch (batch_not_found)"},
)
async def get_batch(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    found = await request.app[STORE].batch_summary(batch_id) if len(batch_id) <= TASK_ID_MAX_CHARS else None
    if found is None or not principal(request).can_see(found[0], wants_all(request)):
        raise NotFound(f"No batch {batch_id[:TASK_ID_MAX_CHARS]}", code="batch_not_found")
    _, counts, cost, total = found
    return web.json_response(
        {
            "batch_id": batch_id,
            "tasks": total,
            "by_status": counts,
            "cost_usd": cost,
            "finished": all(s not in ("queued", "running") for s in counts),
        }
    )


@routes.get("/api/tasks/{task_id}")
@doc(
    "Get a task",
    tags=("tasks",),
    query=AllQuery,
    responses={200: TaskDetail},
    errors={404: "No such task (task_not_found)"},
)
async def get_task(request: web.Request) -> web.Response:
    row = await task_or_404(request)
    body = request.app[TASKS].public(row)
    body["deliveries"] = await request.app[STORE].deliveries_of(row.task_id)
    return web.json_response(body)


@routes.post("/api/tasks/{task_id}/cancel")
@doc(
    "Cancel a task",
    tags=("tasks",),
    description="A queued task never runs; a running one is interrupted.",
    query=AllQuery,
    responses={200: Task},
    errors={404: "No such task (task_not_found)", 409: "It already ended (task_finished)"},
)
async def cancel_task(request: web.Request) -> web.Response:
    row = await task_or_404(request)
    if row.finished:
        raise Conflict(f"Task {row.task_id} already ended ({row.status})", code="task_finished")
    await request.app[TASKS].cancel(row)
    fresh = await request.app[STORE].get_task(row.task_id)
    return web.json_response(request.app[TASKS].public(fresh or row))


@routes.delete("/api/tasks/{task_id}")
@doc(
    "Forget a task that ended",
    tags=("tasks",),
    query=AllQuery,
    responses={200: TaskDeleted},
    errors={404: "No such task (task_not_found)", 409: "It is queued or running (task_not_finished)"},
)
async def delete_task(request: web.Request) -> web.Response:
    row = await task_or_404(request)
    if not row.finished:
        raise Conflict(
            f"Task {row.task_id} is {row.status}; cancel it first (POST /api/tasks/{row.task_id}/cancel)",
            code="task_not_finished",
        )
    await request.app[TASKS].forget(row)
    return web.json_response({"deleted": row.task_id})


@routes.get("/api/tasks/{task_id}/deliveries")
@doc(
    "A task's webhook deliveries",
    tags=("tasks",),
    query=AllQuery,
    responses={200: DeliveryList},
    errors={404: "No such task (task_not_found)"},
)
async def deliveries(request: web.Request) -> web.Response:
    row = await task_or_404(request)
    return web.json_response({"deliveries": await request.app[STORE].deliveries_of(row.task_id)})


@routes.post("/api/tasks/{task_id}/redeliver")
@doc(
    "Deliver a task's webhook again",
    tags=("tasks",),
    query=AllQuery,
    responses={202: Redelivery},
    errors={
        404: "No such task (task_not_found)",
        409: "It has not ended (task_not_finished), or has no webhook (no_webhook)",
    },
)
async def redeliver(request: web.Request) -> web.Response:
    row = await task_or_404(request)
    if not row.finished:
        raise Conflict(f"Task {row.task_id} is {row.status}: its webhook goes when it ends", code="task_not_finished")
    delivery_id = await request.app[TASKS].redeliver(row)
    if delivery_id is None:
        raise Conflict(f"Task {row.task_id} has no webhook", code="no_webhook")
    return web.json_response({"delivery_id": delivery_id}, status=202)
