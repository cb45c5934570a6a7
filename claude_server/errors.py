"""The one error shape of the native API, and the middleware that renders it.

Every error answer outside the OpenAI/Anthropic compatibility routes is::

    {"error": {"code": "session_not_found", "message": "No session 1a2b... (it may have been deleted)"}}

with the matching HTTP status. Extra keys (``field``, ``stderr_tail``, ...) may sit beside
``code`` and ``message``. Code at any layer raises an ``ApiError``;
``middleware.error_middleware`` is the only place that turns one into a response. Anything
unexpected is logged with its traceback and answered as 500 ``internal``, without the
traceback. This module does not import aiohttp, so the broker can raise these too.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "body_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


class TooManyRequests(ApiError):
    """429, with the seconds to wait in ``Retry-After`` and in the body."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None, **extra: Any) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)}, retry_after=seconds, **extra)
