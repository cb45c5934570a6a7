"""Helpers shared by the route modules: reading a JSON body, turning validation errors
into one clear 400, reading ``?limit=`` and ``?cursor=``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from claude_server.errors import BadRequest, UnsupportedMediaType
from claude_server.store import decode_cursor


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or 415 (not JSON) / 400 (malformed) / 413 (too large)."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Send the request body as JSON with Content-Type: application/json (got {ctype or 'none'!r})"
        )
    raw = await request.read()  # raises 413 past client_max_size
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object", code="invalid_json")
    try:
        # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 text (a prompt
        # on stdin, an argument, a database row) can hold.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest(
            "The body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not valid Unicode",
            code="invalid_json",
        ) from None
    return body


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "is required",
}


def validation_error(exc: ValidationError) -> BadRequest:
    """One 400 naming every bad field; the first one also goes in ``field``."""
    problems = []
    fields = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        msg = _MESSAGES.get(err["type"], err["msg"])
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        fields.append(field)
        problems.append(f"{field}: {msg}")
    return BadRequest("; ".join(problems), code="invalid_field", field=fields[0] if fields else None)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code="invalid_parameter", field=name) from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}", code="invalid_parameter", field=name)
    return value


def cursor_param(request: web.Request, arity: int) -> list[Any] | None:
    raw = request.query.get("cursor")
    if raw is None or raw == "":
        return None
    values = decode_cursor(raw, arity)
    if values is None or not all(isinstance(v, str) or v is None for v in values):
        raise BadRequest("cursor is not one this server gave out", code="invalid_parameter", field="cursor")
    return values
