"""A fake Anthropic Messages API for end-to-end tests with the real Claude Code CLI.

The "model" is deterministic and scripted by the newest user text:

- default: it answers ``Echo(<number of messages>): <newest user text>``, streamed in
  8-character ``text_delta`` chunks, so a test can tell from the number whether a
  resumed session kept its history.
- ``[[bash: <command>]]`` anywhere in the newest user text: it answers with a ``Bash``
  ``tool_use`` block; when the CLI sends the ``tool_result`` back it answers
  ``Tool said: <result text>``. A ``tool_result`` message that also carries a new prompt (the
  CLI merges the next prompt into it after a turn ended by a deny with ``"interrupt": true``) is
  answered as that prompt.
- ``[[ask: <question> | <option1> | <option2> ...]]``: it answers with an ``AskUserQuestion``
  ``tool_use`` block, input ``{"questions": [{"question": <question>, "header": <its first 12
  characters>, "options": [{"label": <option>, "description": "Pick <option>"}, ...],
  "multiSelect": false}]}`` (the CLI's input schema for that tool); the ``tool_result`` is
  answered ``Tool said: <result text>`` as for ``bash``.
- ``[[write: <path> | <text>]]``: it answers with a ``Write`` ``tool_use`` block,
  ``{"file_path": <path>, "content": <text>}``; the ``tool_result`` likewise.
- ``[[slow: <seconds>]]``: each text chunk is delayed, spread over that many seconds.
- ``[[big: <bytes>]]``: the answer is that many ``x`` characters (after the echo).

``GET /v1/models`` lists one model for the key ``api_key`` (``sk-ant-fake-key``) and answers
401 ``authentication_error`` to any other, as the real API does (``claude-server doctor``
tries the configured key on it).

Every request body to the Messages API (and its headers) is recorded in ``FakeAnthropic.requests``; with
``fail_with`` set, every request is answered with that HTTP status and an Anthropic error.
Run it in-process (``FakeAnthropic().start()`` in a thread of its own) or as a script with
the project's environment (``make setup``): ``.venv/bin/python tests/fake_anthropic.py
--port 8123``; ``make demo`` runs it together with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

try:
    from aiohttp import web
except ModuleNotFoundError:  # run as a script by a Python without the project's packages
    if __name__ != "__main__":
        raise
    sys.exit("aiohttp is missing: run this with the project's environment, .venv/bin/python (make setup)")

CHUNK_CHARS = 8
# Text blocks the CLI adds to a user message that are not the user's prompt.
NOT_A_PROMPT = ("<system-reminder>", "[Request interrupted by user")
BASH_RE = re.compile(r"\[\[bash:\s*(.*?)\]\]", re.S)
SLOW_RE = re.compile(r"\[\[slow:\s*([0-9.]+)\]\]")
BIG_RE = re.compile(r"\[\[big:\s*([0-9]+)\]\]")
ASK_RE = re.compile(r"\[\[ask:\s*(.*?)\]\]", re.S)
WRITE_RE = re.compile(r"\[\[write:\s*(.*?)\|(.*?)\]\]", re.S)


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": tool_input}


def _ask_input(spec: str) -> dict[str, Any]:
    question, *labels = [part.strip() for part in spec.split("|")]
    options = [{"label": label, "description": f"Pick {label}"} for label in labels]
    return {"questions": [{"question": question, "header": question[:12], "options": options, "multiSelect": False}]}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def session_id(self) -> str | None:
        return self.headers.get("X-Claude-Code-Session-Id")

    def text(self) -> str:
        """Everything the model was sent (system + messages) as one searchable string."""
        return json.dumps({"system": self.body.get("system"), "messages": self.body.get("messages")})


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            out.append(block.get("text", ""))
    return out


def _tool_results(content: Any) -> list[str]:
    out = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    out.append("".join(_block_texts(inner)))
                else:
                    out.append(str(inner))
    return out


@dataclass
class FakeAnthropic:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)
    # Answer every request with this HTTP status (401, 429, 500, ...): an account or an
    # endpoint that is down. None: answer.
    fail_with: int | None = None
    # The key GET /v1/models accepts (x-api-key or Bearer); the other routes take any key.
    api_key: str = "sk-ant-fake-key"

    # ---- the model -------------------------------------------------------------------
    def plan(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, float]:
        """Content blocks to answer with, the stop reason, and the seconds to spread text over."""
        # The CLI also sends role "system" entries inside messages: only the conversation counts.
        messages = [m for m in body.get("messages") or [] if m.get("role") in ("user", "assistant")]
        last = messages[-1] if messages else {"content": ""}
        results = _tool_results(last.get("content"))
        texts = [t for t in _block_texts(last.get("content")) if not t.startswith(NOT_A_PROMPT)]
        # After a turn ended by a deny with "interrupt", the CLI puts the next prompt into the
        # message that carries the tool_result: then the prompt is what to answer.
        if results and not texts:
            return [{"type": "text", "text": "Tool said: " + "\n".join(results)}], "end_turn", 0.0
        newest = texts[-1].strip() if texts else ""
        slow = SLOW_RE.search(newest)
        delay = float(slow.group(1)) if slow else 0.0
        ask = ASK_RE.search(newest)
        if ask:
            return [_tool_use("AskUserQuestion", _ask_input(ask.group(1)))], "tool_use", delay
        write = WRITE_RE.search(newest)
        if write:
            tool_input = {"file_path": write.group(1).strip(), "content": write.group(2).strip()}
            return [_tool_use("Write", tool_input)], "tool_use", delay
        bash = BASH_RE.search(newest)
        if bash:
            block = _tool_use("Bash", {"command": bash.group(1), "description": "run"})
            return [block], "tool_use", delay
        text = f"Echo({len(messages)}): {newest}"
        big = BIG_RE.search(newest)
        if big:
            text += "x" * int(big.group(1))
        return [{"type": "text", "text": text}], "end_turn", delay

    # ---- HTTP ------------------------------------------------------------------------
    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        if self.fail_with is not None:
            kind = {401: "authentication_error", 429: "rate_limit_error"}.get(self.fail_with, "api_error")
            error = {"type": "error", "error": {"type": kind, "message": f"fake failure {self.fail_with}"}}
            return web.json_response(error, status=self.fail_with)
        blocks, stop_reason, delay = self.plan(body)
        msg_id = f"msg_{uuid.uuid4().hex[:20]}"
        model = body.get("model", "claude-fake")
        usage = {"input_tokens": 10, "output_tokens": 12}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        )
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                text = block["text"]
                chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
                pause = delay / len(chunks) if delay else 0.0
                for chunk in chunks:
                    if pause:
                        await asyncio.sleep(pause)
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": chunk},
                        },
                    )
            else:
                start = dict(block, input={})
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp

    async def count_tokens(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"input_tokens": 10})

    async def models(self, request: web.Request) -> web.Response:
        """The model list, for the key ``api_key`` only (as the real API: 401 otherwise)."""
        given = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given != self.api_key:
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return web.json_response({"type": "error", "error": error}, status=401)
        model = {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"}
        return web.json_response({"data": [model], "has_more": False, "first_id": model["id"], "last_id": model["id"]})

    async def other(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "fake"}}, status=404)

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response([{"path": r.path, "headers": r.headers, "body": r.body} for r in self.requests])

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/_requests", self.dump)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_route("*", "/{tail:.*}", self.other)
        return app

    # ---- running it ------------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        """Serve in a daemon thread with its own event loop; returns once listening."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(self.make_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Anthropic API did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def for_session(self, session_id: str) -> list[Recorded]:
        return [r for r in self.requests if r.session_id == session_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    fake = FakeAnthropic(host=args.host, port=args.port)

    def listening(_banner: str) -> None:
        print(f"fake Anthropic API listening on {fake.base_url}", flush=True)

    web.run_app(fake.make_app(), host=args.host, port=args.port, print=listening)


if __name__ == "__main__":
    main()
