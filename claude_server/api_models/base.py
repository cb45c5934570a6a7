"""The base of every answer model, and the error shapes: the native one
(``claude_server.errors``) and those of the OpenAI- and Anthropic-compatible routes
(``claude_server.compat.errors``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TurnStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


class ApiModel(BaseModel):
    """An answer's shape: exactly these keys."""

    model_config = ConfigDict(extra="forbid")


class TurnErrorBody(ApiModel):
    """Why a turn did not succeed (``outcome.TurnError``)."""

    code: str = Field(description="A stable code: see the README's table of turn errors")
    message: str
    exit_code: int | None = Field(None, description="The CLI's exit status, when it exited")
    stderr_tail: str | None = Field(None, description="The end of what the CLI printed on stderr")
    retry_after: int | None = Field(None, description="Seconds to wait before trying again (queue_timeout)")


class ErrorDetail(BaseModel):
    """``code`` and ``message`` always; some errors carry more keys beside them."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"code": "session_not_found", "message": "No session 1a2b (it may have been deleted)"}]
        },
    )

    code: str = Field(description="Stable and machine-readable: session_not_found, invalid_field, unauthorized, ...")
    message: str = Field(description="A sentence for people")
    field: str | None = Field(None, description="The offending field or parameter of a 400")
    retry_after: int | None = Field(None, description="Seconds to wait (429, with the Retry-After header)")
    turn_id: str | None = Field(None, description="The turn a failed non-streaming request ran")
    exit_code: int | None = None
    stderr_tail: str | None = None
    etag: str | None = Field(None, description="The current ETag, on a 412 precondition_failed")
    result: dict[str, Any] | None = Field(None, description="The CLI's result, when a failed turn printed one")


class ErrorResponse(ApiModel):
    """Every error outside the OpenAI- and Anthropic-compatible routes."""

    error: ErrorDetail


class OpenAIErrorDetail(ApiModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, ...")
    param: str | None
    code: str | None


class OpenAIErrorResponse(ApiModel):
    """Errors of the OpenAI-compatible routes, as the OpenAI SDKs read them."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(ApiModel):
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, ...")
    message: str


class AnthropicErrorResponse(ApiModel):
    """Errors of the Anthropic-compatible route, as the Anthropic SDKs read them."""

    type: Literal["error"]
    error: AnthropicErrorDetail
