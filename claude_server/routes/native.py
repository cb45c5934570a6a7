"""POST /api/claude: run one turn and stream the CLI's lines as SSE (or answer one JSON)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from claude_server import sse
from claude_server.api_models.turns import TurnAnswer
from claude_server.appkeys import BROKER, SETTINGS
from claude_server.auth import principal
from claude_server.claude.command import PermissionMode, TurnOptions
from claude_server.errors import PayloadTooLarge
from claude_server.openapi import Json, doc
from claude_server.openapi.streams import TURN_STREAM
from claude_server.outcome import StopCode, TurnError
from claude_server.routes.common import choose_config, read_json_object, validation_error
from claude_server.turn import Turn
from claude_server.workspaces import check_name

routes = web.RouteTableDef()

# Linux caps one argv element at 128 KiB; system prompts travel as --flag=value.
MAX_ARG_BYTES = 128 * 1024 - 64
MAX_TOOLS = 256
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _fits_argv(value: str) -> str:
    size = len(value.encode())
    if size > MAX_ARG_BYTES:
        raise ValueError(f"is {size} bytes; at most {MAX_ARG_BYTES} (it is passed as one command-line argument)")
    return value


def _session_id(value: str) -> str:
    if not SESSION_ID_RE.match(value):
        raise ValueError("is not a session id (letters, digits, '.', '_' and '-', at most 128)")
    return value


def _tool_name(value: str) -> str:
    if not value.strip():
        raise ValueError("tool names must not be empty")
    if value.startswith("-"):
        raise ValueError("tool names must not start with '-'")
    return value


ArgString = Annotated[str, AfterValidator(_no_nul), AfterValidator(_fits_argv)]
ToolName = Annotated[str, Field(max_length=512), AfterValidator(_no_nul), AfterValidator(_tool_name)]
ToolList = Annotated[list[ToolName], Field(max_length=MAX_TOOLS)]


class ClaudeRequest(BaseModel):
    """The body of POST /api/claude. Strict: no unknown fields, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    session_id: Annotated[str, AfterValidator(_session_id)] | None = None
    dangerously_skip_permissions: bool | None = Field(
        None, validation_alias=AliasChoices("dangerously-skip-permissions", "dangerously_skip_permissions")
    )
    allowed_tools: ToolList | None = Field(None, validation_alias=AliasChoices("allowedTools", "allowed_tools"))
    disallowed_tools: ToolList | None = Field(
        None, validation_alias=AliasChoices("disallowedTools", "disallowed_tools")
    )
    model: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)] | None = None
    permission_mode: PermissionMode | None = None
    max_turns: Annotated[int, Field(ge=1, le=100_000)] | None = None
    system_prompt: ArgString | None = None
    append_system_prompt: ArgString | None = None
    fork_session: bool | None = None
    include_partial_messages: bool | None = None
    max_budget_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    stream: bool | None = None
    detach: bool | None = None
    conversation_id: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)] | None = None
    workspace: Annotated[str, AfterValidator(check_name)] | None = None
    # Checked against the configuration by the handler (config_files.choose).
    agent: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    mcp_servers: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)] | None = None
    # Ask the client about tool uses the permission mode and rules leave open.
    permission_prompt: bool | None = None
    # What to do when a turn already runs on the session.
    if_busy: Literal["reject", "queue", "interrupt"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ClaudeRequest:
        if not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        if self.fork_session and not (self.session_id or self.conversation_id):
            raise ValueError("fork_session needs a session_id (or conversation_id) to fork from")
        return self

    def turn_options(self) -> TurnOptions:
        return TurnOptions(
            prompt=self.prompt,
            session_id=self.session_id,
            skip_permissions=bool(self.dangerously_skip_permissions),
            allowed_tools=tuple(self.allowed_tools or ()),
            disallowed_tools=tuple(self.disallowed_tools or ()),
            model=self.model,
            permission_mode=self.permission_mode,
            max_turns=self.max_turns,
            system_prompt=self.system_prompt,
            append_system_prompt=self.append_system_prompt,
            fork_session=bool(self.fork_session),
            include_partial_messages=bool(self.include_partial_messages),
            max_budget_usd=self.max_budget_usd,
            permission_prompt=bool(self.permission_prompt),
        )


Request = TypeVar("Request", bound=ClaudeRequest)


def parse_request(body: dict[str, Any]) -> ClaudeRequest:
    return parse_as(body, ClaudeRequest)


def parse_as(body: dict[str, Any], model: type[Request]) -> Request:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = validation_error(exc)
        # A cross-field problem has no location of its own: its message starts with the
        # field it is about.
        if err.extra.get("field") == "body":
            message = err.message.removeprefix("body: ")
            if message.split(" ", 1)[0] in model.model_fields:
                err.extra["field"], err.message = message.split(" ", 1)[0], message
        raise err from None


def turn_options(request: web.Request, req: ClaudeRequest) -> TurnOptions:
    """The turn a request asks for, its prompt's size and its configuration checked."""
    limit = request.app[SETTINGS].max_prompt_bytes
    size = len(req.prompt.encode())
    if size > limit:
        raise PayloadTooLarge(
            f"prompt is {size} bytes; at most {limit} (CLAUDE_SERVER_MAX_PROMPT_SIZE)",
            code="prompt_too_large",
            field="prompt",
        )
    return choose_config(request, req.agent, req.mcp_servers or ()).apply(req.turn_options())


def result_body(turn: Turn) -> dict[str, Any]:
    assert turn.result is not None
    body = turn.result.public()
    return {"turn_id": turn.id, **body, "session_id": body["session_id"] or turn.session_id}


@routes.post("/api/claude")
@doc(
    "Run a turn",
    tags=("turns",),
    description=(
        "Runs one turn of Claude Code in the session's workspace: a new session, or `session_id` (or a bound "
        '`conversation_id`) resumes one. Streams the CLI\'s lines as SSE, or with `"stream": false` answers one '
        "JSON object when the turn is over (a failed turn: the error's status and code, see the README's table)."
    ),
    request=ClaudeRequest,
    request_example={"prompt": "Create hello.py that prints hello", "permission_mode": "acceptEdits"},
    responses={
        200: (TURN_STREAM, Json(TurnAnswer, 'With "stream": false: the turn\'s result')),
    },
    errors={
        403: "The operator's policy refuses an option (a permission mode, skipped permissions)",
        404: "No such session (session_not_found)",
        409: "A turn runs on the session (session_busy); or, without streaming, the turn was cancelled",
        413: "The body or the prompt is too large (prompt_too_large)",
        429: "Rate limit, daily budget or full queue; without streaming also queue_timeout",
        502: "Without streaming: the CLI failed (cli_failed, api_error, not_logged_in, ...)",
        503: "The CLI is not installed, no provider is healthy, or the server is shutting down",
        504: "Without streaming: the turn ran too long or went silent",
    },
    response_headers={"X-Turn-Id": "The turn's id (for /api/turns/{turn_id})"},
)
async def claude(request: web.Request) -> web.StreamResponse:
    req = parse_request(await read_json_object(request))
    broker = request.app[BROKER]
    sub = await broker.start(
        turn_options(request, req),
        detach=bool(req.detach),
        conversation_id=req.conversation_id,
        workspace_name=req.workspace,
        principal=principal(request),
        if_busy=req.if_busy or "reject",
        # Nothing reaches a client that waits for one JSON answer before the end: a CLI that
        # crashed before printing anything may be started again unseen.
        spawn_retries=request.app[SETTINGS].spawn_retries if req.stream is False else 0,
    )
    turn = sub.turn
    assert turn is not None
    headers = {"X-Turn-Id": turn.id}
    async with sub:
        if req.stream is not False:
            return await sse.respond(request, sse.turn_stream(sub), headers)
        await turn.wait()
        if turn.error is None and turn.result is not None:
            return web.json_response(result_body(turn), headers=headers)
        error = turn.error or TurnError(StopCode.INTERNAL, "The turn ended without a result")
        extra: dict[str, Any] = {"turn_id": turn.id}
        if turn.result is not None:
            extra["result"] = result_body(turn)
        raise error.api_error(**extra)
