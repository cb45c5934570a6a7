"""Small helpers shared by the tests: SSE parsing, waiting, process checks."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(text: str) -> list[SseEvent]:
    """Events of an SSE body (comments such as ': ping' are dropped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev_id = name = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                ev_id = value
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data or name:
            events.append(SseEvent(ev_id, name, "\n".join(data)))
    return events


def session_of(events: list[SseEvent]) -> str:
    for ev in events:
        if ev.event is None:
            obj = ev.json()
            if obj.get("type") == "system" and obj.get("subtype") == "init":
                return str(obj["session_id"])
    raise AssertionError(f"no init event in {events!r}")


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def marked_pids(process_id: str) -> list[int]:
    """Processes carrying a CLI process's marker (the CLI and whatever it started); the
    marker is the ``process_id`` of the turns it ran."""
    needle = f"CLAUDE_SERVER_PROCESS_ID={process_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return [p for p in found if pid_alive(p)]


def turn_processes_running(process_id: str, cmdline_part: bytes) -> bool:
    """Whether one of a CLI's marked processes has ``cmdline_part`` in its command line (a
    process that ends while it is looked at does not count)."""
    for pid in marked_pids(process_id):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if cmdline_part in fh.read():
                    return True
        except OSError:
            continue
    return False


# ---- talking to the app under test ----------------------------------------------------------

JSON = {"Content-Type": "application/json"}


async def post(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return await client.post("/api/claude", data=data, headers=headers or JSON)


async def process_of(client: TestClient, turn_id: str) -> str:
    """The marker of the CLI process a started turn runs in."""
    resp = await client.get(f"/api/turns/{turn_id}")
    process = (await resp.json())["process_id"]
    assert process, f"turn {turn_id} has no process"
    return str(process)


async def run_turn(client: TestClient, body: dict[str, Any]) -> tuple[Any, list[SseEvent]]:
    resp = await post(client, body)
    assert resp.status == 200, await resp.text()
    return resp, parse_sse(await resp.text())


def data_events(events: list[SseEvent]) -> list[dict[str, Any]]:
    return [ev.json() for ev in events if ev.event is None]


def texts(events: list[SseEvent]) -> list[str]:
    out = []
    for obj in data_events(events):
        if obj.get("type") == "assistant":
            out.extend(block["text"] for block in obj["message"]["content"] if block.get("type") == "text")
    return out


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def read_until(resp: Any, predicate: Callable[[SseEvent], bool], timeout: float = 10.0) -> list[SseEvent]:
    """Read SSE events from an open response until one matches."""
    seen: list[SseEvent] = []
    buf = ""

    async def go() -> list[SseEvent]:
        nonlocal buf
        async for chunk in resp.content.iter_any():
            buf += chunk.decode()
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                for ev in parse_sse(block + "\n\n"):
                    seen.append(ev)
                    if predicate(ev):
                        return seen
        raise AssertionError(f"stream ended without the awaited event: {seen!r}")

    return await asyncio.wait_for(go(), timeout)


def is_assistant(ev: SseEvent) -> bool:
    return ev.event is None and ev.json().get("type") == "assistant"
