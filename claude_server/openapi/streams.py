"""The event streams the API sends, described once for every route that sends them
(README, "The stream"; ``claude_server.sse``)."""

from __future__ import annotations

from claude_server.api_models import compat, turns
from claude_server.api_models.base import AnthropicErrorResponse, OpenAIErrorResponse
from claude_server.openapi.describe import Sse, SseEvent

TURN_STREAM = Sse(
    description=(
        "The turn's events as Server-Sent Events (`Cache-Control: no-cache`, `X-Accel-Buffering: no`). Each line "
        "the CLI prints is one event, `id: <turn_id>:<seq>` and `data: <the line, byte for byte>`; the server's own "
        "events have an `event:` name and a JSON body with the same `type`. A `: ping` comment comes after 15 s of "
        "silence. The stream ends after the CLI's `result`, or after an `error` event. Reconnect to "
        "`GET /api/turns/{turn_id}/events` with `Last-Event-ID` to get what was missed."
    ),
    events=(
        SseEvent(None, turns.CliLine, "A line of the CLI's stream-json output", has_id=True),
        SseEvent("error", turns.ErrorEvent, "The turn failed; the stream ends after it", has_id=True),
        SseEvent("queued", turns.QueuedEvent, "Waiting for a slot or for the session; not part of the log"),
        SseEvent("permission_request", turns.PermissionRequest, "A tool use waits for an answer", has_id=True),
        SseEvent("question", turns.Question, "Claude asks the user", has_id=True),
        SseEvent("permission_resolved", turns.PermissionResolved, "A permission request was answered", has_id=True),
        SseEvent("question_resolved", turns.QuestionResolved, "A question was answered", has_id=True),
    ),
    example=(
        'id: 5b0c8d2e:1\ndata: {"type":"system","subtype":"init","session_id":"efa3c8bf",...}\n\n'
        'id: 5b0c8d2e:2\ndata: {"type":"assistant","message":{"content":[{"type":"text","text":"Hi."}]},...}\n\n'
        'id: 5b0c8d2e:3\ndata: {"type":"result","subtype":"success","is_error":false,"result":"Hi.",...}\n\n'
    ),
)

OPENAI_STREAM = Sse(
    description=(
        "`chat.completion.chunk` objects as `data:` events, as OpenAI streams them, ending with `data: [DONE]`; "
        "a failed turn sends an error object instead of the last chunk."
    ),
    events=(
        SseEvent(None, compat.ChatCompletionChunk, "A chunk: the role first, then text deltas, then the finish reason"),
        SseEvent(None, OpenAIErrorResponse, "The turn failed"),
    ),
    example='data: {"id":"chatcmpl-5b0c","object":"chat.completion.chunk",...}\n\ndata: [DONE]\n\n',
)

ANTHROPIC_STREAM = Sse(
    description="The Messages API's streaming events, as Anthropic sends them, with one text block.",
    events=(
        SseEvent("message_start", compat.MessageStart, "The message, without content"),
        SseEvent("content_block_start", compat.ContentBlockStart, "The text block begins"),
        SseEvent("ping", compat.Ping, "Keeps the connection during silences"),
        SseEvent("content_block_delta", compat.ContentBlockDelta, "Text"),
        SseEvent("content_block_stop", compat.ContentBlockStop, "The text block ends"),
        SseEvent("message_delta", compat.MessageDelta, "The stop reason and the usage"),
        SseEvent("message_stop", compat.MessageStop, "The end"),
        SseEvent("error", AnthropicErrorResponse, "The turn failed"),
    ),
)
