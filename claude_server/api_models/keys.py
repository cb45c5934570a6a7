"""The answers of /api/keys."""

from __future__ import annotations

from pydantic import Field

from claude_server.api_models.base import ApiModel


class ApiKey(ApiModel):
    """A key of the database, never its secret (only a SHA-256 of it is kept)."""

    key_id: str
    name: str
    admin: bool
    daily_budget_usd: float | None = Field(description="None: the server's default (CLAUDE_SERVER_DAILY_BUDGET_USD)")
    created_at: str
    revoked_at: str | None


class ApiKeyList(ApiModel):
    keys: list[ApiKey]


class CreatedApiKey(ApiKey):
    secret: str = Field(description="The key to send (`csk_...`): in this answer only, it cannot be shown again")
