"""The answers of the OpenAI- and Anthropic-compatible routes, and their stream events."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from claude_server.api_models.base import ApiModel


class ModelEntry(ApiModel):
    """A model as OpenAI lists it, with Anthropic's fields too."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: Literal["model"]
    display_name: str
    created_at: str


class ModelList(ApiModel):
    object: Literal["list"]
    data: list[ModelEntry]
    has_more: bool
    first_id: str
    last_id: str


class PromptTokensDetails(ApiModel):
    cached_tokens: int


class CompletionUsage(ApiModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(ApiModel):
    role: Literal["assistant"]
    content: str
    refusal: None


class CompletionChoice(ApiModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: Literal["stop", "length", "content_filter"]


class ChatCompletion(ApiModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ChunkDelta(ApiModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(ApiModel):
    index: int
    delta: ChunkDelta
    logprobs: None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class ChatCompletionChunk(ApiModel):
    """One ``data:`` event of a streamed completion; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = Field(
        None, description="With stream_options.include_usage: null, then on the last chunk"
    )


class TextBlock(ApiModel):
    type: Literal["text"]
    text: str


class MessageUsage(ApiModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class AnthropicMessage(ApiModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[TextBlock]
    stop_reason: str | None
    stop_sequence: None
    usage: MessageUsage


class MessageStart(ApiModel):
    type: Literal["message_start"]
    message: AnthropicMessage


class ContentBlockStart(ApiModel):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock


class TextDelta(ApiModel):
    type: Literal["text_delta"]
    text: str


class ContentBlockDelta(ApiModel):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta


class ContentBlockStop(ApiModel):
    type: Literal["content_block_stop"]
    index: int


class StopDelta(ApiModel):
    stop_reason: str | None
    stop_sequence: None


class MessageDelta(ApiModel):
    type: Literal["message_delta"]
    delta: StopDelta
    usage: MessageUsage


class MessageStop(ApiModel):
    type: Literal["message_stop"]


class Ping(ApiModel):
    type: Literal["ping"]
