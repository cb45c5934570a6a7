"""The OpenAPI 3.1 document of an app, generated from its route table.

Every route's handler carries a ``Doc`` (``@doc``, in ``describe``); this walks
``app.router.routes()``, takes each resource's paths from ``paths``, and turns the models
the docs name into ``components/schemas`` with pydantic's JSON Schema (draft 2020-12, the
dialect of OpenAPI 3.1). A route without a ``Doc`` is an error: the document covers every
route or none.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel
from pydantic.json_schema import models_json_schema

from claude_server import __version__
from claude_server.api_models.base import AnthropicErrorResponse, ErrorResponse, OpenAIErrorResponse
from claude_server.api_models.tasks import TaskFinished
from claude_server.openapi import parts
from claude_server.openapi.describe import ByPath, Doc, Empty, Json, Raw, Response, Sse, described
from claude_server.openapi.paths import Path, paths_of

REF = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"
# Methods aiohttp (HEAD for every GET) and aiohttp_cors (preflights) add by themselves.
IMPLICIT_METHODS = ("HEAD", "OPTIONS")
ERROR_MODELS: dict[str, type[BaseModel]] = {
    "native": ErrorResponse,
    "openai": OpenAIErrorResponse,
    "anthropic": AnthropicErrorResponse,
}
STATIC_DOC = Doc(
    summary="A bundled file",
    tags=("web app",),
    description="A file of a bundled static folder.",
    request=(),
    request_example=None,
    query=None,
    headers=(),
    responses={200: Raw(("application/octet-stream",), "The file")},
    errors={404: "No such file"},
    response_headers={},
    auth="none",
    error_shape="native",
    operation_id="static_file",
)


class DocumentError(Exception):
    """The route table cannot be described: a route without ``@doc``, or two operations with one id."""


def _doc_of(route: web.AbstractRoute) -> Doc:
    found = described(route.handler)
    if found is not None:
        return found
    if isinstance(route.resource, web.StaticResource):
        return STATIC_DOC
    name = getattr(route.handler, "__qualname__", repr(route.handler))
    canonical = route.resource.canonical if route.resource is not None else "?"
    raise DocumentError(f"{route.method} {canonical}: its handler {name} has no @doc(...) for the OpenAPI document")


def _alternatives(spec: Response | tuple[Response, ...]) -> tuple[Response, ...]:
    return spec if isinstance(spec, tuple) else (spec,)


def _models(docs: Iterable[Doc]) -> list[type[BaseModel]]:
    """Every model the docs name, each once, in a stable order."""
    found: dict[type[BaseModel], None] = dict.fromkeys([*ERROR_MODELS.values(), TaskFinished])
    for d in docs:
        for body in d.request:
            if not isinstance(body, Raw):
                found[body] = None
        for spec in d.responses.values():
            for alt in _alternatives(spec):
                if isinstance(alt, type):
                    found[alt] = None
                elif isinstance(alt, Json):
                    found[alt.model] = None
                elif isinstance(alt, ByPath):
                    found.update(dict.fromkeys(alt.models.values()))
                elif isinstance(alt, Sse):
                    found.update(dict.fromkeys(e.model for e in alt.events))
    return list(found)


class Builder:
    def __init__(self, models: list[type[BaseModel]]) -> None:
        refs, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
        self.refs = {model: refs[(model, "validation")] for model in models}
        self.schemas: dict[str, Any] = top.get("$defs", {})
        for model in models:
            self._other_names(model)

    def _other_names(self, model: type[BaseModel]) -> None:
        """JSON Schema gives a field only the first of its accepted names (``AliasChoices``):
        the others (``allowed_tools`` beside ``allowedTools``) are added, or a validator
        would refuse bodies the server takes."""
        schema = self.schemas.get(self.refs[model]["$ref"].rsplit("/", 1)[-1], {})
        properties = schema.get("properties", {})
        for info in model.model_fields.values():
            if not isinstance(info.validation_alias, AliasChoices):
                continue
            names = [c for c in info.validation_alias.choices if isinstance(c, str)]
            if names and names[0] in properties:
                for other in names[1:]:
                    properties.setdefault(other, {**properties[names[0]], "description": f"The same as {names[0]}"})

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self.refs[model])

    # ---- one operation ------------------------------------------------------------------

    def operation(self, route: web.AbstractRoute, d: Doc, path: Path) -> dict[str, Any]:
        op: dict[str, Any] = {
            "operationId": operation_id(route, d, path),
            "summary": d.summary,
            "tags": list(d.tags),
        }
        description = d.description or inspect.getdoc(route.handler)
        if d.auth == "admin":
            description = ((description or "") + "\n\nAdmin keys only, when the server has keys.").strip()
        if description:
            op["description"] = description
        parameters = [parts.path_parameter(name, regex) for name, regex in path.patterns]
        if d.query is not None:
            parameters += parts.query_parameters(d.query)
        parameters += [parts.header_parameter(p) for p in d.headers]
        if parameters:
            op["parameters"] = parameters
        if d.request:
            op["requestBody"] = self.request_body(d)
        op["responses"] = self.responses(d, path)
        if d.auth == "none":
            op["security"] = []
        elif d.auth == "optional":
            op["security"] = [{}, *parts.KEYED]
        return op

    def request_body(self, d: Doc) -> dict[str, Any]:
        content: dict[str, Any] = {}
        for body in d.request:
            if isinstance(body, Raw):
                content.update({media: {"schema": dict(body.schema)} for media in body.media_types})
            else:
                content["application/json"] = {"schema": self.ref(body)}
                if d.request_example is not None:
                    content["application/json"]["example"] = d.request_example
        return {"required": True, "content": content}

    def responses(self, d: Doc, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for status, spec in d.responses.items():
            descriptions: list[str] = []
            content: dict[str, Any] = {}
            for alt in _alternatives(spec):
                text, media = self.answer(alt, path)
                descriptions.append(text)
                content.update(media)
            answer: dict[str, Any] = {"description": " Or: ".join(t for t in descriptions if t) or "OK"}
            if content:
                answer["content"] = content
            if d.response_headers and 200 <= status < 300:
                answer["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in d.response_headers.items()
                }
            out[str(status)] = answer
        for status, text in sorted(parts.error_statuses(d).items()):
            out.setdefault(str(status), self.error(d, text, status))
        out["default"] = self.error(d, "Any other error (500 internal: a bug of the server's, logged)", 500)
        return out

    def answer(self, alt: Response, path: Path) -> tuple[str, dict[str, Any]]:
        if isinstance(alt, type):
            alt = Json(alt)
        if isinstance(alt, ByPath):
            word = dict(path.fixed)[alt.param]
            alt = Json(alt.models[word], alt.description)
        if isinstance(alt, Json):
            media: dict[str, Any] = {"schema": self.ref(alt.model)}
            if alt.example is not None:
                media["example"] = alt.example
            return alt.description or summary_of(alt.model), {"application/json": media}
        if isinstance(alt, Raw):
            return alt.description, {m: {"schema": dict(alt.schema)} for m in alt.media_types}
        if isinstance(alt, Empty):
            return alt.description, {}
        return self.stream(alt)

    def stream(self, sse: Sse) -> tuple[str, dict[str, Any]]:
        lines = [sse.description, "", "Events (`event:` name, then the JSON in `data:`):"]
        events = []
        for ev in sse.events:
            ref = self.ref(ev.model)
            name = ev.name or "(none: a plain data event)"
            lines.append(
                f"- `{name}`{' with an id' if ev.has_id else ''}: {ref['$ref'].rsplit('/', 1)[-1]}. {ev.description}"
            )
            events.append({"event": ev.name, "id": ev.has_id, "data": ref, "description": ev.description})
        media: dict[str, Any] = {
            "schema": {"type": "string", "description": "A stream of Server-Sent Events"},
            "x-sse-events": events,
        }
        if sse.example is not None:
            media["example"] = sse.example
        return "\n".join(lines), {"text/event-stream": media}

    def error(self, d: Doc, text: str, status: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": self.ref(ERROR_MODELS[d.error_shape])}},
        }
        if status == 429:
            answer["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        return answer


def summary_of(model: type[BaseModel]) -> str:
    """The first paragraph of the model's own docstring (not one it inherits), else its name."""
    own = model.__dict__.get("__doc__")
    return inspect.cleandoc(own).split("\n\n")[0].replace("\n", " ") if own else model.__name__


def operation_id(route: web.AbstractRoute, d: Doc, path: Path) -> str:
    base = d.operation_id or str(getattr(route.handler, "__name__", "operation"))
    words = [re.sub(r"[^A-Za-z0-9]+", "_", word) for _, word in path.fixed]
    return "_".join([base, *words])


def build_document(router: web.UrlDispatcher) -> dict[str, Any]:
    """The whole document for ``router``'s routes."""
    operations: list[tuple[web.AbstractRoute, Doc, Path]] = []
    for route in router.routes():
        if route.method in IMPLICIT_METHODS or route.resource is None:
            continue
        d = _doc_of(route)
        operations += [(route, d, path) for path in paths_of(route.resource)]
    builder = Builder(_models(d for _, d, _ in operations))
    document_paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    tags: dict[str, None] = {}
    for route, d, path in operations:
        op = builder.operation(route, d, path)
        where = f"{route.method} {path.template}"
        if op["operationId"] in seen:
            raise DocumentError(f"{where} and {seen[op['operationId']]} share the operationId {op['operationId']}")
        seen[op["operationId"]] = where
        tags.update(dict.fromkeys(d.tags))
        document_paths.setdefault(path.template, {})[route.method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {**parts.INFO, "version": __version__},
        "servers": [{"url": "/"}],
        "security": parts.KEYED,
        "tags": parts.tags(tags),
        "paths": document_paths,
        "webhooks": {"task.finished": parts.webhook(builder.ref(TaskFinished))},
        "components": {"schemas": builder.schemas, "securitySchemes": parts.SECURITY_SCHEMES},
    }
