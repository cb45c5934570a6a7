"""Sessions: lists, one session, its recorded history."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from claude_server.api_models.base import ApiModel, TurnErrorBody, TurnStatus
from claude_server.api_models.turns import LiveTurn


class SessionSummary(ApiModel):
    """A session in lists (``store.SessionRow.summary``)."""

    session_id: str
    title: str = Field(description="Its own title, or its first prompt shortened")
    created_at: str
    last_used_at: str
    turn_count: int
    total_cost_usd: float
    last_turn_status: TurnStatus | None
    workspace: str = Field(description="The workspace's name")
    conversation_id: str | None


class SessionDetail(SessionSummary):
    workspace_path: str
    forked_from: str | None
    metadata: dict[str, Any]
    provider: str | None
    running_turn: LiveTurn | None


class SessionList(ApiModel):
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class RecordedTurn(ApiModel):
    turn_id: str
    status: TurnStatus
    started_at: str
    finished_at: str | None
    cost_usd: float | None
    error: TurnErrorBody | None
    prompt: str
    events: list[dict[str, Any]] = Field(description="Every event of the turn's log, as its stream sent them")


class SessionMessages(ApiModel):
    session_id: str
    turns: list[RecordedTurn]
    next_cursor: str | None
