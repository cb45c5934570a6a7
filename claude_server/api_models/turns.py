"""Turns: a turn's record, a running turn, the answer of a non-streaming turn, and the
events of a turn's stream (README, "The stream" and "Interactive sessions")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from claude_server.api_models.base import ApiModel, TurnErrorBody, TurnStatus


class LiveTurn(ApiModel):
    """A turn while the server runs it (``turn.Turn.public``)."""

    turn_id: str
    session_id: str | None
    status: TurnStatus
    queue_position: int | None = Field(description="Its place in the queue while it waits for a slot")
    detach: bool
    last_seq: int = Field(description="The seq of its latest event")
    followers: int = Field(description="Clients following its stream now")
    process_id: str | None = Field(description="The CLI process it runs in (turns of one warm CLI share it)")
    warm: bool = Field(description="Whether it runs in a CLI kept warm from an earlier turn")
    pending_requests: int = Field(description="Permission requests and questions waiting for an answer")


class TurnDetail(ApiModel):
    """A turn as recorded (``GET /api/turns/{turn_id}``); a running one also has ``followers``."""

    turn_id: str
    session_id: str | None
    status: TurnStatus
    prompt: str
    options: dict[str, Any] = Field(description="The options it ran with")
    detach: bool
    started_at: str
    finished_at: str | None
    exit_code: int | None = Field(description="Null for a turn whose CLI stayed warm")
    cost_usd: float | None = Field(description="This turn's own cost")
    session_cost_usd: float | None = Field(description="The session's running total after it, as the CLI reported")
    usage: dict[str, Any] | None
    num_turns: int | None
    model: str | None
    duration_ms: float | None
    error: TurnErrorBody | None
    last_seq: int
    process_id: str | None
    provider: str | None
    followers: int | None = Field(None, description="While it runs: clients following its stream")


class TurnAnswer(ApiModel):
    """The answer of ``POST /api/claude`` with ``"stream": false``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "turn_id": "5b0c8d2e-2f6a-4c1e-9d1f-0a1b2c3d4e5f",
                    "session_id": "efa3c8bf-1b2c-4d5e-8f90-123456789abc",
                    "result": "4",
                    "subtype": "success",
                    "is_error": False,
                    "total_cost_usd": 0.002,
                    "cost_usd": 0.002,
                    "usage": {"input_tokens": 12, "output_tokens": 3},
                    "num_turns": 1,
                    "duration_ms": 2113.0,
                }
            ]
        }
    )

    turn_id: str
    session_id: str | None
    result: str | None = Field(description="The answer's text")
    subtype: str | None
    is_error: bool
    total_cost_usd: float | None = Field(description="What the CLI reported: on a resumed session, its running total")
    cost_usd: float | None = Field(description="What this turn cost")
    usage: dict[str, Any] | None
    num_turns: int | None
    duration_ms: float | None


# ---- the events of a stream ---------------------------------------------------------------


class CliLine(BaseModel):
    """One JSON line the CLI printed, byte for byte (never re-serialised). Its ``type`` is
    ``system`` (``subtype: init`` first, with the ``session_id``), ``assistant``, ``user``,
    ``stream_event`` (token deltas, with ``include_partial_messages``), ``result`` (the
    last: cost, usage, ``is_error``), or any type a newer CLI adds."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"type": "result", "subtype": "success", "is_error": False, "result": "Done.", "total_cost_usd": 0.0123}
            ]
        },
    )

    type: str
    subtype: str | None = None
    session_id: str | None = None


class ErrorEvent(ApiModel):
    """``event: error``: the turn failed; the stream ends after it. Part of the log (it has an id)."""

    type: Literal["error"]
    code: str
    message: str
    exit_code: int | None = None
    stderr_tail: str | None = None
    retry_after: int | None = None


class QueuedEvent(ApiModel):
    """``event: queued``: the turn waits for a slot (or for the turn before it on its session);
    sent again whenever its place changes. Not part of the log (no id)."""

    type: Literal["queued"]
    position: int


class PermissionRequest(ApiModel):
    """``event: permission_request``: a tool use waits for the client's answer
    (``POST /api/turns/{turn_id}/permissions/{request_id}``)."""

    type: Literal["permission_request"]
    request_id: str
    tool_name: str
    input: dict[str, Any]
    description: str | None
    suggestions: list[Any] = Field(description="The CLI's suggestions for remembering the answer")
    asked_at: float = Field(description="Unix time")
    tool_use_id: str | None = None
    blocked_path: str | None = None
    display_name: str | None = None


class Question(ApiModel):
    """``event: question``: Claude asks the user (``POST /api/turns/{turn_id}/questions/{request_id}``)."""

    type: Literal["question"]
    request_id: str
    questions: list[Any] = Field(description="Each with its question text, options and multiSelect")
    asked_at: float


class PermissionResolved(ApiModel):
    """``event: permission_resolved``: how a permission request was answered, and by whom."""

    type: Literal["permission_resolved"]
    request_id: str
    behavior: Literal["allow", "deny"]
    by: str = Field(description="The key's name, 'anonymous', 'timeout' or 'claude'")
    message: str | None = None
    remember: bool | None = None


class QuestionResolved(ApiModel):
    """``event: question_resolved``: how a question was answered."""

    type: Literal["question_resolved"]
    request_id: str
    behavior: Literal["allow", "deny"]
    by: str
    message: str | None = None
    answers: dict[str, Any] | None = None


class PermissionList(ApiModel):
    permissions: list[PermissionRequest]


class QuestionList(ApiModel):
    questions: list[Question]


class AnswerReceipt(ApiModel):
    request_id: str
    behavior: Literal["allow", "deny", "answer"]
    by: str
