"""What a route handler declares about itself for the OpenAPI document: ``@doc(...)``.

The declaration sits beside the route and changes nothing about how it runs: ``doc``
attaches a ``Doc`` to the handler and returns the handler itself. ``openapi.build`` walks the
app's route table and reads it. Models are pydantic models; the other shapes are the small
dataclasses below. No aiohttp here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

# Who may call a route: any key (or anyone, on a server without keys), admin keys only,
# nobody needs one, or no key unless the operator asks for one (/health).
Auth = Literal["key", "admin", "none", "optional"]
# Which error shape a route answers with: the native one, or the compatible API's.
ErrorShape = Literal["native", "openai", "anthropic"]

ATTRIBUTE = "__openapi_doc__"


@dataclass(frozen=True)
class Raw:
    """A body that is not JSON described by a model: a file, an archive, Prometheus text."""

    media_types: tuple[str, ...]
    description: str
    # JSON Schema of the body; default: any bytes.
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string", "format": "binary"})


@dataclass(frozen=True)
class Empty:
    """An answer without a body (204, 304)."""

    description: str


@dataclass(frozen=True)
class Json:
    """A JSON answer of ``model``, with what it means and an example."""

    model: type[BaseModel]
    description: str = ""
    example: Any = None


@dataclass(frozen=True)
class ByPath:
    """An answer whose model depends on a fixed part of the path (``/api/config/agents`` lists
    ``agents``, ``/api/config/rules`` lists ``rules``): the path parameter's value -> model."""

    param: str
    models: Mapping[str, type[BaseModel]]
    description: str = ""


@dataclass(frozen=True)
class SseEvent:
    """One kind of event in a stream: its ``event:`` name (None: a plain ``data:`` event), the
    model of its ``data``, and whether it carries an ``id:`` (part of the replayable log)."""

    name: str | None
    model: type[BaseModel]
    description: str
    has_id: bool = False


@dataclass(frozen=True)
class Sse:
    """A ``text/event-stream`` answer and the events it sends."""

    description: str
    events: tuple[SseEvent, ...]
    example: str | None = None


@dataclass(frozen=True)
class Param:
    """A query or header parameter not described by a model."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


Response = type[BaseModel] | Json | Raw | Empty | ByPath | Sse


@dataclass(frozen=True)
class Doc:
    summary: str
    tags: tuple[str, ...]
    description: str | None
    request: tuple[type[BaseModel] | Raw, ...]
    request_example: Any
    query: type[BaseModel] | None
    headers: tuple[Param, ...]
    responses: Mapping[int, Response | tuple[Response, ...]]
    errors: Mapping[int, str]
    response_headers: Mapping[str, str]
    auth: Auth
    error_shape: ErrorShape
    operation_id: str | None


Handler = TypeVar("Handler", bound=Callable[..., Any])


def doc(
    summary: str,
    *,
    tags: Sequence[str],
    responses: Mapping[int, Response | tuple[Response, ...]],
    description: str | None = None,
    request: type[BaseModel] | Raw | Sequence[type[BaseModel] | Raw] | None = None,
    request_example: Any = None,
    query: type[BaseModel] | None = None,
    headers: Sequence[Param] = (),
    errors: Mapping[int, str] | None = None,
    response_headers: Mapping[str, str] | None = None,
    auth: Auth = "key",
    error_shape: ErrorShape = "native",
    operation_id: str | None = None,
) -> Callable[[Handler], Handler]:
    """Describe a handler for the OpenAPI document. ``responses`` maps a status to what it
    answers (a tuple: alternatives, such as a stream or one JSON body); ``errors`` maps the
    error statuses the route gives to what they mean (each answered in ``error_shape``).
    ``description`` defaults to the handler's docstring."""
    if request is None:
        bodies: tuple[type[BaseModel] | Raw, ...] = ()
    elif isinstance(request, Raw | type):
        bodies = (request,)
    else:
        bodies = tuple(request)
    described = Doc(
        summary=summary,
        tags=tuple(tags),
        description=description,
        request=bodies,
        request_example=request_example,
        query=query,
        headers=tuple(headers),
        responses=dict(responses),
        errors=dict(errors or {}),
        response_headers=dict(response_headers or {}),
        auth=auth,
        error_shape=error_shape,
        operation_id=operation_id,
    )

    def attach(handler: Handler) -> Handler:
        setattr(handler, ATTRIBUTE, described)
        return handler

    return attach


def described(handler: Any) -> Doc | None:
    """The ``Doc`` a handler carries, or None."""
    found = getattr(handler, ATTRIBUTE, None)
    return found if isinstance(found, Doc) else None
