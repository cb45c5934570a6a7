"""The query parameters of the routes that take some, for the document. The handlers read
them themselves (``routes.common.int_param`` and friends), with the bounds given here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

LIMIT = "Page size"
CURSOR = "The next_cursor of the previous page"
ALL = "Admin keys: every key's, not only their own"


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=500, description=LIMIT)
    cursor: str | None = Field(None, description=CURSOR)


class SessionsQuery(PageQuery):
    q: str | None = Field(None, max_length=1000, description="Case-insensitive, in the title or the first prompt")
    conversation_id: str | None = Field(None, description="Only the session bound to this conversation id")
    all: bool = Field(False, description=ALL)


class AllQuery(BaseModel):
    all: bool = Field(False, description=ALL)


class MessagesQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100, description="Turns per page")
    cursor: str | None = Field(None, description=CURSOR)
    all: bool = Field(False, description=ALL)


class EventsQuery(BaseModel):
    after: int = Field(0, ge=0, description="Replay the events after this seq (the Last-Event-ID header wins)")
    all: bool = Field(False, description=ALL)


class FilesQuery(BaseModel):
    path: str = Field("", description="A folder of the workspace, relative to it; empty: its root")
    all: bool = Field(False, description=ALL)


class TasksQuery(PageQuery):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"] | None = None
    priority: int | None = Field(None, ge=1, le=10)
    session_id: str | None = None
    batch_id: str | None = None
    since: str | None = Field(None, description="ISO 8601: created at or after")
    all: bool = Field(False, description=ALL)


class StatsQuery(BaseModel):
    from_: str | None = Field(None, alias="from", description="ISO 8601 date or date-time, in any time zone")
    to: str | None = Field(None, description="ISO 8601; a date includes that day")
    group_by: Literal["day", "model", "key", "provider"] = "day"
