"""What the store hands out: typed rows, read from the database by column name, and the
helpers for timestamps and list cursors.

Timestamps are ISO 8601 strings in UTC with millisecond precision and a ``Z``, so they sort
as text.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from claude_server.store.database import Row

# A session's default title: its first prompt, shortened.
TITLE_CHARS = 80


def now_iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def default_title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any] | None:
    """The values of a cursor made by ``encode_cursor``; None when it is not one (also when
    it decodes to text no database row can hold, such as a lone surrogate)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        json.dumps(values, ensure_ascii=False).encode()
    except (ValueError, TypeError, binascii.Error, UnicodeError, RecursionError):
        return None
    if not isinstance(values, list) or len(values) != arity:
        return None
    return values


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    workspace_path: str
    workspace_name: str
    created_at: str
    last_used_at: str
    forked_from: str | None
    title: str | None
    first_prompt: str
    metadata: dict[str, Any] | None
    conversation_id: str | None
    owner: str | None
    turn_count: int
    total_cost_usd: float
    last_turn_status: str | None
    provider_id: str | None = None

    @classmethod
    def of(cls, row: Row) -> SessionRow:
        return cls(
            session_id=row["session_id"],
            workspace_path=row["workspace_path"],
            workspace_name=row["workspace_name"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            forked_from=row["forked_from"],
            title=row["title"],
            first_prompt=row["first_prompt"],
            metadata=loads(row["metadata"]),
            conversation_id=row["conversation_id"],
            owner=row["owner"],
            turn_count=row["turn_count"],
            total_cost_usd=row["total_cost_usd"],
            last_turn_status=row["last_turn_status"],
            provider_id=row["provider_id"],
        )

    def summary(self) -> dict[str, Any]:
        """The fields of a session in lists."""
        return {
            "session_id": self.session_id,
            "title": self.title if self.title is not None else default_title(self.first_prompt),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "turn_count": self.turn_count,
            "total_cost_usd": self.total_cost_usd,
            "last_turn_status": self.last_turn_status,
            "workspace": self.workspace_name,
            "conversation_id": self.conversation_id,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "workspace_path": self.workspace_path,
            "forked_from": self.forked_from,
            "metadata": self.metadata if self.metadata is not None else {},
            "provider": self.provider_id,
        }


SESSION_COLUMNS = (
    "s.session_id, s.workspace_path, s.workspace_name, s.created_at, s.last_used_at, s.forked_from, s.title, "
    "s.first_prompt, s.metadata, s.conversation_id, s.owner, s.provider_id, "
    "(SELECT count(*) FROM turns t WHERE t.session_id = s.session_id) AS turn_count, "
    "(SELECT coalesce(sum(t.cost_usd), 0) FROM turns t WHERE t.session_id = s.session_id) AS total_cost_usd, "
    "(SELECT t.status FROM turns t WHERE t.session_id = s.session_id ORDER BY t.started_at DESC LIMIT 1) "
    "AS last_turn_status"
)


@dataclass(frozen=True)
class TurnRow:
    turn_id: str
    session_id: str | None
    resumed_from: str | None
    status: str
    prompt: str
    options: dict[str, Any]
    workspace_path: str
    detach: bool
    owner: str | None
    started_at: str
    finished_at: str | None
    exit_code: int | None
    cost_usd: float | None
    session_cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None
    error: dict[str, Any] | None
    last_seq: int
    model: str | None
    duration_ms: float | None
    server_id: str | None
    process_id: str | None
    provider_id: str | None = None

    @classmethod
    def of(cls, row: Row) -> TurnRow:
        return cls(
            turn_id=row["turn_id"],
            session_id=row["session_id"],
            resumed_from=row["resumed_from"],
            status=row["status"],
            prompt=row["prompt"],
            options=loads(row["options"]),
            workspace_path=row["workspace_path"],
            detach=bool(row["detach"]),
            owner=row["owner"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            exit_code=row["exit_code"],
            cost_usd=row["cost_usd"],
            session_cost_usd=row["session_cost_usd"],
            usage=loads(row["usage"]),
            num_turns=row["num_turns"],
            error=loads(row["error"]),
            last_seq=row["last_seq"],
            model=row["model"],
            duration_ms=row["duration_ms"],
            server_id=row["server_id"],
            process_id=row["process_id"],
            provider_id=row["provider_id"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "session_id": self.session_id,
            "status": self.status,
            "prompt": self.prompt,
            "options": self.options,
            "detach": self.detach,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "cost_usd": self.cost_usd,
            "session_cost_usd": self.session_cost_usd,
            "usage": self.usage,
            "num_turns": self.num_turns,
            "model": self.model,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "last_seq": self.last_seq,
            "process_id": self.process_id,
            "provider": self.provider_id,
        }


TURN_COLUMNS = (
    "turn_id, session_id, resumed_from, status, prompt, options, workspace_path, detach, owner, started_at, "
    "finished_at, exit_code, cost_usd, session_cost_usd, usage, num_turns, error, last_seq, model, duration_ms, "
    "server_id, process_id, provider_id"
)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    name: str | None
    data: bytes


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    name: str
    admin: bool
    daily_budget_usd: float | None
    created_at: str
    revoked_at: str | None

    @classmethod
    def of(cls, row: Row) -> KeyRow:
        return cls(
            key_id=row["key_id"],
            name=row["name"],
            admin=bool(row["admin"]),
            daily_budget_usd=row["daily_budget_usd"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "admin": self.admin,
            "daily_budget_usd": self.daily_budget_usd,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


KEY_COLUMNS = "key_id, name, admin, daily_budget_usd, created_at, revoked_at"
