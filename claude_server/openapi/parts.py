"""The fixed parts of the document (its info, the auth schemes, tags, the webhook) and the
pieces every operation is made of (parameters, the errors every route of a kind can give)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from claude_server.openapi.describe import Doc, Param, Raw

INFO: dict[str, Any] = {
    "title": "claude-server",
    "summary": "The Claude Code CLI as an HTTP service",
    "description": (
        "Runs Claude Code turns in per-session workspaces and streams every line the CLI prints as "
        'Server-Sent Events. Errors are JSON `{"error": {"code", "message", ...}}` with the matching '
        "status (the OpenAI- and Anthropic-compatible routes answer in their API's own shape). With API keys "
        "configured every route but the open ones needs `Authorization: Bearer <key>` or `x-api-key: <key>`; "
        "a server without keys is open. Every answer carries `X-Request-Id`. This document is generated from "
        "the server's route table and models."
    ),
    "license": {"name": "MIT", "identifier": "MIT"},
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer <key>` (operator keys or `claude-server keys create`)",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The same API key as `x-api-key: <key>` (what Anthropic clients send)",
    },
}
# Either scheme will do.
KEYED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]

TAGS = {
    "turns": "Run a turn and follow its stream",
    "sessions": "Sessions, their history, interrupting them",
    "interactive": "Tool approvals and Claude's questions during a turn",
    "tasks": "Background tasks, batches and webhooks",
    "files": "A session's workspace files",
    "configuration": "The Claude configuration directory the server manages (admin keys)",
    "providers": "Providers and reloading the configuration (admin keys)",
    "operations": "Health, metrics and stats",
    "openai": "The OpenAI-compatible API",
    "anthropic": "The Anthropic-compatible API",
    "docs": "This document",
    "keys": "API keys (admin keys)",
    "web app": "The built-in web app and these docs (no key needed)",
}

PATH_PARAMETERS = {
    "session_id": "A session's id (the `session_id` of its `init` event)",
    "turn_id": "A turn's id (the `X-Turn-Id` header of its answer)",
    "task_id": "A task's id",
    "batch_id": "A batch's id",
    "request_id": "The `request_id` of a `permission_request` or `question` event",
    "provider_id": "A provider's id from the providers file",
    "name": "A name matching `^[a-z0-9][a-z0-9_-]{0,63}$`",
    "path": "A relative path; it may hold `/`",
    "model": "A model id of GET /v1/models (`claude-code`, `claude-code-opus`, ...)",
    "filename": "A file's name; it may hold `/`",
    "key": "An API key's id (`key_...`) or name",
    "tail": "A web app file's hashed name, as the pages name it (`app.3f2a9c1b0d.js`)",
}


def tags(used: Iterable[str]) -> list[dict[str, str]]:
    return [{"name": t, "description": TAGS[t]} if t in TAGS else {"name": t} for t in used]


def path_parameter(name: str, regex: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if regex in (".+", ".*"):
        schema["minLength"] = 0 if regex == ".*" else 1
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": PATH_PARAMETERS.get(name, f"The {name.replace('_', ' ')}"),
        "schema": schema,
    }


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | None`` as a query parameter is an optional ``T``."""
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return schema


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One parameter per field of ``model`` (by its alias)."""
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        # No default of null: as a parameter, it is simply left out.
        prop = _without_null({k: v for k, v in prop.items() if k != "title" and (k, v) != ("default", None)})
        description = prop.pop("description", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def header_parameter(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": "header",
        "required": p.required,
        "description": p.description,
        "schema": dict(p.schema),
    }


def error_statuses(d: Doc) -> dict[int, str]:
    """The errors a route declares, and those any route of its kind gives."""
    out = dict(d.errors)
    if d.auth in ("key", "admin"):
        out.setdefault(401, "No API key, or one that is not valid (only when the server has keys)")
    if d.auth == "optional":
        out.setdefault(401, "No API key, or one that is not valid (only with CLAUDE_SERVER_HEALTH_AUTH)")
    if d.auth == "admin":
        out.setdefault(403, "Not an admin key (admin_only)")
    if any(not isinstance(body, Raw) for body in d.request):
        out.setdefault(400, "The body is not valid JSON, is nested too deep, or a field is wrong (`field` names it)")
        out.setdefault(413, "The body is too large")
        out.setdefault(415, "The body is not sent as application/json")
    return out


def webhook(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "A task ended",
            "description": (
                "POSTed to a task's `webhook_url` when it ends, with `X-Claude-Server-Event: task.finished`, "
                "`X-Claude-Server-Delivery`, `X-Claude-Server-Timestamp` and, with a secret, "
                '`X-Claude-Server-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. Any answer but '
                "2xx is retried."
            ),
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"2XX": {"description": "Delivered"}},
        }
    }


# What the OpenAI- and Anthropic-compatible turn routes share: the headers that steer the
# session, the errors of a turn, and the headers of the answer.
COMPAT_HEADERS = (
    Param("X-Claude-Session-Id", "Resume this session"),
    Param("X-Conversation-Id", "Your own key for the conversation: binds a session, resumes it later"),
    Param("X-Claude-Agent", "Run the session as this agent"),
    Param("X-Claude-Mcp-Servers", "Configured MCP servers to start, comma-separated"),
)
COMPAT_ERRORS = {
    400: "A field is wrong, or tools were given (tools_not_supported)",
    404: "No such model, or session",
    409: "A turn runs on the session",
    429: "Rate limit, budget or queue",
    502: "The CLI failed",
    503: "The CLI is not installed, or the server is shutting down",
    504: "The turn ran too long",
}
COMPAT_RESPONSE_HEADERS = {"X-Turn-Id": "The turn's id", "X-Claude-Session-Id": "The session, to resume it"}
