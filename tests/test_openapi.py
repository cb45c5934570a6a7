"""GET /openapi.json: a valid OpenAPI 3.1 document of exactly the registered routes, served
without a key and cached; and the answers of real routes hold to the schemas it names."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from openapi_spec_validator import validate

from claude_server.app import create_app
from claude_server.appkeys import OPENAPI
from claude_server.config import Settings
from claude_server.openapi import Empty, doc
from claude_server.openapi.build import IMPLICIT_METHODS, DocumentError, build_document
from tests.helpers import JSON, parse_sse, post, read_until, run_turn, session_of

OPERATOR = "op-openapi-1"
SAMPLE_VALUES = {"path": "dir/a.txt", "filename": "app.js"}


async def fetch(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return dict(await resp.json())


class Published:
    """The document, asked which schema it names for an answer, and holding answers to it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def operation(self, method: str, path: str) -> dict[str, Any]:
        return dict(self.document["paths"][path][method.lower()])

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        # The refs point into the document: validate against it as the root.
        return jsonschema.Draft202012Validator({**schema, "components": self.document["components"]})

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        """``body`` is valid for what the document says ``method path`` answers with ``status``."""
        answer = self.operation(method, path)["responses"][str(status)]
        schema = answer["content"]["application/json"]["schema"]
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator(schema).iter_errors(body)
        ]
        assert not errors, f"{method} {path} {status} does not match {schema}: {errors}\n{body}"

    def check_stream(self, method: str, path: str, text: str) -> list[str | None]:
        """Every event of an SSE body is one the document names, with data of its schema."""
        media = self.operation(method, path)["responses"]["200"]["content"]["text/event-stream"]
        kinds: dict[str | None, list[dict[str, Any]]] = {}
        for ev in media["x-sse-events"]:
            kinds.setdefault(ev["event"], []).append(ev)
        seen = []
        for ev in parse_sse(text):
            assert ev.event in kinds, f"{ev.event} is not an event the document names for {path}"
            if ev.data == "[DONE]":
                seen.append("[DONE]")
                continue
            data = json.loads(ev.data)
            fits = [k for k in kinds[ev.event] if self.validator(k["data"]).is_valid(data)]
            assert fits, f"event {ev.event} of {path} fits none of {kinds[ev.event]}: {data}"
            assert all(k["id"] == (ev.id is not None) for k in fits), f"{ev} and its id"
            seen.append(ev.event)
        return seen


@pytest.fixture
async def published(client: TestClient) -> Published:
    return Published(await fetch(client))


# ---- the document ----------------------------------------------------------------------------


async def test_the_document_is_valid_openapi_3_1(client: TestClient) -> None:
    document = await fetch(client)
    validate(document)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] == "claude-server"
    assert document["paths"]["/api/claude"]["post"]["requestBody"]["content"]["application/json"]["example"]


async def test_every_example_fits_its_schema(client: TestClient) -> None:
    published = Published(await fetch(client))
    checked = 0
    for name, schema in published.document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            assert published.validator({"$ref": f"#/components/schemas/{name}"}).is_valid(example), name
            checked += 1
    for path, operations in published.document["paths"].items():
        for method, op in operations.items():
            bodies = [op.get("requestBody", {})] + list(op["responses"].values())
            for media in [b.get("content", {}).get("application/json", {}) for b in bodies]:
                if "example" in media:
                    assert published.validator(media["schema"]).is_valid(media["example"]), f"{method} {path}"
                    checked += 1
    assert checked >= 10


async def test_every_name_a_field_accepts_is_in_its_schema(client: TestClient) -> None:
    published = Published(await fetch(client))
    body = {
        "prompt": "hi",
        "allowed_tools": ["Read"],
        "disallowedTools": ["Bash"],
        "dangerously_skip_permissions": False,
    }
    for name in ("ClaudeRequest", "TaskRequest"):
        schema = {"$ref": f"#/components/schemas/{name}"}
        assert published.validator(schema).is_valid(body)
        assert not published.validator(schema).is_valid({**body, "unknown": 1})
    # ... and the server takes it.
    resp = await post(client, {**body, "stream": False})
    assert resp.status == 200, await resp.text()


def registered(app: web.Application) -> set[web.AbstractRoute]:
    return {r for r in app.router.routes() if r.method not in IMPLICIT_METHODS}


async def resolved(app: web.Application, method: str, path: str) -> web.AbstractRoute:
    """The route the real router takes ``method path`` to, its parameters filled in."""
    url = path
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        url = url.replace("{" + name + "}", SAMPLE_VALUES.get(name, "x1"))
    match = await app.router.resolve(make_mocked_request(method, url))
    assert match.http_exception is None, f"{method} {path} is in the document but not routed: {match.http_exception}"
    return match.route


async def test_every_registered_route_is_in_the_document_and_nothing_else(client: TestClient) -> None:
    document = await fetch(client)
    found = set()
    for path, operations in document["paths"].items():
        for method in operations:
            found.add(await resolved(client.app, method.upper(), path))
    assert found == registered(client.app)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    # A parameter of fixed words is one path per word: each is its own endpoint.
    assert {"/api/config/agents", "/api/config/mcp-servers", "/api/config/claude-md"} <= set(document["paths"])
    assert "/api/providers/{provider_id}/reset" in document["paths"]
    assert "HEAD".lower() not in {m for ops in document["paths"].values() for m in ops}


async def test_the_routes_of_cors_and_a_static_folder_are_described_too(settings: Settings, tmp_path: Path) -> None:
    app = create_app(replace(settings, cors_origins=("https://app.example",)))
    # Not /assets: the web app's files are served there.
    (tmp_path / "static").mkdir()
    app.router.add_static("/static", tmp_path / "static")
    document = build_document(app.router)
    validate(document)
    assert document["paths"]["/static/{filename}"]["get"]["security"] == []
    found = {await resolved(app, m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert found == registered(app)


async def test_a_route_without_a_description_stops_the_document(settings: Settings) -> None:
    app = create_app(settings)

    async def undocumented(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/extra", undocumented)
    with pytest.raises(DocumentError, match="GET /api/extra: its handler .*undocumented has no @doc"):
        build_document(app.router)


async def test_two_operations_with_one_id_stop_the_document(settings: Settings) -> None:
    app = create_app(settings)

    @doc("Twice", tags=("x",), responses={204: Empty("Nothing")}, operation_id="get_session")
    async def twin(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/twin", twin)
    with pytest.raises(DocumentError, match="share the operationId get_session"):
        build_document(app.router)


async def test_the_error_shapes_and_both_auth_schemes_are_in_it(client: TestClient) -> None:
    document = await fetch(client)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == {**schemes["apiKeyHeader"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert document["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    schemas = document["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    shapes = {"/v1/chat/completions": "OpenAIErrorResponse", "/v1/messages": "AnthropicErrorResponse"}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            shape = shapes.get(path, "OpenAIErrorResponse" if path.startswith("/v1/") else "ErrorResponse")
            errors = {s: a for s, a in op["responses"].items() if s == "default" or int(s) >= 400}
            assert "default" in errors, f"{method} {path}"
            for status, answer in errors.items():
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref == f"#/components/schemas/{shape}", f"{method} {path} {status}"
            if op.get("security") != []:
                assert "401" in op["responses"], f"{method} {path} needs a key but has no 401"
    assert document["paths"]["/health"]["get"]["security"] == [{}, {"bearerAuth": []}, {"apiKeyHeader": []}]
    assert "403" in document["paths"]["/api/providers"]["get"]["responses"]


async def test_the_streams_declare_text_event_stream_and_their_events(client: TestClient) -> None:
    document = await fetch(client)
    streams = {
        ("post", "/api/claude"): {None, "error", "queued", "permission_request", "question", "permission_resolved"},
        ("get", "/api/turns/{turn_id}/events"): {None, "error", "queued", "question_resolved"},
        ("post", "/v1/chat/completions"): {None},
        ("post", "/v1/messages"): {"message_start", "content_block_delta", "message_stop", "ping", "error"},
    }
    for (method, path), events in streams.items():
        media = document["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
        named = {ev["event"] for ev in media["x-sse-events"]}
        assert events <= named, f"{method} {path}: {named}"
        for ev in media["x-sse-events"]:
            assert ev["data"]["$ref"].removeprefix("#/components/schemas/") in document["components"]["schemas"]
    claude = document["paths"]["/api/claude"]["post"]["responses"]["200"]["content"]
    assert set(claude) == {"text/event-stream", "application/json"}
    assert document["webhooks"]["task.finished"]["post"]["requestBody"]["content"]["application/json"]
    streaming = [
        (m, p)
        for p, ops in document["paths"].items()
        for m, op in ops.items()
        if any("text/event-stream" in a.get("content", {}) for a in op["responses"].values())
    ]
    assert sorted(streaming) == sorted(streams)


async def test_it_needs_no_key_when_keys_are_configured(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,))))
    assert (await client.get("/api/sessions")).status == 401
    document = await fetch(client)
    assert "/api/sessions" in document["paths"]
    # A wrong key does not matter either: the document holds no data.
    assert (await client.get("/openapi.json", headers={"x-api-key": "wrong"})).status == 200


async def test_it_is_built_once_and_revalidates_with_its_etag(client: TestClient) -> None:
    plain = {"Accept-Encoding": "identity"}
    first, second = await client.get("/openapi.json", headers=plain), await client.get("/openapi.json", headers=plain)
    body = await first.read()
    assert body == await second.read() and "Content-Encoding" not in first.headers
    etag = first.headers["ETag"]
    assert etag == second.headers["ETag"] and etag.startswith('"') and etag.endswith('"')
    assert first.headers["Cache-Control"] == "no-cache"
    assert first.headers["Vary"] == "Accept-Encoding"
    again = await client.get("/openapi.json", headers={**plain, "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag
    stale = await client.get("/openapi.json", headers={**plain, "If-None-Match": '"something-else"'})
    assert stale.status == 200 and await stale.read() == body

    zipped = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert int(zipped.headers["Content-Length"]) < len(body) / 4
    assert await zipped.read() == body  # the client unzips it
    assert zipped.headers["ETag"] not in (etag, None)
    unchanged = await client.get(
        "/openapi.json", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
    )
    assert unchanged.status == 304


async def test_concurrent_first_requests_build_it_once(client: TestClient) -> None:
    answers = await asyncio.gather(*(client.get("/openapi.json") for _ in range(4)))
    assert len({a.headers["ETag"] for a in answers}) == 1
    served = await client.app[OPENAPI].get(client.app.router)
    assert served is await client.app[OPENAPI].get(client.app.router)


# ---- real answers hold to the document ---------------------------------------------------


async def test_a_turn_its_session_and_its_stream_match_the_document(client: TestClient, published: Published) -> None:
    resp, _ = await run_turn(client, {"prompt": "hello"})
    text = await (await client.get(f"/api/turns/{resp.headers['X-Turn-Id']}/events")).text()
    assert published.check_stream("GET", "/api/turns/{turn_id}/events", text)[-1] is None
    sid = session_of(parse_sse(text))
    resp = await post(client, {"prompt": "again", "session_id": sid})
    assert published.check_stream("POST", "/api/claude", await resp.text()) == [None, None, None]
    turn_id = resp.headers["X-Turn-Id"]
    resp = await post(client, {"prompt": "whole", "session_id": sid, "stream": False})
    published.check("POST", "/api/claude", 200, await resp.json())

    published.check("GET", "/api/sessions", 200, await (await client.get("/api/sessions")).json())
    published.check("GET", "/api/sessions/{session_id}", 200, await (await client.get(f"/api/sessions/{sid}")).json())
    patched = await client.patch(
        f"/api/sessions/{sid}", data=json.dumps({"title": "T", "metadata": {"a": 1}}), headers=JSON
    )
    published.check("PATCH", "/api/sessions/{session_id}", 200, await patched.json())
    history = await client.get(f"/api/sessions/{sid}/messages")
    published.check("GET", "/api/sessions/{session_id}/messages", 200, await history.json())
    published.check("GET", "/api/turns/{turn_id}", 200, await (await client.get(f"/api/turns/{turn_id}")).json())
    for kind in ("permissions", "questions"):
        waiting = await client.get(f"/api/turns/{turn_id}/{kind}")
        published.check("GET", f"/api/turns/{{turn_id}}/{kind}", 200, await waiting.json())
    listing = await client.get(f"/api/sessions/{sid}/files")
    published.check("GET", "/api/sessions/{session_id}/files", 200, await listing.json())
    saved = await client.put(f"/api/sessions/{sid}/files/dir/a.txt", data=b"hi")
    published.check("PUT", "/api/sessions/{session_id}/files/{path}", 201, await saved.json())
    stats = await client.get("/api/stats", params={"group_by": "model"})
    published.check("GET", "/api/stats", 200, await stats.json())


async def test_a_running_turn_its_permission_request_and_its_answer_match(
    client: TestClient, published: Published
) -> None:
    resp = await post(client, {"prompt": "write @permission=Write", "permission_prompt": True})
    turn_id = resp.headers["X-Turn-Id"]
    seen = await read_until(resp, lambda ev: ev.event == "permission_request")
    asked = seen[-1].json()
    live = await client.get(f"/api/turns/{turn_id}")
    published.check("GET", "/api/turns/{turn_id}", 200, await live.json())
    sid = session_of(seen)
    published.check("GET", "/api/sessions/{session_id}", 200, await (await client.get(f"/api/sessions/{sid}")).json())
    waiting = await client.get(f"/api/turns/{turn_id}/permissions")
    published.check("GET", "/api/turns/{turn_id}/permissions", 200, await waiting.json())
    answered = await client.post(
        f"/api/turns/{turn_id}/permissions/{asked['request_id']}", data=json.dumps({"behavior": "allow"}), headers=JSON
    )
    published.check("POST", "/api/turns/{turn_id}/permissions/{request_id}", 200, await answered.json())
    rest = await resp.text()
    whole = "".join(f"{'event: ' + e.event + chr(10) if e.event else ''}id: {e.id}\ndata: {e.data}\n\n" for e in seen)
    events = published.check_stream("POST", "/api/claude", whole + rest)
    assert "permission_request" in events and "permission_resolved" in events


async def test_an_interrupted_turn_matches(client: TestClient, published: Published) -> None:
    resp = await post(client, {"prompt": "slow @sleep=30"})
    turn_id = resp.headers["X-Turn-Id"]
    seen = await read_until(resp, lambda ev: ev.event is None and ev.json().get("type") == "system")
    cancelled = await client.post(f"/api/turns/{turn_id}/cancel")
    published.check("POST", "/api/turns/{turn_id}/cancel", 200, await cancelled.json())
    rest = await resp.text()
    whole = "".join(f"id: {e.id}\ndata: {e.data}\n\n" for e in seen)
    assert published.check_stream("POST", "/api/claude", whole + rest)[-1] == "error"
    ended = await client.get(f"/api/turns/{turn_id}")
    published.check("GET", "/api/turns/{turn_id}", 200, await ended.json())
    gone = await client.post(f"/api/sessions/{session_of(seen)}/interrupt")
    assert gone.status == 409
    published.check("POST", "/api/sessions/{session_id}/interrupt", 409, await gone.json())


async def test_tasks_match_the_document(client: TestClient, published: Published) -> None:
    resp = await client.post("/api/tasks", data=json.dumps({"prompt": "task", "metadata": {"n": 1}}), headers=JSON)
    published.check("POST", "/api/tasks", 202, await resp.json())
    task_id = (await resp.json())["task_id"]
    for _ in range(400):
        task = await (await client.get(f"/api/tasks/{task_id}")).json()
        if task["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    assert task["status"] == "succeeded", task
    published.check("GET", "/api/tasks/{task_id}", 200, task)
    published.check("GET", "/api/tasks", 200, await (await client.get("/api/tasks")).json())
    published.check(
        "GET",
        "/api/tasks/{task_id}/deliveries",
        200,
        await (await client.get(f"/api/tasks/{task_id}/deliveries")).json(),
    )
    batch = await client.post("/api/tasks/batch", data=json.dumps({"tasks": [{"prompt": "a"}]}), headers=JSON)
    body = await batch.json()
    published.check("POST", "/api/tasks/batch", 202, body)
    summary = await client.get(f"/api/tasks/batches/{body['batch_id']}")
    published.check("GET", "/api/tasks/batches/{batch_id}", 200, await summary.json())
    finished = await client.post(f"/api/tasks/{task_id}/cancel")
    assert finished.status == 409
    published.check("POST", "/api/tasks/{task_id}/cancel", 409, await finished.json())
    forgot = await client.delete(f"/api/tasks/{task_id}")
    published.check("DELETE", "/api/tasks/{task_id}", 200, await forgot.json())


async def test_health_providers_and_config_match(aiohttp_client, settings: Settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = await aiohttp_client(create_app(settings))
    published = Published(await fetch(plain))
    published.check("GET", "/health", 200, await (await plain.get("/health")).json())
    published.check("GET", "/api/providers", 200, await (await plain.get("/api/providers")).json())

    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[providers]]\nid = "team-a"\napi_key = "sk-a"\n\n[[providers]]\nid = "team-b"\nweight = 2\nbase_url = "http://127.0.0.1:9"\n'
    )
    client = await aiohttp_client(create_app(replace(settings, providers_file=str(providers))))
    published.check("GET", "/api/providers", 200, await (await client.get("/api/providers")).json())
    changed = await client.post("/api/providers/team-a/disable")
    published.check("POST", "/api/providers/{provider_id}/disable", 200, await changed.json())
    published.check("POST", "/api/admin/reload", 200, await (await client.post("/api/admin/reload")).json())
    published.check("GET", "/health", 200, await (await client.get("/health")).json())

    agent = "---\nname: reviewer\ndescription: Reviews\n---\nBe careful.\n"
    put = await client.put("/api/config/agents/reviewer", data=json.dumps({"content": agent}), headers=JSON)
    published.check("PUT", "/api/config/agents/{name}", 201, await put.json())
    published.check("GET", "/api/config/agents", 200, await (await client.get("/api/config/agents")).json())
    published.check("GET", "/api/config/mcp-servers", 200, await (await client.get("/api/config/mcp-servers")).json())
    published.check("GET", "/api/config/claude-md", 200, await (await client.get("/api/config/claude-md")).json())
    skill = "---\nname: lint\ndescription: Lints\n---\nRun it.\n"
    await client.put("/api/config/skills/lint", data=skill, headers={"Content-Type": "text/markdown"})
    saved = await client.put("/api/config/skills/lint/files/run.sh", data=b"echo hi")
    published.check("PUT", "/api/config/skills/{name}/files/{path}", 201, await saved.json())
    published.check("GET", "/api/config/skills/{name}", 200, await (await client.get("/api/config/skills/lint")).json())


async def test_errors_match_their_shapes(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(replace(settings, api_keys=(OPERATOR,))))
    published = Published(await fetch(client))
    published.check("GET", "/api/sessions", 401, await (await client.get("/api/sessions")).json())
    key = {"Authorization": f"Bearer {OPERATOR}"}
    missing = await client.get("/api/sessions/nope", headers=key)
    assert missing.status == 404
    published.check("GET", "/api/sessions/{session_id}", 404, await missing.json())
    bad = await client.post("/api/claude", data=json.dumps({"prompt": 3}), headers={**JSON, **key})
    assert bad.status == 400
    published.check("POST", "/api/claude", 400, await bad.json())
    openai = await client.post(
        "/v1/chat/completions", data=json.dumps({"model": "claude-code"}), headers={**JSON, **key}
    )
    assert openai.status == 400
    published.check("POST", "/v1/chat/completions", 400, await openai.json())
    anthropic = await client.post(
        "/v1/messages", data=json.dumps({"messages": []}), headers={**JSON, "x-api-key": OPERATOR}
    )
    assert anthropic.status == 400
    published.check("POST", "/v1/messages", 400, await anthropic.json())
    published.check("GET", "/v1/models", 200, await (await client.get("/v1/models", headers=key)).json())
    published.check(
        "GET", "/v1/models/{model}", 200, await (await client.get("/v1/models/claude-code", headers=key)).json()
    )


async def test_the_compatible_answers_match(client: TestClient, published: Published) -> None:
    body = {"model": "claude-code", "messages": [{"role": "user", "content": "hi"}]}
    whole = await client.post("/v1/chat/completions", data=json.dumps(body), headers=JSON)
    published.check("POST", "/v1/chat/completions", 200, await whole.json())
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    streamed = await client.post("/v1/chat/completions", data=json.dumps(stream), headers=JSON)
    assert published.check_stream("POST", "/v1/chat/completions", await streamed.text())[-1] == "[DONE]"
    message = {**body, "max_tokens": 100}
    whole = await client.post("/v1/messages", data=json.dumps(message), headers=JSON)
    published.check("POST", "/v1/messages", 200, await whole.json())
    streamed = await client.post("/v1/messages", data=json.dumps({**message, "stream": True}), headers=JSON)
    events = published.check_stream("POST", "/v1/messages", await streamed.text())
    assert events[0] == "message_start" and events[-1] == "message_stop"
