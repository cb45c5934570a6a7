"""The answer's text, read from a turn's events as they arrive, and how the turn ended.

Turns run with ``--include-partial-messages``: the text comes as ``stream_event`` deltas, and
the full ``assistant`` message that follows repeats it. The text of an API message whose
deltas were seen is therefore taken from the deltas only; an ``assistant`` message without
deltas (a CLI that sent none, a synthetic error message) gives its text whole. Streaming and
non-streaming answers are the same text, since both come from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from claude_server.claude import diagnosis, events
from claude_server.errors import ApiError
from claude_server.outcome import StopCode, TurnError, TurnResult
from claude_server.turn import Event, kind_of

# Text of different API messages, and tool lines, are separated by a blank line.
SEGMENT_SEPARATOR = "\n\n"
# Tool lines show the most telling input field, shortened to this.
TOOL_DETAIL_CHARS = 200
TOOL_DETAIL_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description", "prompt")
# The only lines that can carry answer text or the outcome; the rest (tool results, which
# can be megabytes, status lines) are not even parsed.
_READ_KINDS = frozenset({"stream_event", "assistant", "result"})


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def of(cls, raw: Any) -> Usage:
        """From a ``result`` line's usage, reading only the counts that are numbers."""
        if not isinstance(raw, dict):
            return cls()

        def count(name: str) -> int:
            value = raw.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

        return cls(
            count("input_tokens"),
            count("output_tokens"),
            count("cache_creation_input_tokens"),
            count("cache_read_input_tokens"),
        )

    @property
    def prompt_tokens(self) -> int:
        """All input, cached or not (what OpenAI calls prompt tokens)."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass(frozen=True)
class Outcome:
    """How a turn ended: its whole text, usage and stop reason (in Anthropic's words:
    ``end_turn``, ``max_tokens``, ...), and the error to answer with if it failed."""

    text: str
    usage: Usage
    stop_reason: str
    error: ApiError | None = None


def failure(error: dict[str, Any]) -> ApiError:
    """The HTTP error for the broker's ``error`` event (or a turn's recorded error)."""
    parsed = TurnError.from_json(error) or TurnError(StopCode.CLI_FAILED, "The turn failed")
    return parsed.api_error()


def tool_line(block: dict[str, Any]) -> str:
    """One short line for a tool call: ``> Bash: ls -la``."""
    name = block.get("name") if isinstance(block.get("name"), str) else "tool"
    args = block.get("input") if isinstance(block.get("input"), dict) else {}
    assert isinstance(args, dict)
    detail = next((args[k] for k in TOOL_DETAIL_KEYS if isinstance(args.get(k), str) and args[k].strip()), None)
    if detail is None and args:
        detail = json.dumps(args, ensure_ascii=False)
    if not detail:
        return f"> {name}"
    detail = " ".join(detail.split())
    if len(detail) > TOOL_DETAIL_CHARS:
        detail = detail[: TOOL_DETAIL_CHARS - 1].rstrip() + "…"
    return f"> {name}: {detail}"


class AnswerReader:
    """Turns a turn's events, in order, into the text the client receives."""

    def __init__(self, *, tool_trace: bool = False) -> None:
        self.tool_trace = tool_trace
        self._parts: list[str] = []
        self._streamed: set[str | None] = set()  # API messages whose text came as deltas
        self._current: str | None = None  # the API message being streamed
        self._segment: object = None  # what the last text belonged to
        self._stop_reason: str | None = None
        self._result: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def feed(self, event: Event) -> list[str]:
        """The text this event adds (usually none or one piece)."""
        if event.name == "error":
            obj = events.parse(event.data)
            self._error = obj if obj is not None else {"code": "internal", "message": "The turn failed"}
            return []
        kind = kind_of(event)
        if event.name is not None or kind not in _READ_KINDS:
            return []
        obj = events.parse(event.data)
        # A subagent's (Task tool's) own messages are its work, not the answer.
        if obj is None or obj.get("parent_tool_use_id"):
            return []
        if kind == "result":
            self._result = obj
            return []
        if kind == "stream_event":
            inner = obj.get("event")
            return self._stream_event(inner) if isinstance(inner, dict) else []
        message = obj.get("message")
        return self._assistant(message) if isinstance(message, dict) else []

    def _stream_event(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            found = message.get("id") if isinstance(message, dict) else None
            self._current = found if isinstance(found, str) else None
        elif kind == "message_delta":
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(stop, str):
                self._stop_reason = stop
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self._streamed.add(self._current)
                return self._emit(("message", self._current), delta["text"])
        return []

    def _assistant(self, message: dict[str, Any]) -> list[str]:
        found = message.get("id")
        message_id = found if isinstance(found, str) else None
        # Without an id, each line is a message of its own.
        segment: object = ("message", message_id) if message_id is not None else object()
        content = message.get("content")
        out: list[str] = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and message_id not in self._streamed:
                text = block.get("text")
                out += self._emit(segment, text if isinstance(text, str) else "")
            elif block.get("type") == "tool_use" and self.tool_trace:
                out += self._emit(object(), tool_line(block))
        return out

    def _emit(self, segment: object, text: str) -> list[str]:
        if not text:
            return []
        if self._parts and segment != self._segment:
            # Only as many newlines as the text so far lacks.
            so_far = self._parts[-1]
            ending = len(so_far) - len(so_far.rstrip("\n"))
            text = SEGMENT_SEPARATOR[min(ending, len(SEGMENT_SEPARATOR)) :] + text
        self._segment = segment
        self._parts.append(text)
        return [text]

    def outcome(self) -> Outcome:
        """How the turn ended, once its events are all read."""
        result = self._result or {}
        stop = result.get("stop_reason")
        stop_reason = stop if isinstance(stop, str) else self._stop_reason or "end_turn"
        error: ApiError | None = None
        if self._error is not None:
            error = failure(self._error)
        elif self._result is None:
            error = TurnError(StopCode.CLI_FAILED, "Claude Code ended without a result").api_error()
        elif result.get("is_error"):
            # The broker follows such a result with an error event saying what it means;
            # without one (a log cut short), the CLI's own words.
            said = diagnosis.result_failure(TurnResult.of(result))
            error = (said or TurnError(StopCode.CLI_ERROR, "Claude Code reported an error")).api_error()
        return Outcome(self.text, Usage.of(result.get("usage")), stop_reason, error)
