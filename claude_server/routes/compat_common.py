"""What the OpenAI and Anthropic routes share: the request body and headers, and answering a
chat turn as one JSON body or as a stream through the API's renderer. Errors are raised as
``ApiError``; the error middleware renders them in the API's own shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from claude_server import sse
from claude_server.appkeys import BROKER, SETTINGS, STORE
from claude_server.auth import principal
from claude_server.compat.chat import ChatRequest, ChatTurn, start_chat
from claude_server.compat.content import Outcome
from claude_server.compat.conversation import Conversation
from claude_server.compat.models import Model, ModelMap
from claude_server.errors import ApiError, BadRequest
from claude_server.routes.common import read_json_object, validation_error
from claude_server.routes.config_files import header_choice

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


def sse_event(data: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


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
    resp = await sse.open_stream(request, headers)
    try:
        await resp.write(render.start())
        async for texts in chat.texts(sse.PING_INTERVAL_S):
            await resp.write(render.texts(texts) if texts else render.ping())
        outcome = await chat.finish()
        await resp.write(render.error(outcome.error) if outcome.error else render.end(outcome))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client left; leaving `async with chat` ends the turn
    return resp
