"""The Anthropic-compatible API: ``POST /v1/messages``."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from claude_server import sse
from claude_server.api_models.compat import AnthropicMessage
from claude_server.compat.content import Outcome, Usage
from claude_server.compat.conversation import Conversation, Message, conversation, text_of
from claude_server.compat.errors import anthropic_error
from claude_server.errors import ApiError
from claude_server.openapi import Json, doc
from claude_server.openapi.parts import COMPAT_ERRORS, COMPAT_HEADERS, COMPAT_RESPONSE_HEADERS
from claude_server.openapi.streams import ANTHROPIC_STREAM
from claude_server.routes.common import answer, chat_request, find_model, parse_body, refuse_tools

routes = web.RouteTableDef()

PING = sse.event({"type": "ping"}, "ping")


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """The body of POST /v1/messages. ``max_tokens`` and the sampling options (temperature,
    top_p, top_k, stop_sequences, ...) are accepted and ignored: Claude Code has none of them."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    messages: list[InputMessage]
    system: str | list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    stream: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None

    def conversation(self) -> Conversation:
        refuse_tools(tools=self.tools, tool_choice=self.tool_choice)
        system = [text_of(self.system, "system")] if self.system is not None else []
        messages = [
            Message(msg.role, text_of(msg.content, f"messages.{i}.content"), f"messages.{i}")
            for i, msg in enumerate(self.messages)
        ]
        return conversation(messages, system)


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }


class MessageRenderer:
    """A turn as one ``message`` with one text block, or as the Messages streaming events."""

    def __init__(self, turn_id: str, model: str) -> None:
        self.id = "msg_" + turn_id.replace("-", "")
        self.model = model

    def _message(self, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def body(self, outcome: Outcome) -> dict[str, Any]:
        return self._message([{"type": "text", "text": outcome.text}], outcome.stop_reason, usage_body(outcome.usage))

    def start(self) -> bytes:
        # Usage is known only at the end; message_delta carries it (cumulative, as the API's).
        message = self._message([], None, usage_body(Usage()))
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        return (
            sse.event({"type": "message_start", "message": message}, "message_start")
            + sse.event(block, "content_block_start")
            + PING
        )

    def texts(self, texts: list[str]) -> bytes:
        return b"".join(
            sse.event(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                "content_block_delta",
            )
            for text in texts
        )

    def ping(self) -> bytes:
        return PING

    def end(self, outcome: Outcome) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": outcome.stop_reason, "stop_sequence": None},
            "usage": usage_body(outcome.usage),
        }
        return (
            sse.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse.event(delta, "message_delta")
            + sse.event({"type": "message_stop"}, "message_stop")
        )

    def error(self, err: ApiError) -> bytes:
        return sse.event(anthropic_error(err), "error")


@routes.post("/v1/messages")
@doc(
    "Create a message (Anthropic-compatible)",
    tags=("anthropic",),
    description=(
        "One Claude Code turn, answered as one message with one text block. `max_tokens` and the sampling "
        "options are accepted and ignored; client-defined tools are refused."
    ),
    request=MessagesRequest,
    request_example={"model": "claude-code", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}]},
    headers=COMPAT_HEADERS,
    responses={200: (Json(AnthropicMessage, "Without stream: the message"), ANTHROPIC_STREAM)},
    errors=COMPAT_ERRORS,
    response_headers=COMPAT_RESPONSE_HEADERS,
    error_shape="anthropic",
)
async def messages(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, MessagesRequest)
    req = chat_request(request, body.conversation(), find_model(request, body.model))
    return await answer(
        request, req, stream=bool(body.stream), renderer=lambda turn_id: MessageRenderer(turn_id, body.model)
    )
