"""Helpers shared by the route modules: reading a JSON body, turning validation errors into
one clear 400, reading ``?limit=`` and ``?cursor=``, finding the session a path names, the
configuration a request picks, and what the OpenAI and Anthropic routes share (the request
body and headers, and answering a chat turn as one JSON body or as a stream through the
API's renderer; their errors are raised as ``ApiError`` and the error middleware renders
them in the API's own shape)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from claude_server import json_input, sse
from claude_server.appkeys import BROKER, CONFIG_FILES, SETTINGS, STORE
from claude_server.auth import principal, wants_all
from claude_server.compat.chat import ChatRequest, ChatTurn, start_chat
from claude_server.compat.content import Outcome
from claude_server.compat.conversation import Conversation
from claude_server.compat.models import Model, ModelMap
from claude_server.config_files import TurnChoice
from claude_server.errors import ApiError, BadRequest, NotFound, UnsupportedMediaType
from claude_server.store import SessionRow, decode_cursor

LIST_LIMIT = 50
LIST_LIMIT_MAX = 500
AGENT_HEADER = "X-Claude-Agent"
MCP_SERVERS_HEADER = "X-Claude-Mcp-Servers"
MAX_HEADER_CHARS = 4096


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or 415 (not JSON) / 400 (malformed, or nested deeper than
    ``json_input.MAX_DEPTH``) / 413 (too large)."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Send the request body as JSON with Content-Type: application/json (got {ctype or 'none'!r})"
        )
    raw = await request.read()  # raises 413 past client_max_size
    try:
        body = json_input.loads(raw)
    except json_input.TooDeep as exc:
        raise BadRequest(f"The body is {exc}", code="json_too_deep") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object", code="invalid_json")
    try:
        # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 text (a prompt
        # on stdin, an argument, a database row) can hold.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest(
            "The body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not valid Unicode",
            code="invalid_json",
        ) from None
    return body


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "is required",
}


def validation_error(exc: ValidationError) -> BadRequest:
    """One 400 naming every bad field; the first one also goes in ``field``."""
    problems = []
    fields = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        msg = _MESSAGES.get(err["type"], err["msg"])
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        fields.append(field)
        problems.append(f"{field}: {msg}")
    return BadRequest("; ".join(problems), code="invalid_field", field=fields[0] if fields else None)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code="invalid_parameter", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}", code="invalid_parameter", field=name)
    return value


def cursor_param(request: web.Request, arity: int) -> list[Any] | None:
    raw = request.query.get("cursor")
    if raw is None or raw == "":
        return None
    values = decode_cursor(raw, arity)
    if values is None or not all(isinstance(v, str) or v is None for v in values):
        raise BadRequest("cursor is not one this server gave out", code="invalid_parameter", field="cursor")
    return values


async def session_or_404(request: web.Request, session_id: str | None = None) -> SessionRow:
    """The session named in the path, if the request's key may see it; 404 otherwise (a
    session of another key is "not found", never "forbidden")."""
    session_id = session_id or request.match_info["session_id"]
    row = await request.app[STORE].get_session(session_id)
    if row is None or not principal(request).can_see(row.owner, wants_all(request)):
        raise NotFound(f"No session {session_id} (it may have been deleted)", code="session_not_found")
    return row


def choose_config(request: web.Request, agent: str | None, mcp_servers: Sequence[str] = ()) -> TurnChoice:
    """A request's agent and MCP servers, checked (400 for unknown names). Any key may name
    them. A few stat calls, so it runs on the event loop."""
    return request.app[CONFIG_FILES].choose(agent, mcp_servers)


def header_choice(request: web.Request) -> TurnChoice:
    """The agent and MCP servers of a compatible request: ``X-Claude-Agent: <name>`` and
    ``X-Claude-Mcp-Servers: <name>,<name>``."""
    values = {h: request.headers.get(h, "").strip() for h in (AGENT_HEADER, MCP_SERVERS_HEADER)}
    for header, value in values.items():
        if len(value) > MAX_HEADER_CHARS or not value.isprintable():
            raise BadRequest(f"{header} is not a valid header value", code="invalid_header", field=header)
    names = [n.strip() for n in values[MCP_SERVERS_HEADER].split(",") if n.strip()]
    return request.app[CONFIG_FILES].choose(
        values[AGENT_HEADER] or None, names, agent_field=AGENT_HEADER, mcp_field=MCP_SERVERS_HEADER
    )


# ---- the OpenAI- and Anthropic-compatible routes ----------------------------------------

SESSION_HEADER = "X-Claude-Session-Id"
CONVERSATION_HEADER = "X-Conversation-Id"
MAX_HEADER_ID_CHARS = 256

Body = TypeVar("Body", bound=BaseModel)


class Renderer(Protocol):
    """One API's way of answering a turn; built per request, knowing the turn's id."""

    def body(self, outcome: Outcome) -> dict[str, Any]:
        """The whole answer of a non-streaming request."""

    def start(self) -> bytes:
        """The stream's first events, before any text."""

    def texts(self, texts: list[str]) -> bytes:
        """Text deltas."""

    def ping(self) -> bytes:
        """Something to keep the connection during a silence."""

    def end(self, outcome: Outcome) -> bytes:
        """The stream's last events after a successful turn."""

    def error(self, err: ApiError) -> bytes:
        """The API's in-stream error, sent instead of ``end`` when the turn failed."""


async def parse_body(request: web.Request, model: type[Body]) -> Body:
    """The JSON body validated into ``model``; 400 naming the bad fields."""
    try:
        return model.model_validate(await read_json_object(request))
    except ValidationError as exc:
        raise validation_error(exc) from None


# Values of the tool fields that ask for no tools at all.
_NO_TOOLS: tuple[Any, ...] = (None, [], "none", {"type": "none"})


def refuse_tools(**fields: Any) -> None:
    """400 for client-defined tools (``tools``, ``tool_choice``, ``functions``, ...): Claude
    Code runs its own tools and cannot hand a call back to the client."""
    for name, value in fields.items():
        if value not in _NO_TOOLS:
            raise BadRequest(
                f"{name} is not supported: Claude Code runs its own tools (Bash, Read, Edit, ...) in the "
                "session's workspace and cannot call the client's; leave it out",
                code="tools_not_supported",
                field=name,
            )


def find_model(request: web.Request, name: str) -> Model:
    return ModelMap(request.app[SETTINGS].compat_models).get(name)


def chat_request(request: web.Request, conversation: Conversation, model: Model) -> ChatRequest:
    """A ``ChatRequest`` with the session and configuration headers of the request."""
    ids: dict[str, str | None] = {}
    for header in (SESSION_HEADER, CONVERSATION_HEADER):
        value = request.headers.get(header, "").strip() or None
        if value is not None and (len(value) > MAX_HEADER_ID_CHARS or not value.isprintable()):
            raise BadRequest(
                f"{header} must be at most {MAX_HEADER_ID_CHARS} printable characters",
                code="invalid_header",
                field=header,
            )
        ids[header] = value
    return ChatRequest(conversation, model, ids[SESSION_HEADER], ids[CONVERSATION_HEADER], header_choice(request))


async def answer(
    request: web.Request, req: ChatRequest, *, stream: bool, renderer: Callable[[str], Renderer]
) -> web.StreamResponse:
    """Run the turn and answer it. Headers, the stream's included, go out once the CLI has
    reported its session, so that every successful answer carries ``X-Claude-Session-Id``."""
    app = request.app
    chat = await start_chat(app[BROKER], app[STORE], app[SETTINGS], req, principal(request))
    async with chat:
        try:
            await chat.started()
        except ApiError as err:
            _tagged(err, chat)
            raise
        headers = {"X-Turn-Id": chat.turn.id, SESSION_HEADER: chat.session_id}
        render = renderer(chat.turn.id)
        if stream:
            return await _stream(request, chat, render, headers)
        return await _whole(chat, render, headers)


def _tagged(err: ApiError, chat: ChatTurn) -> ApiError:
    """The error, naming the turn (for /api/turns/{id}) in its headers."""
    err.headers.setdefault("X-Turn-Id", chat.turn.id)
    return err


async def _whole(chat: ChatTurn, render: Renderer, headers: dict[str, str]) -> web.Response:
    async for _ in chat.texts(sse.PING_INTERVAL_S):
        pass
    outcome = await chat.finish()
    if outcome.error is not None:
        raise _tagged(outcome.error, chat)
    return web.json_response(render.body(outcome), headers=headers)


async def _stream(
    request: web.Request, chat: ChatTurn, render: Renderer, headers: dict[str, str]
) -> web.StreamResponse:
    async def body() -> AsyncGenerator[bytes, None]:
        yield render.start()
        async for texts in chat.texts(sse.PING_INTERVAL_S):
            yield render.texts(texts) if texts else render.ping()
        outcome = await chat.finish()
        yield render.error(outcome.error) if outcome.error else render.end(outcome)

    # A client that leaves ends the stream; leaving `async with chat` then ends the turn.
    return await sse.respond(request, body(), headers)
