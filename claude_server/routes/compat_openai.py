"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

The models list also carries the fields of Anthropic's list, so both SDKs read it."""

from __future__ import annotations

import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from claude_server import sse
from claude_server.api_models.compat import ChatCompletion, ModelEntry, ModelList
from claude_server.appkeys import SETTINGS
from claude_server.compat.content import Outcome, Usage
from claude_server.compat.conversation import Conversation, Message, conversation, text_of
from claude_server.compat.errors import openai_error
from claude_server.compat.models import Model, ModelMap
from claude_server.errors import ApiError, BadRequest
from claude_server.openapi import Json, doc
from claude_server.openapi.parts import COMPAT_ERRORS, COMPAT_HEADERS, COMPAT_RESPONSE_HEADERS
from claude_server.openapi.streams import OPENAI_STREAM
from claude_server.routes.common import answer, chat_request, find_model, parse_body, refuse_tools

routes = web.RouteTableDef()

# Models have no release date here; a fixed one keeps the list stable.
MODELS_CREATED = 1_700_000_000
MODELS_CREATED_AT = "2023-11-14T22:13:20Z"
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}
DONE = b"data: [DONE]\n\n"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The body of POST /v1/chat/completions. Sampling options (temperature, top_p, max_tokens,
    stop, seed, ...) are accepted and ignored: Claude Code has none of them."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None

    def conversation(self) -> Conversation:
        """The messages as text; system and developer messages make the system text."""
        refuse_tools(
            tools=self.tools, tool_choice=self.tool_choice, functions=self.functions, function_call=self.function_call
        )
        if self.n not in (None, 1):
            raise BadRequest("n must be 1: Claude Code gives one answer", code="invalid_field", field="n")
        messages: list[Message] = []
        system: list[str] = []
        for i, msg in enumerate(self.messages):
            where = f"messages.{i}"
            if msg.role in ("tool", "function") or msg.tool_calls or msg.function_call is not None:
                raise BadRequest(
                    f"{where}: tool calls and tool results are not supported: Claude Code runs its own tools",
                    code="tools_not_supported",
                    field=where,
                )
            text = text_of(msg.content, f"{where}.content")
            if msg.role in ("system", "developer"):
                system.append(text)
            else:
                messages.append(Message("user" if msg.role == "user" else "assistant", text, where))
        return conversation(messages, system)


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
    }


class CompletionRenderer:
    """A turn as ``chat.completion`` or a stream of ``chat.completion.chunk`` objects."""

    def __init__(self, turn_id: str, model: str, *, include_usage: bool) -> None:
        self.id = f"chatcmpl-{turn_id}"
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._head("chat.completion.chunk"), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI sends it: only the last chunk has usage
        return sse.event(chunk)

    def body(self, outcome: Outcome) -> dict[str, Any]:
        message = {"role": "assistant", "content": outcome.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(outcome)}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage_body(outcome.usage)}

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def texts(self, texts: list[str]) -> bytes:
        return b"".join(self._chunk({"content": text}) for text in texts)

    def ping(self) -> bytes:
        return sse.PING

    def end(self, outcome: Outcome) -> bytes:
        out = self._chunk({}, finish_reason(outcome))
        if self.include_usage:
            out += sse.event({**self._head("chat.completion.chunk"), "choices": [], "usage": usage_body(outcome.usage)})
        return out + DONE

    def error(self, err: ApiError) -> bytes:
        return sse.event(openai_error(err))


def finish_reason(outcome: Outcome) -> str:
    return FINISH_REASONS.get(outcome.stop_reason, "stop")


def model_entry(model: Model) -> dict[str, Any]:
    """A model as OpenAI lists it, plus Anthropic's fields (``type``, ``display_name``, ``created_at``)."""
    return {
        "id": model.id,
        "object": "model",
        "created": MODELS_CREATED,
        "owned_by": "claude-code",
        "type": "model",
        "display_name": model.display_name,
        "created_at": MODELS_CREATED_AT,
    }


@routes.get("/v1/models")
@doc(
    "List models",
    tags=("openai", "anthropic"),
    description="The models as OpenAI lists them, with Anthropic's fields too, so both SDKs read the list.",
    responses={200: ModelList},
    error_shape="openai",
)
async def list_models(request: web.Request) -> web.Response:
    data = [model_entry(m) for m in ModelMap(request.app[SETTINGS].compat_models).all()]
    return web.json_response(
        {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    )


@routes.get("/v1/models/{model}")
@doc(
    "Get a model",
    tags=("openai", "anthropic"),
    responses={200: ModelEntry},
    errors={404: "No such model"},
    error_shape="openai",
)
async def get_model(request: web.Request) -> web.Response:
    return web.json_response(model_entry(find_model(request, request.match_info["model"])))


@routes.post("/v1/chat/completions")
@doc(
    "Chat completion (OpenAI-compatible)",
    tags=("openai",),
    description=(
        "One Claude Code turn: the messages become the prompt (a session resumed by its headers gets only the "
        "new ones). Sampling options are accepted and ignored; client-defined tools are refused."
    ),
    request=ChatCompletionRequest,
    request_example={"model": "claude-code", "messages": [{"role": "user", "content": "Hello"}], "stream": True},
    headers=COMPAT_HEADERS,
    responses={200: (Json(ChatCompletion, "Without stream: the completion"), OPENAI_STREAM)},
    errors=COMPAT_ERRORS,
    response_headers=COMPAT_RESPONSE_HEADERS,
    error_shape="openai",
)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    req = chat_request(request, body.conversation(), find_model(request, body.model))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await answer(
        request,
        req,
        stream=bool(body.stream),
        renderer=lambda turn_id: CompletionRenderer(turn_id, body.model, include_usage=include_usage),
    )
