"""Answers to what the CLI asks during a turn: permission requests and Claude's questions.

GET lists the turn's open requests (a page that reloads shows them again); POST answers one.
Unknown or foreign turn or request: 404; already answered: 409; a bad body: 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from claude_server.api_models.queries import AllQuery
from claude_server.api_models.turns import AnswerReceipt, PermissionList, QuestionList
from claude_server.appkeys import BROKER
from claude_server.auth import principal
from claude_server.errors import BadRequest, Conflict
from claude_server.openapi import doc
from claude_server.prompts import Prompts
from claude_server.routes.common import read_json_object, validation_error
from claude_server.routes.turns import turn_row_or_404

routes = web.RouteTableDef()

Message = Annotated[str, Field(min_length=1, max_length=16 * 1024)]


class PermissionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    behavior: Literal["allow", "deny"]
    updated_input: dict[str, Any] | None = None
    remember: bool | None = None
    message: Message | None = None
    interrupt: bool | None = None


class QuestionAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    answers: Annotated[dict[Annotated[str, Field(max_length=16 * 1024)], Any], Field(max_length=64)] | None = None
    behavior: Literal["answer", "deny"] = "answer"
    message: Message | None = None


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def _prompts(request: web.Request) -> Prompts:
    """The open requests of the turn in the path (404 for an unknown or foreign turn, 409
    for one that is not running: its requests were resolved when it ended)."""
    row = await turn_row_or_404(request)
    live = request.app[BROKER].get(row.turn_id)
    if live is None or live.run is None:
        status = live.status if live is not None else row.status
        raise Conflict(
            f"Turn {row.turn_id} is not running (it is {status}); nothing of it waits for an answer",
            code="not_running",
        )
    return live.run.prompts


async def _waiting(request: web.Request, event_type: str) -> list[dict[str, Any]]:
    """The turn's open requests of one kind (none for a turn that is not running)."""
    row = await turn_row_or_404(request)
    live = request.app[BROKER].get(row.turn_id)
    pending = live.run.prompts.public() if live is not None and live.run is not None else []
    return [p for p in pending if p["type"] == event_type]


@routes.get("/api/turns/{turn_id}/permissions")
@doc(
    "Permission requests waiting for an answer",
    tags=("interactive",),
    description="As their `permission_request` events carried them; none for a turn that is not running.",
    query=AllQuery,
    responses={200: PermissionList},
    errors={404: "No such turn (turn_not_found)"},
)
async def list_permissions(request: web.Request) -> web.Response:
    return web.json_response({"permissions": await _waiting(request, "permission_request")})


@routes.get("/api/turns/{turn_id}/questions")
@doc(
    "Questions waiting for an answer",
    tags=("interactive",),
    description="As their `question` events carried them; none for a turn that is not running.",
    query=AllQuery,
    responses={200: QuestionList},
    errors={404: "No such turn (turn_not_found)"},
)
async def list_questions(request: web.Request) -> web.Response:
    return web.json_response({"questions": await _waiting(request, "question")})


@routes.post("/api/turns/{turn_id}/permissions/{request_id}")
@doc(
    "Allow or deny a tool use",
    tags=("interactive",),
    description=(
        "`allow` (with `updated_input` to change the tool's input, `remember` to allow such uses for the rest "
        "of the session) or `deny` (with a `message` for Claude, `interrupt` to end the turn)."
    ),
    query=AllQuery,
    request=PermissionAnswer,
    request_example={"behavior": "allow"},
    responses={200: AnswerReceipt},
    errors={
        404: "No such turn or request (turn_not_found, permission_not_found)",
        409: "Already answered (already_answered), or the turn is not running (not_running)",
    },
)
async def answer_permission(request: web.Request) -> web.Response:
    prompts = await _prompts(request)
    pending = prompts.find(request.match_info["request_id"], "permission")
    answer: PermissionAnswer = _parse(PermissionAnswer, await read_json_object(request))
    by = principal(request).name
    if answer.behavior == "allow":
        prompts.allow(pending, answer.updated_input, bool(answer.remember), by)
    else:
        prompts.deny(pending, answer.message or "The user denied this tool use", bool(answer.interrupt), by)
    return web.json_response({"request_id": pending.request_id, "behavior": answer.behavior, "by": by})


@routes.post("/api/turns/{turn_id}/questions/{request_id}")
@doc(
    "Answer Claude's question",
    tags=("interactive",),
    description='`{"answers": {"<question text>": "<chosen label>"}}`, or `{"behavior": "deny"}` to decline.',
    query=AllQuery,
    request=QuestionAnswer,
    request_example={"answers": {"Which colour?": "blue"}},
    responses={200: AnswerReceipt},
    errors={
        404: "No such turn or question (turn_not_found, question_not_found)",
        409: "Already answered (already_answered), or the turn is not running (not_running)",
    },
)
async def answer_question(request: web.Request) -> web.Response:
    prompts = await _prompts(request)
    pending = prompts.find(request.match_info["request_id"], "question")
    answer: QuestionAnswer = _parse(QuestionAnswer, await read_json_object(request))
    by = principal(request).name
    if answer.behavior == "deny":
        prompts.deny(pending, answer.message or "The user declined to answer", False, by)
    else:
        if not answer.answers:
            raise BadRequest(
                "answers: required, an object {question text: chosen label}", code="invalid_field", field="answers"
            )
        prompts.answer_question(pending, answer.answers, by)
    return web.json_response({"request_id": pending.request_id, "behavior": answer.behavior, "by": by})
