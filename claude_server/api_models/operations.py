"""What operators read: health, stats, providers, reloads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from claude_server.api_models.base import ApiModel
from claude_server.api_models.replicas import ReplicaInfo


class CliInfo(ApiModel):
    found: bool
    version: str | None
    path: str | None
    error: str | None
    tested_version: str
    warning: str | None


class CredentialsInfo(ApiModel):
    found: bool
    source: str


class DatabaseInfo(ApiModel):
    ok: bool
    backend: Literal["sqlite", "postgres"]


class WarmPoolInfo(ApiModel):
    enabled: bool
    size: int
    max: int
    idle_timeout_s: float
    hits: int
    misses: int
    evictions: int
    expired: int


class TaskCounts(ApiModel):
    queued: int
    running: int


class Health(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "problems": [],
                    "warnings": [],
                    "version": "0.1.0",
                    "cli": {
                        "found": True,
                        "version": "2.1.330 (Claude Code)",
                        "path": "/srv/claude-server/node_modules/.bin/claude",
                        "error": None,
                        "tested_version": "2.1.330",
                        "warning": None,
                    },
                    "credentials": {"found": True, "source": "ANTHROPIC_API_KEY"},
                    "database": {"ok": True, "backend": "sqlite"},
                    "replica": {
                        "id": "host-a:3000",
                        "server_id": "host-a:4121:1f2e3d4c",
                        "advertise_url": "http://host-a:3000",
                    },
                    "running_turns": 1,
                    "max_concurrent": 4,
                    "queue_length": 0,
                    "max_queue": 100,
                    "warm": {
                        "enabled": True,
                        "size": 2,
                        "max": 8,
                        "idle_timeout_s": 300.0,
                        "hits": 10,
                        "misses": 3,
                        "evictions": 0,
                        "expired": 1,
                    },
                    "tasks": {"queued": 0, "running": 0},
                }
            ]
        }
    )

    status: Literal["ok", "degraded"]
    problems: list[str] = Field(description="Why turns cannot run or nothing can be recorded")
    warnings: list[str]
    version: str
    cli: CliInfo
    credentials: CredentialsInfo | None
    database: DatabaseInfo
    replica: ReplicaInfo
    running_turns: int
    max_concurrent: int
    queue_length: int
    max_queue: int
    warm: WarmPoolInfo
    tasks: TaskCounts


class StatsTotal(ApiModel):
    turns: int
    successes: int
    failures: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    mean_duration_ms: float | None


class StatsGroup(StatsTotal):
    group: str | None = Field(description="The day, model, key name or provider")


class Stats(ApiModel):
    group_by: Literal["day", "model", "key", "provider"]
    from_: str | None = Field(alias="from", description="The lower bound used (UTC), null for none")
    to: str | None = Field(description="The upper bound used (UTC, exclusive), null for none")
    groups: list[StatsGroup]
    total: StatsTotal


class Provider(ApiModel):
    """A provider's public settings (never a secret) and its health."""

    id: str
    name: str
    weight: int
    enabled: bool
    base_url: str | None
    key_hint: str | None = Field(description="The last 4 characters of its key")
    max_retries: int
    env_names: list[str]
    healthy: bool
    state: Literal["healthy", "unhealthy", "half_open", "disabled"]
    consecutive_failures: int
    failures_total: int
    turns_total: int
    last_error: str | None
    last_error_at: str | None
    unhealthy_until: str | None


class ProviderListed(Provider):
    bound_sessions: int
    turns_today: int
    cost_today_usd: float


class ProviderList(ApiModel):
    """Without a providers file: ``{"configured": false, "providers": []}``."""

    configured: bool
    strategy: Literal["weighted", "round_robin"] | None = None
    failover: bool | None = None
    failure_threshold: int | None = None
    recovery_timeout_s: float | None = None
    providers: list[ProviderListed]


class ProviderChanges(ApiModel):
    added: list[str]
    removed: list[str]
    changed: list[str]


class SettingsChanges(ApiModel):
    changed: dict[str, dict[str, Any]] = Field(description='Each changed setting: {"from": ..., "to": ...}')
    needs_restart: list[str]


class ReloadResult(ApiModel):
    providers: ProviderChanges | None
    settings: SettingsChanges
