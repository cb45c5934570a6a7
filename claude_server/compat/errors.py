"""Errors in the shape of the API a client speaks, so that its SDK raises the right exception.

OpenAI: ``{"error": {"message", "type", "param", "code"}}``; Anthropic: ``{"type": "error",
"error": {"type", "message"}}``; the HTTP status is the same as the native API's. The error
middleware asks ``api_for`` which shape a request gets (None: the native one).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from claude_server.errors import ApiError


class Api(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


COMPAT_PREFIX = "/v1/"
_ANTHROPIC_PATHS = ("/v1/messages",)
_OPENAI_PATHS = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def api_for(path: str, headers: Mapping[str, str]) -> Api | None:
    """Which API a request speaks, by its path; on the paths both share (``/v1/models``, an
    unknown ``/v1/...``) by the ``anthropic-version`` header every Anthropic client sends."""
    if not path.startswith(COMPAT_PREFIX):
        return None
    if path.startswith(_ANTHROPIC_PATHS):
        return Api.ANTHROPIC
    if path.startswith(_OPENAI_PATHS):
        return Api.OPENAI
    return Api.ANTHROPIC if "anthropic-version" in headers else Api.OPENAI


def openai_error(err: ApiError) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(err.status) or ("server_error" if err.status >= 500 else "invalid_request_error")
    param = err.extra.get("field")
    return {
        "error": {
            "message": err.message,
            "type": kind,
            "param": param if isinstance(param, str) else None,
            "code": err.code,
        }
    }


def anthropic_error(err: ApiError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(err.status) or ("api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def error_body(api: Api, err: ApiError) -> dict[str, Any]:
    return openai_error(err) if api is Api.OPENAI else anthropic_error(err)
