"""The part of Open WebUI 0.12.4's HTTP API that scripts/openwebui_setup.py uses, with the
status codes and JSON shapes of its source (``open_webui/routers/auths.py``,
``routers/functions.py``, ``utils/auth.py``, ``constants.py``, ``main.py``):

- errors are FastAPI's ``{"detail": "..."}``;
- a wrong email or password at sign-in is 400; no token, a bad token or a user who is not an
  admin is 401 on admin routes, and so is a function id that does not exist;
- creating an id that exists is 400 (``ID_TAKEN``); content that does not load is 400;
- toggle flips ``is_active``; the valves update stores exactly the valves sent, validated by
  the function's own ``Valves`` class, as Open WebUI does (``Valves(**form).model_dump(exclude_unset=True)``).

Content is exec'd into a fresh module, as Open WebUI's ``load_function_module_by_id`` does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

INVALID_CRED = "The email or password provided is incorrect. Please check for typos and try logging in again."
ID_TAKEN = "Uh-oh! This id is already registered. Please choose another id string."
NOT_FOUND = "We could not find what you're looking for :/"
ACCESS_PROHIBITED = "You do not have permission to access this resource. Please reach out to your administrator."


@dataclass
class User:
    email: str
    password: str
    role: str = "admin"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class FakeOpenWebUI:
    users: list[User]
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    valves: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    tokens: dict[str, User] = field(default_factory=dict)
    # Answer /health with 503 this many times first (a server still starting).
    starting_polls: int = 0
    # Seconds /health takes to answer (a server that hangs).
    health_delay_s: float = 0.0
    calls: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/health", self.health)
        app.router.add_post("/api/v1/auths/signin", self.signin)
        app.router.add_get("/api/v1/functions/list", self.function_list)
        app.router.add_post("/api/v1/functions/create", self.create)
        app.router.add_get("/api/v1/functions/id/{id}", self.get_function)
        app.router.add_post("/api/v1/functions/id/{id}/update", self.update)
        app.router.add_post("/api/v1/functions/id/{id}/toggle", self.toggle)
        app.router.add_get("/api/v1/functions/id/{id}/valves", self.get_valves)
        app.router.add_post("/api/v1/functions/id/{id}/valves/update", self.update_valves)
        return app

    def count(self, call: str) -> int:
        return self.calls.count(call)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        self.calls.append(f"{request.method} {resource.canonical if resource else request.path}")
        response: web.StreamResponse = await handler(request)
        return response

    def _admin(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _error(401, "Not authenticated")
        user = self.tokens.get(header.removeprefix("Bearer "))
        if user is None:
            raise _error(401, "Invalid token")
        if user.role != "admin":
            raise _error(401, ACCESS_PROHIBITED)
        return user

    def _function(self, request: web.Request) -> dict[str, Any]:
        self._admin(request)
        function = self.functions.get(request.match_info["id"])
        if function is None:
            raise _error(401, NOT_FOUND)
        return function

    def _load(self, function_id: str, content: str) -> types.ModuleType:
        name = f"function_{function_id}"
        module = types.ModuleType(name)
        # Open WebUI registers the module before running it: dataclasses look their module up there.
        sys.modules[name] = module
        try:
            exec(compile(content, f"<function {function_id}>", "exec"), module.__dict__)
        except Exception as exc:
            raise _error(400, f"[ERROR: {exc}]") from None
        if not hasattr(module, "Pipe"):
            raise _error(400, "[ERROR: No Function class found in the module]")
        return module

    async def health(self, request: web.Request) -> web.Response:
        if self.health_delay_s:
            await asyncio.sleep(self.health_delay_s)
        if self.starting_polls > 0:
            self.starting_polls -= 1
            return web.Response(status=503, text="starting")
        return web.json_response({"status": True})

    async def signin(self, request: web.Request) -> web.Response:
        form = await request.json()
        for user in self.users:
            if user.email == form.get("email", "").lower() and user.password == form.get("password"):
                token = str(uuid.uuid4())
                self.tokens[token] = user
                return web.json_response(
                    {"token": token, "token_type": "Bearer", "id": user.id, "email": user.email, "role": user.role}
                )
        raise _error(400, INVALID_CRED)

    async def function_list(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response([_response(f) for f in self.functions.values()])

    async def get_function(self, request: web.Request) -> web.Response:
        return web.json_response(self._function(request))

    async def create(self, request: web.Request) -> web.Response:
        user = self._admin(request)
        form = await request.json()
        if not str(form["id"]).isidentifier():
            raise _error(400, "Only alphanumeric characters and underscores are allowed in the id")
        function_id = form["id"].lower()
        if function_id in self.functions:
            raise _error(400, ID_TAKEN)
        self.modules[function_id] = self._load(function_id, form["content"])
        now = int(time.time())
        self.functions[function_id] = {
            "id": function_id,
            "user_id": user.id,
            "name": form["name"],
            "type": "pipe",
            "content": form["content"],
            "meta": {**form["meta"], "manifest": {}},
            "is_active": False,
            "is_global": False,
            "updated_at": now,
            "created_at": now,
        }
        self.valves[function_id] = None
        return web.json_response(_response(self.functions[function_id]))

    async def update(self, request: web.Request) -> web.Response:
        function = self._function(request)
        form = await request.json()
        self.modules[function["id"]] = self._load(function["id"], form["content"])
        function.update(
            name=form["name"],
            content=form["content"],
            meta={**form["meta"], "manifest": {}},
            updated_at=int(time.time()),
        )
        return web.json_response(function)

    async def toggle(self, request: web.Request) -> web.Response:
        function = self._function(request)
        function["is_active"] = not function["is_active"]
        return web.json_response(function)

    async def get_valves(self, request: web.Request) -> web.Response:
        function = self._function(request)
        return web.json_response(self.valves[function["id"]])

    async def update_valves(self, request: web.Request) -> web.Response:
        function = self._function(request)
        form = {k: v for k, v in (await request.json()).items() if v is not None}
        try:
            valves = self.modules[function["id"]].Pipe.Valves(**form).model_dump(exclude_unset=True)
        except Exception as exc:
            raise _error(400, f"[ERROR: {exc}]") from None
        self.valves[function["id"]] = valves
        return web.json_response(valves)


def _response(function: dict[str, Any]) -> dict[str, Any]:
    """FunctionResponse: the function without its content."""
    return {k: v for k, v in function.items() if k != "content"}


def _error(status: int, detail: str) -> web.HTTPException:
    """FastAPI's HTTPException as it reaches the client: {"detail": ...}."""
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized}[status]
    return cls(text=json.dumps({"detail": detail}), content_type="application/json")
